"""Overlays in the paper's colours and gating pictures."""

import numpy as np
import pytest

from monai_patcher.visualize import FN_COLOR, FP_COLOR, TP_COLOR, gating_rgb, overlay, save_png, to_uint8, volume_overlays


def test_overlay_colours_tp_green_fp_red_fn_white():
    img = np.zeros((4, 4))
    pred = np.zeros((4, 4))
    lab = np.zeros((4, 4))
    pred[0, 0] = lab[0, 0] = 1  # TP
    pred[1, 1] = 1  # FP
    lab[2, 2] = 1  # FN
    rgb = overlay(img, pred, lab, alpha=1.0)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == TP_COLOR == (0, 255, 0)
    assert tuple(rgb[1, 1]) == FP_COLOR == (255, 0, 0)
    assert tuple(rgb[2, 2]) == FN_COLOR == (255, 255, 255)
    assert tuple(rgb[3, 3]) == (0, 0, 0)


def test_overlay_without_label_draws_prediction_green_and_checks_shapes():
    rgb = overlay(np.ones((3, 5)), np.eye(3, 5), alpha=1.0)
    assert tuple(rgb[1, 1]) == TP_COLOR
    with pytest.raises(ValueError, match="must match"):
        overlay(np.ones((3, 5)), np.ones((5, 3)))


def test_to_uint8_stretches_and_keeps_rgb():
    assert to_uint8(np.linspace(-1, 1, 100).reshape(10, 10)).max() == 255
    rgb = np.random.default_rng(0).random((3, 8, 6))
    assert to_uint8(rgb).shape == (8, 6, 3)


# The expert palette, pinned here as literals (not read from the module): the docs name the hues, "expert 1 red,
# 2 green, 3 blue, 4 yellow" (visualize.gating_rgb, handlers.GatingMapWriter); these are the RGB values shipped.
EXPERT_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25)]


def test_expert_palette_matches_the_documented_hues():
    """The pinned palette is what the docstrings say: red, green, blue, yellow, in expert order."""
    red, green, blue, yellow = (np.asarray(c) for c in EXPERT_COLORS)
    assert red.argmax() == 0 and green.argmax() == 1 and blue.argmax() == 2
    assert min(yellow[:2]) > 2 * yellow[2]  # red + green, little blue


def test_gating_rgb_is_a_weighted_colour_mix():
    g = np.zeros((4, 2, 2))
    g[0] = 1.0
    out = gating_rgb(g)
    assert out.shape == (2, 2, 3) and (out == out[0, 0]).all()
    for e, colour in enumerate(EXPERT_COLORS):  # a one-hot map shows its expert's colour
        one_hot = np.zeros((4, 1, 1))
        one_hot[e] = 1.0
        assert tuple(gating_rgb(one_hot)[0, 0]) == colour, e
    # per pixel the weight-averaged colour: [0.5, 0.5, 0, 0] is the mean of experts 1 and 2, the other pixel expert 3
    mix = np.zeros((4, 1, 2))
    mix[:2, 0, 0] = 0.5
    mix[2, 0, 1] = 1.0
    out = gating_rgb(mix)
    expected = (np.asarray(EXPERT_COLORS[0], float) + EXPERT_COLORS[1]) / 2  # (145, 102.5, 75): rounded either way
    np.testing.assert_allclose(out[0, 0], expected, atol=0.5)
    np.testing.assert_array_equal(out[0, 1], EXPERT_COLORS[2])
    # blended over an image: (1 - alpha) * grey + alpha * colour
    img = np.array([[0.0, 1.0]])  # -> grey 0 and 255 after the contrast stretch
    out = gating_rgb(mix, img, alpha=0.5)
    np.testing.assert_allclose(out[0, 0], 0.5 * expected, atol=0.5)
    np.testing.assert_allclose(out[0, 1], 0.5 * 255 + 0.5 * np.asarray(EXPERT_COLORS[2], float), atol=0.5)
    with pytest.raises(ValueError):
        gating_rgb(np.zeros((5, 2, 2)))


def test_volume_overlays_only_slices_with_foreground(tmp_path):
    from PIL import Image

    vol = np.random.default_rng(0).random((8, 6, 5))
    pred = np.zeros((1, 8, 6, 5))
    pred[0, 2:4, 2:4, 3] = 1
    out = volume_overlays(vol, pred, None, axis=2)
    assert [k for k, _ in out] == [3]
    assert out[0][1].shape == (6, 8, 3)  # rows = y, columns = x
    path = save_png(out[0][1], tmp_path / "a" / "b.png")
    assert path == str(tmp_path / "a" / "b.png")
    back = Image.open(path)
    assert back.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(back), out[0][1])  # the very pixels, channels in RGB order
    grey = to_uint8(vol[..., 0])
    np.testing.assert_array_equal(np.asarray(Image.open(save_png(grey, tmp_path / "g.png"))), grey)


def test_volume_overlays_orientation_anterior_up_left_on_the_left():
    """``_display``'s documented view of a RAS slice ``X x Y``: the second axis points up (anterior/superior),
    the first runs left to right. A marker at high y and low x is drawn in the top row, near the left edge."""
    nx, ny, nz = 8, 6, 3
    vol = np.zeros((nx, ny, nz))
    pred = np.zeros((nx, ny, nz))
    lab = np.zeros((nx, ny, nz))
    pred[1, ny - 1, 1] = 1  # TP at x = 1, y = ny - 1 (most anterior)
    lab[1, ny - 1, 1] = 1
    lab[6, 1, 1] = 1  # FN at x = 6, y = 1 (posterior, towards the right)
    (k, rgb), = volume_overlays(vol, pred, lab, axis=2, alpha=1.0)
    assert k == 1 and rgb.shape == (ny, nx, 3)
    coloured = {(r, c): tuple(rgb[r, c]) for r, c in zip(*np.nonzero(rgb.any(-1)))}
    assert coloured == {(0, 1): TP_COLOR, (ny - 1 - 1, 6): FN_COLOR}
    # the same for a coronal cut (axis 1): superior (high z) up, x left to right
    pred2 = np.zeros((nx, ny, nz))
    pred2[2, 3, nz - 1] = 1
    (k, rgb), = volume_overlays(vol, pred2, None, axis=1, alpha=1.0)
    assert k == 3 and rgb.shape == (nz, nx, 3)
    assert {(int(r), int(c)) for r, c in zip(*np.nonzero(rgb.any(-1)))} == {(0, 2)}

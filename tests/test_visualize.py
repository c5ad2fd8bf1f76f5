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


def test_gating_rgb_is_a_weighted_colour_mix():
    g = np.zeros((4, 2, 2))
    g[0] = 1.0
    out = gating_rgb(g)
    assert out.shape == (2, 2, 3) and (out == out[0, 0]).all()
    with pytest.raises(ValueError):
        gating_rgb(np.zeros((5, 2, 2)))


def test_volume_overlays_only_slices_with_foreground(tmp_path):
    vol = np.random.default_rng(0).random((8, 6, 5))
    pred = np.zeros((1, 8, 6, 5))
    pred[0, 2:4, 2:4, 3] = 1
    out = volume_overlays(vol, pred, None, axis=2)
    assert [k for k, _ in out] == [3]
    assert out[0][1].shape == (6, 8, 3)  # rows = y, columns = x
    assert save_png(out[0][1], tmp_path / "a" / "b.png").endswith("b.png")

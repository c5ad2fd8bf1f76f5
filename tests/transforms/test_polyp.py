"""Polyp pipelines: synthetic JPEG/PNG pairs and the real Kvasir-SEG samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_patcher.data import DataError
from monai_patcher.transforms import BinarizeMaskd, IMAGENET_MEAN, IMAGENET_STD, polyp_train_transforms, polyp_val_transforms
from monai_patcher.transforms.polyp import EnsureRGBd


@pytest.fixture
def pair(tmp_path):
    h, w = 40, 60  # non-square, to catch axis mix-ups
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[5:15, 10:30] = 255
    mask = np.zeros((h, w), np.uint8)
    mask[5:15, 10:30] = 255
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(mask).convert("RGB").save(tmp_path / "a_mask.jpg", quality=75)
    return {"image": str(tmp_path / "a.png"), "label": str(tmp_path / "a_mask.jpg")}, rgb, mask


def test_binarize_mask_threshold():
    m = torch.tensor([[[0.0, 127.0, 128.0, 255.0]]]).repeat(3, 1, 1)
    out = BinarizeMaskd("m")({"m": m})["m"]
    assert tuple(out.shape) == (1, 1, 4)
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def _root_error(fn):
    with pytest.raises(Exception) as info:
        fn()
    root = info.value
    while root.__cause__ is not None:
        root = root.__cause__
    return root


def test_binarize_mask_01_and_alpha():
    m01 = torch.tensor([[[0.0, 1.0, 1.0, 0.0]]])
    assert BinarizeMaskd("m")({"m": m01})["m"].flatten().tolist() == [0.0, 1.0, 1.0, 0.0]
    # RGBA: the (opaque, 255) alpha channel must not count, for 0/255 and for 0/1 masks
    for scale in (255.0, 1.0):
        rgba = torch.cat([m01.repeat(3, 1, 1) * scale, torch.full_like(m01, 255.0)])
        assert BinarizeMaskd("m")({"m": rgba})["m"].flatten().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert BinarizeMaskd("m")({"m": torch.zeros(1, 1, 4)})["m"].sum() == 0  # an empty label stays legal


@pytest.mark.parametrize("scale", [255, 1], ids=["0-255", "0-1"])
@pytest.mark.parametrize("mode", ["L", "P", "RGB"])
def test_polyp_png_masks_0_255_and_0_1(tmp_path, pair, scale, mode):
    """0/1 PNG masks (label maps, palette indices) used to become empty labels silently (threshold 127)."""
    item, _, mask = pair
    img = Image.fromarray((mask > 0).astype(np.uint8) * scale)
    if mode == "P":
        img = img.convert("P") if scale == 255 else Image.fromarray((mask > 0).astype(np.uint8), "P")
    elif mode == "RGB":
        img = img.convert("RGB")
    img.save(tmp_path / "m.png")
    lab = polyp_val_transforms(spatial_size=32)({"image": item["image"], "label": str(tmp_path / "m.png")})["label"]
    ref = polyp_val_transforms(spatial_size=32)(item)["label"]  # the 0/255 JPEG mask of the fixture
    assert float(lab.sum()) > 0 and float((lab == ref).float().mean()) > 0.98


def test_polyp_mask_with_nothing_above_threshold_is_refused(tmp_path, pair):
    item, _, mask = pair
    Image.fromarray((mask > 0).astype(np.uint8) * 2).save(tmp_path / "labelmap_0_2.png")  # e.g. classes 0/2
    root = _root_error(lambda: polyp_val_transforms(spatial_size=32)({"image": item["image"],
                                                                     "label": str(tmp_path / "labelmap_0_2.png")}))
    assert isinstance(root, DataError) and "labelmap_0_2.png" in str(root) and "threshold" in str(root)


def test_polyp_gray_and_rgba_images_become_rgb(tmp_path, pair):
    """Gray and RGBA images used to fail in NormalizeIntensityd ("img has N channels, but subtrahend has 3")."""
    item, rgb, _ = pair
    ref = polyp_val_transforms(spatial_size=32)(item)["image"]
    alpha = np.full(rgb.shape[:2] + (1,), 90, np.uint8)  # a (semi-transparent) alpha is dropped, not composited
    Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(tmp_path / "rgba.png")
    out = polyp_val_transforms(spatial_size=32)({"image": str(tmp_path / "rgba.png"), "label": item["label"]})
    torch.testing.assert_close(out["image"], ref)
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    g = polyp_val_transforms(spatial_size=32, label_key=None)({"image": str(tmp_path / "gray.png")})["image"]
    assert tuple(g.shape) == (3, 32, 32)
    raw = (g * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None])
    torch.testing.assert_close(raw[1], raw[0], atol=1e-5, rtol=0)  # three equal channels before normalising
    torch.testing.assert_close(raw[2], raw[0], atol=1e-5, rtol=0)


def test_ensure_rgb_refuses_other_channel_counts():
    from monai.data import MetaTensor

    x = MetaTensor(torch.zeros(5, 4, 4), meta={"filename_or_obj": "/d/multispectral.tif"})
    with pytest.raises(DataError, match="multispectral.tif.*5 channels"):
        EnsureRGBd("image")({"image": x})
    y = MetaTensor(torch.rand(1, 4, 4), meta={"filename_or_obj": "g.png"})
    out = EnsureRGBd("image")({"image": y})["image"]
    assert tuple(out.shape) == (3, 4, 4) and isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "g.png"


def test_polyp_val_alignment_and_normalisation(pair):
    item, rgb, mask = pair
    d = polyp_val_transforms(spatial_size=32)(item)
    img, lab = d["image"], d["label"]
    assert tuple(img.shape) == (3, 32, 32) and tuple(lab.shape) == (1, 32, 32)
    assert set(lab.unique().tolist()) == {0.0, 1.0}
    # the white rectangle (image) and the mask must overlap after both were loaded and resized
    white = img[1] > 1.5
    assert float((white == (lab[0] > 0)).float().mean()) > 0.95
    # ImageNet normalisation of the red background (200, 0, 0)
    bg = img[:, 31, 31]
    expected = [(200 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                -IMAGENET_MEAN[2] / IMAGENET_STD[2]]
    np.testing.assert_allclose(bg.numpy(), expected, atol=1e-3)


def test_polyp_train_shapes_and_pairing(pair):
    item, _, _ = pair
    xf = polyp_train_transforms(spatial_size=32)
    for seed in range(5):
        xf.set_random_state(seed)
        d = xf(item)
        img, lab = d["image"], d["label"]
        assert tuple(img.shape) == (3, 32, 32) and tuple(lab.shape) == (1, 32, 32)
        assert img.dtype == torch.float32 and set(lab.unique().tolist()) <= {0.0, 1.0}
        if lab.sum() > 4:  # the mask still sits on the white rectangle after the random geometry
            assert float(img[1][lab[0] > 0].mean()) > 1.0


def test_polyp_mask_size_mismatch(tmp_path, pair):
    item, _, _ = pair
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(Exception) as info:
        polyp_val_transforms()({"image": item["image"], "label": str(tmp_path / "small.png")})
    root = info.value
    while root.__cause__ is not None:
        root = root.__cause__
    assert isinstance(root, DataError) and "small.png" in str(root)


def test_real_kvasir_sample(shared_path_fn):
    base = shared_path_fn("Kvasir-SEG-5-samples-original-encoding", "Kvasir-SEG")
    name = "cju0qkwl35piu0993l0dewei2.jpg"
    item = {"image": str(base / "images" / name), "label": str(base / "masks" / name)}
    raw_mask = np.asarray(Image.open(item["label"]).convert("L"))
    d = polyp_val_transforms()(item)
    img, lab = d["image"], d["label"]
    assert tuple(img.shape) == (3, 256, 256) and img.dtype == torch.float32
    assert tuple(lab.shape) == (1, 256, 256) and set(lab.unique().tolist()) == {0.0, 1.0}
    assert -2.2 < float(img.min()) < 0 < float(img.max()) < 2.7  # ImageNet-normalised [0, 1] input
    # foreground fraction is preserved (resizing only) within a few percent
    assert abs(float(lab.mean()) - float((raw_mask > 127).mean())) < 0.02
    xf = polyp_train_transforms()
    xf.set_random_state(0)
    t = xf(item)
    assert tuple(t["image"].shape) == (3, 256, 256) and tuple(t["label"].shape) == (1, 256, 256)


def test_real_kvasir_mask_written_back_in_image_size(tmp_path, shared_path_fn):
    """PILReader transposes to (W, H); SaveImaged must give back an H x W mask."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SaveImaged

    base = shared_path_fn("Kvasir-SEG-5-samples-original-encoding", "Kvasir-SEG")
    p = base / "masks" / "cju0qoxqj9q6s0835b43399p4.jpg"
    d = Compose([LoadImaged("label", reader="PILReader"), EnsureChannelFirstd("label"), BinarizeMaskd("label")])(
        {"label": str(p)})
    d["label"] = d["label"] * 255
    SaveImaged("label", output_dir=tmp_path, output_ext=".png", output_postfix="", separate_folder=False,
               output_dtype=np.uint8, print_log=False)(d)
    out = np.asarray(Image.open(tmp_path / (p.stem + ".png")))
    ref = np.asarray(Image.open(p).convert("L")) > 127
    assert out.shape == ref.shape
    assert np.mean((out > 127) == ref) > 0.999

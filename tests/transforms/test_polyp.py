"""Polyp pipelines: synthetic JPEG/PNG pairs and the real Kvasir-SEG samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_patcher.data import DataError
from monai_patcher.transforms import BinarizeMaskd, IMAGENET_MEAN, IMAGENET_STD, polyp_train_transforms, polyp_val_transforms


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

"""PNG overlays of predictions (monai_patcher/handlers/overlay_writer.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from handlers_helpers import sagittal_stored_case
from monai_patcher.handlers import OverlayWriter


def test_overlay_writer_3d_and_2d(tmp_path):
    img = MetaTensor(torch.rand(2, 4, 4, 3), meta={"filename_or_obj": "/x/case7_adc.nii.gz"})
    p, y = torch.zeros(1, 1, 4, 4, 3), torch.zeros(1, 1, 4, 4, 3)
    y[0, 0, :2, :2, 0] = p[0, 0, :2, :2, 0] = 1  # slice 0: true positives
    y[0, 0, :2, :2, 1] = 1  # slice 1: a missed lesion
    p[0, 0, 3, 3, 2] = 1  # slice 2: a false positive
    w = OverlayWriter(tmp_path, image_channel=1)
    paths = w.write({"image": img, "pred": MetaTensor(p[0], meta=dict(img.meta)), "label": y[0]})
    assert sorted(x.split("/")[-1] for x in paths) == ["slice_000.png", "slice_001.png", "slice_002.png"]
    assert all("case7_adc" in x for x in paths)
    img2 = MetaTensor(torch.rand(3, 6, 5), meta={"filename_or_obj": "/x/polyp1.jpg"})
    out = OverlayWriter(tmp_path).write({"image": img2, "pred": torch.ones(1, 6, 5)})
    from PIL import Image

    assert out[0].endswith("polyp1_overlay.png") and Image.open(out[0]).size == (6, 5)  # (W, H) of the (W, H) array
    assert np.asarray(Image.open(out[0])).shape == (5, 6, 3)


@pytest.mark.parametrize("plane, files, size", [
    ("axial", ["slice_003.png", "slice_004.png"], (12, 10)),
    ("coronal", ["slice_001.png", "slice_002.png", "slice_003.png"], (12, 8)),
    ("sagittal", ["slice_001.png", "slice_002.png", "slice_003.png"], (10, 8)),
])
def test_overlay_writer_anatomical_plane_of_a_sagittal_stored_volume(tmp_path, plane, files, size):
    from PIL import Image

    paths = OverlayWriter(tmp_path, image_channel=1, label_key=None, slice_axis=plane).write(sagittal_stored_case())
    assert sorted(Path(p).name for p in paths) == files  # the scan's own slice indices along the plane's axis
    assert Image.open(paths[0]).size == size  # (width, height): L-R x A-P, L-R x S-I, A-P x S-I
    if plane == "axial":  # the same pictures as of the same case stored in RAS, cut along its axis 2 (S)
        case = sagittal_stored_case()
        ras = {k: torch.flip(v.permute(0, 3, 1, 2), dims=[2, 3]) for k, v in case.items()}  # PIR -> RAS
        ras_paths = OverlayWriter(tmp_path / "ras", image_channel=1, label_key=None, slice_axis=2).write(ras)
        assert sorted(Path(p).name for p in ras_paths) == ["slice_003.png", "slice_004.png"]  # 7 - 4, 7 - 3
        for p in paths:  # the scan's slice k along S-I is slice 7 - k along I-S
            twin = Path(ras_paths[0]).parent / f"slice_{7 - int(Path(p).stem[-3:]):03d}.png"
            assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(twin)))


def test_stroke_inference_overlays_are_axial(tmp_path):
    """inference.json's OverlayWriter settings on a sagittal-stored scan: PNGs are axial slices."""
    import json

    configs = Path(__file__).resolve().parents[2] / "bundles" / "patcher_stroke" / "configs"
    cfg = json.loads((configs / "inference.json").read_text())
    entry = next(h for h in cfg["handlers"] if h.get("_target_", "").endswith("OverlayWriter"))
    paths = OverlayWriter(tmp_path, label_key=None, slice_axis=entry["slice_axis"]).write(sagittal_stored_case())
    assert sorted(Path(p).name for p in paths) == ["slice_003.png", "slice_004.png"]


def test_an_empty_prediction_is_said_and_still_drawn(tmp_path, caplog):
    """No foreground anywhere: a log line, and one marked picture (the middle slice) instead of nothing."""
    import logging

    from PIL import Image

    img = MetaTensor(torch.rand(2, 8, 8, 5), meta={"filename_or_obj": "/x/case9_adc.nii.gz"})
    caplog.set_level(logging.INFO, logger="monai_patcher.handlers.overlay_writer")
    paths = OverlayWriter(tmp_path, image_channel=1).write({"image": img, "pred": torch.zeros(1, 8, 8, 5)})
    assert [Path(p).name for p in paths] == ["slice_002_empty.png"]
    assert any("case9_adc: the prediction is empty" in r.getMessage() for r in caplog.records)
    marked = np.asarray(Image.open(paths[0]))
    assert (marked[0, :] == (255, 225, 25)).all()  # the frame marks it
    # an empty prediction of a case with a label: the label's slices, each marked
    y = torch.zeros(1, 8, 8, 5)
    y[0, 2:4, 2:4, 1] = 1
    paths = OverlayWriter(tmp_path / "lab", image_channel=1).write(
        {"image": img, "pred": torch.zeros(1, 8, 8, 5), "label": y})
    assert [Path(p).name for p in paths] == ["slice_001.png"]
    assert (np.asarray(Image.open(paths[0]))[0, :] == (255, 225, 25)).all()
    # a non-empty prediction is not marked
    p = torch.zeros(1, 8, 8, 5)
    p[0, 2:4, 2:4, 1] = 1
    (path,) = OverlayWriter(tmp_path / "full", image_channel=1).write({"image": img, "pred": p})
    assert not (np.asarray(Image.open(path))[0, :] == (255, 225, 25)).all()


def test_small_slices_are_upscaled_to_min_size(tmp_path):
    from PIL import Image

    img = MetaTensor(torch.rand(2, 64, 48, 3), meta={"filename_or_obj": "/x/case1_adc.nii.gz"})
    p = torch.zeros(1, 64, 48, 3)
    p[0, 10:20, 10:20, 1] = 1
    (small,) = OverlayWriter(tmp_path / "a", image_channel=1).write({"image": img, "pred": p})
    (big,) = OverlayWriter(tmp_path / "b", image_channel=1, min_size=256).write({"image": img, "pred": p})
    assert Image.open(small).size == (64, 48) and Image.open(big).size == (64 * 6, 48 * 6)  # 48 * 6 >= 256
    a, b = np.asarray(Image.open(small)), np.asarray(Image.open(big))
    assert np.array_equal(b[::6, ::6], a)  # nearest neighbour: every voxel a 6 x 6 block of its colour

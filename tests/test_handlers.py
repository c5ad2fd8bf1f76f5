"""Per-slice metrics and the overlay writer."""

import math

import numpy as np
import torch

from monai_patcher.handlers import OverlayWriter, SliceDiceMetric, SliceIoUMetric


def _volumes():
    y = torch.zeros(1, 1, 4, 4, 3)
    p = torch.zeros(1, 1, 4, 4, 3)
    y[0, 0, :2, :2, 0] = 1  # slice 0: perfect
    p[0, 0, :2, :2, 0] = 1
    y[0, 0, :2, :2, 1] = 1  # slice 1: half overlap
    p[0, 0, :2, 0, 1] = 1
    p[0, 0, 3, 3, 2] = 1  # slice 2: no lesion in the ground truth -> ignored
    return p, y


def test_slice_dice_per_axial_slice():
    p, y = _volumes()
    m = SliceDiceMetric()
    m(p, y)
    buf = m.get_buffer()
    assert buf.shape == (3, 1)  # one row per slice
    assert buf[0, 0] == 1.0 and math.isclose(float(buf[1, 0]), 2 * 2 / (2 + 4), rel_tol=1e-6) and torch.isnan(buf[2, 0])
    assert math.isclose(float(m.aggregate()), (1.0 + 2 / 3) / 2, rel_tol=1e-6)


def test_slice_iou_and_other_axis():
    p, y = _volumes()
    m = SliceIoUMetric()
    m(p, y)
    assert math.isclose(float(m.get_buffer()[1, 0]), 2 / 4, rel_tol=1e-6)
    m0 = SliceDiceMetric(slice_axis=0)
    m0(p, y)
    assert m0.get_buffer().shape == (4, 1)


def test_overlay_writer_3d_and_2d(tmp_path):
    from monai.data import MetaTensor

    img = MetaTensor(torch.rand(2, 4, 4, 3), meta={"filename_or_obj": "/x/case7_adc.nii.gz"})
    p, y = _volumes()
    w = OverlayWriter(tmp_path, image_channel=1)
    paths = w.write({"image": img, "pred": MetaTensor(p[0], meta=dict(img.meta)), "label": y[0]})
    assert sorted(x.split("/")[-1] for x in paths) == ["slice_000.png", "slice_001.png", "slice_002.png"]
    assert all("case7_adc" in x for x in paths)
    img2 = MetaTensor(torch.rand(3, 6, 5), meta={"filename_or_obj": "/x/polyp1.jpg"})
    out = OverlayWriter(tmp_path).write({"image": img2, "pred": torch.ones(1, 6, 5)})
    from PIL import Image

    assert out[0].endswith("polyp1_overlay.png") and Image.open(out[0]).size == (6, 5)  # (W, H) of the (W, H) array
    assert np.asarray(Image.open(out[0])).shape == (5, 6, 3)


def test_gating_map_writer(tmp_path):
    from monai.data import MetaTensor

    from monai_patcher.handlers import GatingMapWriter

    g = torch.softmax(torch.rand(4, 5, 6, 3), dim=0)
    item = {"gating": MetaTensor(g, meta={"filename_or_obj": "/x/c1.nii.gz"}), "image": torch.rand(2, 5, 6, 3)}
    paths = GatingMapWriter(tmp_path, every=2).write(item)
    assert [p.split("/")[-1] for p in paths] == ["slice_000.png", "slice_002.png"] and "c1_gating" in paths[0]
    paths2d = GatingMapWriter(tmp_path).write({"gating": g[..., 0]})
    assert paths2d[0].endswith("_gating.png")

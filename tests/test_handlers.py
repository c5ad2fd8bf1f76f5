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


def _reoriented(x: torch.Tensor, affine: torch.Tensor):
    """``x`` (B x C x X x Y x Z, identity affine) in another voxel order: axes (Z, X, Y), the new Y flipped.

    Returns the same voxels as a MetaTensor whose affine maps the new indices to the same world points.
    """
    from monai.data import MetaTensor

    moved = torch.flip(x.permute(0, 1, 4, 2, 3), dims=[4])  # new (a, b, c) = old (b, Y-1-c, a)
    ny = x.shape[3]
    to_old = torch.tensor([[0, 1, 0, 0], [0, 0, -1, ny - 1], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    return MetaTensor(moved, affine=affine.double() @ to_old)


def test_slice_metrics_by_anatomical_plane():
    """``slice_axis="axial"`` cuts along the array axis pointing inferior-superior, wherever it is."""
    p, y = _volumes()
    eye = torch.eye(4)
    axial = SliceDiceMetric(slice_axis="axial")
    axial(_reoriented(p, eye), _reoriented(y, eye))  # axial is now array axis 0, and comes as a MetaTensor
    ref = SliceDiceMetric(slice_axis=2)
    ref(p, y)
    torch.testing.assert_close(axial.get_buffer(), ref.get_buffer(), equal_nan=True)
    # an oblique affine: the axis closest to superior wins; sagittal and coronal are the other two
    theta = math.radians(20)
    rot = torch.tensor([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0], [0, math.sin(theta), math.cos(theta), 0],
                        [0, 0, 0, 1]]) @ torch.diag(torch.tensor([0.9, 0.9, 3.0, 1.0]))
    for plane, n_slices in (("sagittal", 4), ("coronal", 4), ("axial", 3)):
        m = SliceIoUMetric(slice_axis=plane)
        m(*(_reoriented(t, rot) for t in (p, y)))
        assert m.get_buffer().shape == (n_slices, 1), plane


def test_slice_metric_plane_errors():
    import pytest

    with pytest.raises(ValueError, match="slice_axis must be"):
        SliceDiceMetric(slice_axis="transverse")
    with pytest.raises(ValueError, match="slice_axis must be"):
        SliceDiceMetric(slice_axis=3)
    p, y = _volumes()
    with pytest.raises(ValueError, match="needs predictions with an affine"):
        SliceDiceMetric(slice_axis="axial")(p, y)  # a plain tensor has no orientation


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

"""Slice-wise Dice and IoU (monai_patcher/metrics/slice_dice.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_patcher.metrics import SliceDiceMetric, SliceIoUMetric


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


@pytest.mark.parametrize("ignore_empty", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_dice_equals_monai_dice_metric_on_the_cut_slices(ignore_empty, include_background, axis):
    """SliceDiceMetric fed case by case (as the ignite handler does) equals MONAI's DiceMetric on the explicitly cut
    2D slices, for several cases and channels, empty ground-truth slices, with and without background."""
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(axis)
    shape = (3, 2, 5, 6, 7)  # B x C x X x Y x Z
    y = torch.tensor((rng.random(shape) < 0.05).astype(np.float32))
    p = torch.tensor((rng.random(shape) < 0.05).astype(np.float32))
    y[..., 3] = 0  # some empty ground-truth slices
    y[:, :, 1] = 0
    rest = [s for i, s in enumerate(shape[2:]) if i != axis]
    cut = lambda t: torch.movedim(t, 2 + axis, 1).reshape(-1, shape[1], *rest)  # noqa: E731 - (B*n) x C x 2D
    expected = DiceMetric(include_background=include_background, ignore_empty=ignore_empty)
    expected(cut(p), cut(y))
    got = SliceDiceMetric(include_background=include_background, ignore_empty=ignore_empty, slice_axis=axis)
    for b in range(shape[0]):
        got([p[b]], [y[b]])
    assert math.isclose(float(got.aggregate()), float(expected.aggregate()), rel_tol=1e-6)

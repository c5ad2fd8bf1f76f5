"""RandSliced, SliceDataset and stack_slices on small synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor

from monai_patcher.transforms import RandSliced, SliceDataset, extract_slice, slice_labels, stack_slices


def _case(depth=10, lesion_slices=(7,), axis=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = [6, 7, 8]
    shape[axis] = depth
    img = torch.rand(2, *shape, generator=g)
    lab = torch.zeros(1, *shape)
    for s in lesion_slices:
        idx = [slice(None)] * 4
        idx[axis + 1] = s
        lab[tuple(idx)] = 1
    meta = {"filename_or_obj": "case.nii.gz"}
    return {"image": MetaTensor(img, meta=dict(meta)), "label": MetaTensor(lab, meta=dict(meta)), "case": "c1"}


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_extract_and_stack_round_trip(axis):
    d = _case(axis=axis)
    n = d["image"].shape[axis + 1]
    slices = [extract_slice(d["image"], axis, i) for i in range(n)]
    assert all(s.ndim == 3 and s.meta["slice_index"] == i and s.meta["slice_axis"] == axis for i, s in enumerate(slices))
    assert slices[0].meta["filename_or_obj"] == "case.nii.gz"
    back = stack_slices(slices[::-1], axis=axis)  # order restored from meta
    torch.testing.assert_close(back, d["image"].as_tensor())
    with pytest.raises(ValueError):
        stack_slices(slices[:-1] + slices[:1], axis=axis)


@pytest.mark.parametrize("pos_ratio, expect_pos", [(1.0, 1.0), (0.0, 0.0)])
def test_rand_sliced_ratio_extremes(pos_ratio, expect_pos):
    d = _case(lesion_slices=(3, 7))
    out = RandSliced(["image", "label"], "label", pos_ratio=pos_ratio, num_samples=20).set_random_state(1)(d)
    assert len(out) == 20
    pos = np.mean([float(o["label"].max()) for o in out])
    assert pos == expect_pos
    for o in out:
        assert tuple(o["image"].shape) == (2, 6, 7) and o["case"] == "c1"
        i = o["image"].meta["slice_index"]
        torch.testing.assert_close(o["image"].as_tensor(), d["image"][..., i].as_tensor())
        assert o["label"].meta["slice_index"] == i


def test_rand_sliced_ratio_statistics_and_seed():
    d = _case(depth=40, lesion_slices=(5,))
    t = RandSliced(["image", "label"], "label", pos_ratio=0.3, num_samples=400)
    out = t.set_random_state(3)(d)
    frac = np.mean([float(o["label"].max()) for o in out])
    assert 0.22 < frac < 0.38  # uniform sampling would give 1/40
    again = t.set_random_state(3)(d)
    assert [o["label"].meta["slice_index"] for o in out] == [o["label"].meta["slice_index"] for o in again]


def test_rand_sliced_negatives_inside_image_and_no_lesion_case():
    d = _case(lesion_slices=())
    d["image"][..., :4] = 0  # empty slices above the head
    out = RandSliced(["image", "label"], "label", pos_ratio=0.9, num_samples=30, image_key="image").set_random_state(0)(d)
    idx = {o["image"].meta["slice_index"] for o in out}
    assert idx and min(idx) >= 4  # never an empty slice, and no positives exist: negatives used


def test_slice_labels():
    lab = torch.zeros(1, 3, 3, 4)
    lab[0, 1, 1, 2] = 1
    np.testing.assert_array_equal(slice_labels(lab, 2), [False, False, True, False])
    np.testing.assert_array_equal(slice_labels(lab, 0), [False, True, False])


def test_slice_dataset_covers_every_slice_and_batches():
    vols = [_case(depth=5, lesion_slices=(1,), seed=0), _case(depth=3, lesion_slices=(), seed=1)]
    ds = SliceDataset(vols, ["image", "label"], axis=2)
    assert len(ds) == 8
    seen = [(ds[k]["case_index"], int(ds[k]["image"].meta["slice_index"])) for k in range(len(ds))]
    assert seen == [(0, i) for i in range(5)] + [(1, i) for i in range(3)]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert tuple(batch["image"].shape) == (4, 2, 6, 7)
    # predictions grouped by case go back into the volume
    preds = [ds[k]["image"] for k in range(5)]
    torch.testing.assert_close(stack_slices(preds, axis=2), vols[0]["image"].as_tensor())


def test_plane_axis_is_the_axis_orientationd_slices_along():
    """On oblique scans the anatomical plane must map to the array axis MONAI's Orientationd (nibabel's
    io_orientation) puts there, i.e. the axis the network sliced along; a per-row argmax of the affine
    disagreed on ~5 % of random rotations (some at 45 degrees) and could give two planes the same axis."""
    from monai.transforms import Orientation

    from monai_patcher.transforms.slices import plane_axis

    rng = np.random.default_rng(0)
    for _ in range(200):
        q, _r = np.linalg.qr(rng.normal(size=(3, 3)))
        affine = np.eye(4)
        affine[:3, :3] = q @ np.diag([1.0, 1.0, 3.0])
        ras = Orientation("RAS")(MetaTensor(torch.zeros(1, 5, 6, 7), affine=torch.tensor(affine)))
        for plane, ras_axis in (("sagittal", 0), ("coronal", 1), ("axial", 2)):
            assert (5, 6, 7)[plane_axis(torch.tensor(affine), plane)] == ras.shape[1 + ras_axis], (plane, affine)

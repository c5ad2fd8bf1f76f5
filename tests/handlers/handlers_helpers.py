"""Helpers shared by the handler tests."""

from __future__ import annotations

import torch
from monai.data import MetaTensor


def sagittal_stored_case():
    """A PIR-stored volume (array axes: anterior->posterior, superior->inferior, left->right), as a sagittal
    scan is after ``Invertd`` back to its own grid: the prediction is a block on the array's axis 1 (slices
    3 and 4), in the anterior part (low axis-0 index) and at low axis-2 indices."""
    affine = torch.tensor([[0.0, 0, 1, -10], [-1, 0, 0, 20], [0, -1, 0, 30], [0, 0, 0, 1]])  # columns: P, I, R
    shape = (10, 8, 12)  # 10 A-P, 8 S-I, 12 L-R voxels
    pred = torch.zeros(1, *shape)
    pred[0, 1:4, 3:5, 1:4] = 1
    meta = {"filename_or_obj": "/x/sag_case.nii.gz"}
    noise = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    image = MetaTensor(noise, affine=affine, meta=dict(meta))
    return {"image": image, "pred": MetaTensor(pred, affine=affine, meta=dict(meta))}

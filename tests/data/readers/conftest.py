"""Fixtures of the reader tests."""

from __future__ import annotations

import numpy as np
import pytest

from readers_helpers import write_nifti


@pytest.fixture
def oblique_nifti(tmp_path):
    """A small float NIfTI with an oblique (rotated) affine: ``(path, array, affine)``."""
    rng = np.random.default_rng(0)
    arr = rng.random((7, 9, 5)).astype(np.float32)
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[-1.5 * c, -2 * s, 0, 10], [1.5 * s, -2 * c, 0, -20], [0, 0, 3, 5], [0, 0, 0, 1]])
    return write_nifti(tmp_path / "vol.nii.gz", arr, affine), arr, affine

"""The input checks of monai_patcher/transforms/checks.py: CheckVolumed and CheckGeometryd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_patcher.data import DataError
from monai_patcher.transforms import CheckGeometryd, CheckVolumed


def _mt(arr, name, affine=None):
    return MetaTensor(torch.as_tensor(arr, dtype=torch.float32), affine=affine, meta={"filename_or_obj": name})


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((1, 4, 4, 4)), "empty"),
        (np.full((1, 4, 4, 4), 3.0), "constant"),
        (np.ones((1, 4, 4)), "expected a volume"),
        (np.random.rand(1, 4, 4, 1), "2D image"),
    ],
)
def test_check_volume_rejects(arr, match):
    with pytest.raises(DataError, match=match) as info:
        CheckVolumed("x")({"x": _mt(arr, "/data/x.nii.gz")})
    assert "/data/x.nii.gz" in str(info.value)


def test_check_volume_nan_inf_and_pass():
    a = np.random.rand(1, 4, 4, 4)
    a[0, 0, 0, 0] = np.nan
    a[0, 1, 0, 0] = np.inf
    with pytest.raises(DataError, match="1 NaN and 1 infinite"):
        CheckVolumed("x")({"x": _mt(a, "f.nii")})
    good = _mt(np.random.rand(1, 4, 4, 4), "g.nii")
    d = {"x": good}
    assert CheckVolumed("x")(d)["x"] is good
    CheckVolumed("x", allow_constant=True)({"x": _mt(np.zeros((1, 4, 4, 4)), "l.nii")})


def test_check_volume_num_channels_names_a_4d_file():
    four = _mt(np.random.rand(3, 4, 4, 4), "/data/case1_dwi.nii.gz")
    with pytest.raises(DataError, match=r"^/data/case1_dwi.nii.gz \(key 'x'\): expected 1 channel\(s\), got 3: the file "
                                        r"holds 3 volumes .*several b-values.*b = 1000"):  # fmt: skip
        CheckVolumed("x", num_channels=1)({"x": four})
    with pytest.raises(DataError, match=r"expected 2 channel\(s\), got 3$"):
        CheckVolumed("x", num_channels=2)({"x": four})
    CheckVolumed("x", num_channels=3)({"x": four})
    with pytest.raises(ValueError, match="num_channels must be positive"):
        CheckVolumed("x", num_channels=0)


def test_check_geometry():
    a = _mt(np.random.rand(1, 4, 4, 4), "dwi.nii")
    with pytest.raises(DataError, match="label.nii.*spatial shape"):
        CheckGeometryd(["a", "b"])({"a": a, "b": _mt(np.zeros((1, 4, 4, 3)), "label.nii")})
    with pytest.raises(DataError, match="adc.nii.*affine"):
        CheckGeometryd(["a", "b"])({"a": a, "b": _mt(np.random.rand(1, 4, 4, 4), "adc.nii", torch.diag(torch.tensor([2.0, 1, 1, 1])))})
    CheckGeometryd(["a", "b"])({"a": a, "b": _mt(np.zeros((1, 4, 4, 4)), "l.nii")})

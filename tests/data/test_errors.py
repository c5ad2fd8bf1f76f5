"""DataError (monai_patcher/data/errors.py): its ``"<file>: <problem>"`` message and its single-argument form."""

from __future__ import annotations

import os
import pickle
from pathlib import Path, PurePosixPath

import pytest

import monai_patcher.data
from monai_patcher.data.errors import DataError


class _Custom(os.PathLike):
    """An os.PathLike that is not a pathlib path: only ``os.fspath`` gives its path (its str() does not)."""

    def __fspath__(self) -> str:
        return "/data/case2/dwi.nii.gz"

    def __str__(self) -> str:
        return "<_Custom>"


@pytest.mark.parametrize("path", [None, ""], ids=["None", "empty"])
def test_for_file_without_a_path_is_just_the_problem(path):
    err = DataError.for_file(path, "contains 12 NaN voxels")
    assert str(err) == "contains 12 NaN voxels" and err.args == ("contains 12 NaN voxels",)


@pytest.mark.parametrize(
    "path, shown",
    [
        ("/data/case1/adc.nii.gz", "/data/case1/adc.nii.gz"),
        (PurePosixPath("/data/case1/adc.nii.gz"), "/data/case1/adc.nii.gz"),
        (Path("rel") / "adc.nii.gz", os.path.join("rel", "adc.nii.gz")),
        (_Custom(), "/data/case2/dwi.nii.gz"),
    ],
    ids=["str", "PurePosixPath", "Path", "custom-PathLike"],
)
def test_for_file_message_is_path_colon_problem(path, shown):
    err = DataError.for_file(path, "contains 12 NaN voxels")
    assert str(err) == f"{shown}: contains 12 NaN voxels"
    assert err.args == (str(err),)  # a single message argument


def test_docstring_example_message():
    with pytest.raises(DataError) as info:
        raise DataError.for_file("/data/case1/adc.nii.gz", "contains 12 NaN voxels")
    assert str(info.value) == "/data/case1/adc.nii.gz: contains 12 NaN voxels"


def test_is_a_value_error_exported_and_subclass_aware():
    assert issubclass(DataError, ValueError) and monai_patcher.data.DataError is DataError
    with pytest.raises(ValueError, match="^f.nii: bad$"):  # ``except ValueError`` keeps working
        raise DataError.for_file("f.nii", "bad")

    class Sub(DataError):
        pass

    assert type(Sub.for_file("f.nii", "bad")) is Sub and type(Sub.for_file(None, "bad")) is Sub


def test_survives_pickling_like_a_dataloader_worker_reraise():
    err = DataError.for_file(Path("/data/x.nii.gz"), "is empty")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DataError and str(back) == str(err) == "/data/x.nii.gz: is empty"

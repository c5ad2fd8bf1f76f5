"""Helpers shared by the reader tests: writing small images, loading them, and checking the errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.transforms import Compose, LoadImage, LoadImaged

from monai_patcher.data import DataError, SimpleITKReader


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a ``raise ... from`` chain."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def write_nifti(path, arr, affine):
    """``arr`` as a NIfTI-1 file with ``affine``; returns ``path``."""
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def load_image(path, **kw):
    """``path`` through ``LoadImage`` with a ``SimpleITKReader(**kw)`` (a MetaTensor)."""
    return LoadImage(reader=SimpleITKReader(**kw), image_only=True)(path)


def load_item(path, **kw):
    """``{"x": path}`` through ``LoadImaged`` with a ``SimpleITKReader(**kw)``."""
    return Compose([LoadImaged("x", reader=SimpleITKReader(**kw))])({"x": str(path)})


def assert_clean_error(path, match, **kw):
    """Loading ``path`` raises a ``DataError`` (as the root cause) naming the file and saying ``match``."""
    with pytest.raises(Exception) as info:
        load_item(path, **kw)
    root = root_cause(info.value)
    assert isinstance(root, DataError), f"expected DataError, got {type(root).__name__}: {root}"
    assert str(path) in str(root)
    assert match in str(root)
    assert "Traceback" not in str(root)


def write_dicom_series(folder, positions, uid="1.2.3.4", size=(8, 6), start=0, extra=None, prefix="im"):
    """Tiny synthetic DICOM series via SimpleITK; slice value = its index in ``positions``; ``extra``: more tags."""
    folder.mkdir(parents=True, exist_ok=True)
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for i, z in enumerate(positions):
        img = sitk.GetImageFromArray(np.full((size[1], size[0]), 100 + i, np.int16))
        img.SetSpacing((0.8, 0.9))
        for tag, val in {
            "0008|0060": "MR",
            "0020|000d": "1.2.3",
            "0020|000e": uid,
            "0020|0013": str(len(positions) - i + start),  # reversed instance numbers on purpose
            "0020|0032": f"0\\0\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.9\\0.8",
            "0008|0018": f"{uid}.{start}.{i}",
            **(extra or {}),
        }.items():
            img.SetMetaData(tag, val)
        w.SetFileName(str(folder / f"{prefix}{i:02d}_{uid[-1]}.dcm"))
        w.Execute(img)

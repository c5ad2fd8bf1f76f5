"""The one table of image suffixes (monai_patcher/data/readers/suffixes.py)."""

from __future__ import annotations

import pytest

from monai_patcher.data.readers import SUFFIXES, strip_suffix, suffix_of, suffixes


def test_longest_suffix_wins_and_case_is_ignored():
    assert suffix_of("a/b/Case1_DWI.NII.GZ") == ".nii.gz"
    assert strip_suffix("a/b/Case1_DWI.NII.GZ") == "Case1_DWI"
    assert strip_suffix("sub-1.nii") == "sub-1" and strip_suffix("scan.mha", "nifti") == "scan.mha"
    assert suffix_of("x.tiff", "image2d") == ".tiff" and suffix_of("x.tiff", "nifti") is None
    assert suffix_of("notes.gz") is None and strip_suffix("folder") == "folder"


def test_formats_select_their_suffixes():
    assert set(suffixes(["nifti", "dicom"])) == set(SUFFIXES["nifti"] + SUFFIXES["dicom"])
    assert suffixes("nifti") == (".nii.gz", ".nii")  # longest first
    assert len(suffixes()) == sum(len(v) for v in SUFFIXES.values())
    with pytest.raises(ValueError, match=r"unknown image format\(s\) \['png'\]"):
        suffixes("png")

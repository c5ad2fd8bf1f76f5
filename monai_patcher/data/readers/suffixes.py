"""The file name suffixes of the image formats this package reads: one table, used wherever a name is matched.

Readers, case discovery, datalist builders and output writers all match file names against :data:`SUFFIXES`
(lower case; ``.nii.gz`` before ``.nii`` so the longest ending wins).

Example:
    >>> strip_suffix("sub-1_ses-1_dwi.nii.gz")
    'sub-1_ses-1_dwi'
    >>> suffix_of("Scan.MHA", "metaimage")
    '.mha'
    >>> suffix_of("notes.txt") is None
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["SUFFIXES", "VOLUME_FORMATS", "suffixes", "suffix_of", "strip_suffix"]

#: file name endings of each image format, lower case, the longest first within a format.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "nifti": (".nii.gz", ".nii"),
    "metaimage": (".mha", ".mhd"),
    "nrrd": (".nrrd", ".nhdr"),
    "dicom": (".dcm", ".dicom", ".ima"),
    "image2d": (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"),
}

#: formats whose single file holds a whole volume (a DICOM file usually holds one slice).
VOLUME_FORMATS = ("nifti", "metaimage", "nrrd")


def suffixes(formats: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The suffixes of ``formats`` (a name or names of :data:`SUFFIXES`; None: every format), longest first.

    Raises:
        ValueError: an unknown format name.
    """
    names = list(SUFFIXES) if formats is None else [formats] if isinstance(formats, str) else list(formats)
    unknown = [n for n in names if n not in SUFFIXES]
    if unknown:
        raise ValueError(f"unknown image format(s) {unknown}; known: {list(SUFFIXES)}")
    return tuple(sorted((s for n in names for s in SUFFIXES[n]), key=len, reverse=True))


def suffix_of(name: str | os.PathLike, formats: str | Sequence[str] | None = None) -> str | None:
    """The suffix of ``formats`` that the file name ``name`` ends with, in lower case (case-insensitive match);
    None if it ends with none of them. Only the last path component is looked at."""
    base = os.path.basename(os.fspath(name)).lower()
    return next((s for s in suffixes(formats) if base.endswith(s)), None)


def strip_suffix(name: str | os.PathLike, formats: str | Sequence[str] | None = None) -> str:
    """The file name of ``name`` (last path component) without its image suffix (unchanged if it has none)."""
    base = os.path.basename(os.fspath(name))
    suffix = suffix_of(base, formats)
    return base[: -len(suffix)] if suffix else base

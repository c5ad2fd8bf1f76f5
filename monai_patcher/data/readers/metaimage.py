"""MetaImage (``.mha``, ``.mhd``): why a file's voxel data could not be read, from its text header."""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from .suffixes import suffix_of

__all__ = ["metaimage_shortfall"]


def metaimage_shortfall(path: str, header: sitk.ImageFileReader) -> str | None:
    """Why a MetaImage file (``.mha``, or ``.mhd`` with ``ElementDataFile = LOCAL``) whose voxels ITK could not read
    is short of bytes: ``"N bytes expected ..., only M present"``; None if it is not (or this cannot tell).

    ITK's own message for such a file is often a stale ``errno`` text ("No such file or directory").

    Args:
        path: the file.
        header: its header as SimpleITK read it (pixel type, size, components).
    """
    if suffix_of(path, "metaimage") is None:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        total = os.path.getsize(path)
        fields, end = {}, 0
        for line in head.splitlines(keepends=True):
            end += len(line)
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                break
        else:
            return None
        if fields["elementdatafile"].upper() != "LOCAL":
            return None
        present = total - end
        if fields.get("compresseddata", "false").lower() == "true":
            if "compresseddatasize" not in fields:
                return None
            expected, what = int(fields["compresseddatasize"]), "compressed voxel data"
        else:
            pixel = sitk.Image([1, 1], header.GetPixelID(), header.GetNumberOfComponents())
            expected = int(np.prod(header.GetSize())) * sitk.GetArrayViewFromImage(pixel).nbytes
            what = "voxel data"
    except (OSError, KeyError, ValueError, RuntimeError):
        return None
    if present >= expected:
        return None
    return f"{expected} bytes of {what} expected after the {end}-byte header, only {present} present"

"""SimpleITK plumbing shared by the readers: reading a file's header, and the useful line of an ITK error."""

from __future__ import annotations

import os
import re

import SimpleITK as sitk

__all__ = ["read_header", "itk_error_message"]

# ITK appends "Reason: " + strerror(errno) to some read errors, with an errno left over from an unrelated call
# (a truncated .mha is refused with "Reason: No such file or directory"): such lines say nothing about the file
_OS_REASONS = {f"reason: {os.strerror(n)}".lower() for n in range(1, 134)}
_ITK_ERROR_PREFIX = re.compile(r"^ITK ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*")


def itk_error_message(err: Exception) -> str:
    """The useful line of a SimpleITK/ITK exception message (they are long and multi-line).

    Example:
        >>> err = RuntimeError("ITK ERROR: MetaImageIO(0x1f): File cannot be read\\nReason: No such file or directory")
        >>> itk_error_message(err)  # the stale errno text is dropped
        'File cannot be read'
    """
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    lines = [ln for ln in lines if ln.lower().rstrip(".") not in _OS_REASONS]
    return _ITK_ERROR_PREFIX.sub("", lines[-1]) if lines else type(err).__name__


def read_header(path: str) -> sitk.ImageFileReader:
    """Read the header (no pixels) of one file; DICOM private tags included (the vendors' b-value tags).

    Raises:
        RuntimeError: SimpleITK cannot read the header (use :func:`itk_error_message` for the message).
    """
    r = sitk.ImageFileReader()
    r.SetFileName(path)
    r.LoadPrivateTagsOn()
    r.ReadImageInformation()
    return r

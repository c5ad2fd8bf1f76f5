"""Gzipped files (``.gz``): clear errors for damaged streams.

SimpleITK reads a truncated gzip stream without complaint for some formats (NIfTI's voxels are zero-filled), so the
readers check the stream themselves: a truncated or corrupt one raises a :class:`~monai_patcher.data.DataError`
naming the file (:func:`gzip_errors`). A ``.nii.gz`` is decompressed once, only up to its declared size, by
:func:`~monai_patcher.data.readers.nifti_header.read_nifti_bytes`.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

from ..errors import DataError

__all__ = ["gzip_errors"]


@contextlib.contextmanager
def gzip_errors(path) -> Iterator[None]:
    """Turn a truncated or corrupt gzip stream met inside the block into a ``DataError`` naming ``path``.

    Example:
        >>> with gzip_errors("scan.nii.gz"):  # doctest: +SKIP
        ...     gzip.decompress(data)
    """
    try:
        yield
    except EOFError:
        raise DataError.for_file(path, "truncated gzip file (the compressed stream ends early)") from None
    except (OSError, zlib.error) as e:
        raise DataError.for_file(path, f"corrupt gzip file: {e}") from None

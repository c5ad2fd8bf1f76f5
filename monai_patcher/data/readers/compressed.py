"""Gzipped files (``.gz``): read whole once, or checked to their end, with clear errors for damaged streams.

SimpleITK reads a truncated gzip stream without complaint for some formats (NIfTI's voxels are zero-filled), so the
readers check the stream themselves: a truncated or corrupt one raises a :class:`~monai_patcher.data.DataError`
naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator

from ..errors import DataError

__all__ = ["read_bytes", "check_gzip_stream"]


@contextlib.contextmanager
def _gzip_errors(path: str) -> Iterator[None]:
    """Turn a truncated or corrupt gzip stream met inside the block into a ``DataError`` naming ``path``."""
    try:
        yield
    except EOFError:
        raise DataError.for_file(path, "truncated gzip file (the compressed stream ends early)") from None
    except (OSError, zlib.error) as e:
        raise DataError.for_file(path, f"corrupt gzip file: {e}") from None


def read_bytes(path: str) -> bytes:
    """The whole content of a file, decompressed once in memory if it is gzipped (``.gz``).

    Raises:
        DataError: truncated or corrupt gzip stream (checked to its end, CRC and length included).
    """
    with open(path, "rb") as f:
        data = f.read()
    if not path.lower().endswith(".gz"):
        return data
    with _gzip_errors(path):
        return gzip.decompress(data)


def check_gzip_stream(path: str) -> None:
    """Decompress a ``.gz`` file to its end in 4 MiB chunks (flat memory), only to check it; ``DataError`` if bad."""
    with _gzip_errors(path), gzip.open(path, "rb") as f:
        while f.read(1 << 22):
            pass

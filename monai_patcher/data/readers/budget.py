"""A memory budget for reading: refuse a file whose declared decoded size is too big, before allocating it.

A header can declare any size: a 4 MB ``.nii.gz`` that says ``1024 x 1024 x 1024`` float32 decompresses to 4 GiB,
a 1 kB PNG can say ``60000 x 60000`` pixels. The readers compute the size a file declares from its header and call
:func:`check_decoded_size` before they decompress or allocate anything; what is too big is a
:class:`~monai_patcher.data.DataError` naming the file, not a ``MemoryError`` (or the kernel's OOM killer) later.
"""

from __future__ import annotations

import os
import resource

from ..errors import DataError

__all__ = ["available_memory", "default_max_bytes", "check_decoded_size", "format_bytes"]

#: the default budget is this fraction of :func:`available_memory`: reading holds the decoded bytes, the image
#: ITK or PIL builds from them and the array handed to MONAI (about 3 copies), and the transforms need room too.
BUDGET_FRACTION = 0.25


def _meminfo_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux); None elsewhere."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _address_space_left() -> int | None:
    """How much more virtual memory this process may map under its ``RLIMIT_AS`` soft limit (None: no limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmSize:"):
                    return max(soft - int(line.split()[1]) * 1024, 0)
    except (OSError, ValueError, IndexError):
        pass
    return soft


def available_memory() -> int:
    """Bytes this process can still allocate: the system's available memory (``MemAvailable``, else the free
    physical pages), and no more than what its ``RLIMIT_AS`` leaves (a job scheduler's or a container's cap)."""
    avail = _meminfo_available()
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
            avail = 8 << 30
    left = _address_space_left()
    return int(avail if left is None else min(avail, left))


def default_max_bytes() -> int:
    """The default reading budget: :data:`BUDGET_FRACTION` of :func:`available_memory`, computed when called (so it
    follows the machine the reader runs on)."""
    return int(available_memory() * BUDGET_FRACTION)


def format_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def check_decoded_size(path, nbytes: int, what: str, max_bytes: int | None = None) -> None:
    """Refuse a file whose declared decoded size exceeds the budget, before anything is allocated.

    Args:
        path: the file (named in the error).
        nbytes: the decoded size its header declares, in bytes.
        what: what declares it, for the message (e.g. ``"the NIfTI header (dim 1024 x 1024 x 1024, float32)"``).
        max_bytes: the budget in bytes; None: :func:`default_max_bytes`.

    Raises:
        DataError: ``nbytes`` exceeds the budget.

    Example:
        >>> check_decoded_size("scan.nii.gz", 4 << 30, "its header", max_bytes=1 << 30)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        monai_patcher.data.errors.DataError: scan.nii.gz: its header declares 4.0 GiB of decoded data, more than ...
    """
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    if nbytes > limit:
        raise DataError.for_file(
            path, f"{what} declares {format_bytes(nbytes)} of decoded data, more than the reading budget of "
            f"{format_bytes(limit)} (max_bytes; default a quarter of the available memory)"
        )

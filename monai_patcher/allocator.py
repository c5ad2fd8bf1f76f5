"""Host-memory allocator settings for CPU runs.

PyTorch has no caching allocator for CPU tensors: every tensor is a ``malloc`` and every free a ``free``. glibc's
``malloc`` hands blocks above its mmap threshold (adjusted at run time, at most 32 MiB) and, past its trim
threshold, the free top of its heap back to the kernel, and the next forward pass takes a page fault on every
4 KiB of them again. How much that costs depends on the heap's history (page-fault counts in
docs/architecture.md, measured with ``python -m benchmarks.bench_allocator``).

:func:`keep_freed_memory` makes glibc keep freed memory in the process for reuse, as a caching allocator does;
the process's peak resident memory is unchanged, it is just not returned between forward passes. It is the
run-time equivalent of starting Python with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set, the
CPU counterpart of ``torch.backends.cudnn.benchmark``: a process-wide setting, so it is opt-in (the bundles call
it in their ``initialize`` step). PyTorch's own CPU launcher (``python -m torch.backends.xeon.run_cpu``) preloads
tcmalloc or jemalloc for the same reason.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_NEVER = 2**31 - 1  # the largest value mallopt takes (an int)
_MMAP_LIMIT = 32 * 2**20  # glibc before 2.35 refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB)


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse instead of returning it to the kernel.

    Sets ``M_TRIM_THRESHOLD`` (never trim the heap) and ``M_MMAP_THRESHOLD`` (serve large blocks from the heap
    rather than from fresh ``mmap`` s) with ``mallopt``, for the whole process, from now on. Setting them also turns
    off glibc's dynamic adjustment of both. Calling it again is harmless.

    Returns:
        ``True`` when both settings took effect; ``False`` (and a log message, nothing changed) on platforms
        without glibc's ``mallopt`` (macOS, Windows, musl).

    Example::

        >>> import monai_patcher.allocator
        >>> monai_patcher.allocator.keep_freed_memory()  # on Linux with glibc
        True
    """
    if not sys.platform.startswith("linux"):
        logger.info("keep_freed_memory: not Linux (%s), allocator left unchanged.", sys.platform)
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library the process already uses
        get_version = libc.gnu_get_libc_version  # glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.info("keep_freed_memory: no glibc mallopt in this process, allocator left unchanged.")
        return False
    get_version.restype = ctypes.c_char_p
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = mallopt(M_TRIM_THRESHOLD, _NEVER) == 1
    mmap = mallopt(M_MMAP_THRESHOLD, _NEVER) == 1 or mallopt(M_MMAP_THRESHOLD, _MMAP_LIMIT) == 1
    if not (trim and mmap):
        logger.warning(
            "keep_freed_memory: glibc %s refused mallopt (trim threshold set: %s, mmap threshold set: %s).",
            get_version().decode(), trim, mmap,
        )  # fmt: skip
    return trim and mmap

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

:func:`use_huge_pages` asks PyTorch's CPU allocator for transparent huge pages (2 MiB instead of 4 KiB) for tensors
of 2 MiB and more, with PyTorch's own switch ``THP_MEM_ALLOC_ENABLE``: a tensor's first touch then faults once per
2 MiB instead of once per 4 KiB, and the memory-bound operations of a training step miss the TLB less. Opt-in: on
this project's machine it sped up two training runs side by side but not one run alone (docs/architecture.md, "The
training step").
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["keep_freed_memory", "use_huge_pages"]

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


# the kernel's transparent-huge-page mode: "[always] madvise never" with the current one in brackets
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
_THP_ENV = "THP_MEM_ALLOC_ENABLE"  # read by PyTorch's CPU allocator (c10 alloc_cpu) at its first tensor >= 2 MiB


def _huge_page_advised(address: int) -> bool:
    """Whether the mapping holding ``address`` has the huge-page advice (``hg`` in its ``VmFlags``)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and not head.endswith(":"):  # a mapping's first line: "start-end perms ..."
                start, end = (int(v, 16) for v in head.split("-"))
                inside = start <= address < end
            elif inside and line.startswith("VmFlags:"):
                return "hg" in line.split()[1:]
    return False


def use_huge_pages() -> bool:
    """Ask PyTorch's CPU allocator to back tensors of 2 MiB and more with transparent huge pages.

    Sets PyTorch's switch ``THP_MEM_ALLOC_ENABLE=1`` in this process's environment (inherited by its child
    processes), which makes PyTorch ``madvise(MADV_HUGEPAGE)`` every CPU tensor of 2 MiB or more. PyTorch reads the
    switch once, at the first such tensor, so call this at the start of the process, before any large tensor
    exists (in a bundle: first in ``initialize``, before the network is built), or set the variable before Python
    starts. Then checks that it took effect, on a 4 MiB probe tensor. Combine it with
    :func:`keep_freed_memory`, which keeps the huge pages in the process between steps.

    Returns:
        ``True`` when tensors of 2 MiB and more now get huge pages. ``False`` (with a log message) when they do not:
        not Linux, the kernel's transparent huge pages are ``never``, ``THP_MEM_ALLOC_ENABLE`` is set to something
        other than ``1``, or PyTorch read the switch before this call.

    Example::

        >>> import monai_patcher.allocator
        >>> monai_patcher.allocator.use_huge_pages()  # at the start of a Linux process
        True
    """
    if not sys.platform.startswith("linux"):
        logger.info("use_huge_pages: not Linux (%s), allocator left unchanged.", sys.platform)
        return False
    try:
        with open(_THP_MODE_FILE) as f:
            mode = f.read()
    except OSError:
        mode = ""
    if "[always]" not in mode and "[madvise]" not in mode:
        logger.info(
            "use_huge_pages: the kernel's transparent huge pages are off (%s: %r).", _THP_MODE_FILE, mode.strip()
        )
        return False
    if os.environ.setdefault(_THP_ENV, "1") != "1":
        logger.info("use_huge_pages: %s=%s is set in the environment; left as it is.", _THP_ENV, os.environ[_THP_ENV])
        return False
    import torch

    probe = torch.empty(2**20)  # 4 MiB: above PyTorch's 2 MiB threshold
    if not _huge_page_advised(probe.data_ptr()):
        logger.warning(
            "use_huge_pages: PyTorch did not take %s=1: it had already made a tensor of 2 MiB or more before this "
            "call. Call it at the start of the process, or set the variable before starting Python.", _THP_ENV,
        )  # fmt: skip
        return False
    return True

"""Tests of monai_patcher/allocator.py (glibc malloc keeping freed memory)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monai_patcher import allocator

GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")

# Allocates, touches and frees a 64 MiB tensor seven times and prints the page faults of each of the last five
# rounds (two warm-up rounds: the heap settles on the second).
CHURN = """
import resource, sys, torch
from monai_patcher.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() is True
def churn():
    t = torch.empty(16 * 2**20)
    t.fill_(1.0)
    del t
churn()
churn()
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def _faults(mode: str) -> list[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own defaults
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", CHURN, mode], env=env, capture_output=True, text=True, check=True)
    return [int(v) for v in out.stdout.strip().splitlines()[-1].split()]


@pytest.mark.skipif(not GLIBC, reason="needs Linux with glibc")
def test_freed_memory_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    default, keep = _faults("default"), _faults("keep")
    # glibc's default: a 64 MiB block is a fresh mmap every time, each 4 KiB page faulted in again
    assert all(f > 0.9 * pages for f in default), default
    # kept: the freed block is reused. In about a third of the runs here the first measured round still gets a
    # fresh 64 MiB block (the heap is still settling); the other rounds must take (almost) no page fault
    assert sum(f < 0.05 * pages for f in keep) >= 4, keep


@pytest.mark.skipif(not GLIBC, reason="needs Linux with glibc")
def test_calling_twice_is_harmless():
    assert allocator.keep_freed_memory() is True
    assert allocator.keep_freed_memory() is True


def test_other_platforms_are_left_alone(monkeypatch, caplog):
    monkeypatch.setattr(sys, "platform", "darwin")
    with caplog.at_level("INFO", logger="monai_patcher.allocator"):
        assert allocator.keep_freed_memory() is False
    assert "not Linux" in caplog.text


THP_ON = (
    sys.platform.startswith("linux")
    and os.path.exists(allocator._THP_MODE_FILE)
    and any(m in Path(allocator._THP_MODE_FILE).read_text() for m in ("[always]", "[madvise]"))
)

# Calls use_huge_pages (after a 4 MiB tensor when argv[1] is "late"), then prints its result and whether a new
# 64 MiB tensor's mapping carries the huge-page advice
HUGE = """
import sys, torch
from monai_patcher import allocator
if sys.argv[1] == "late":
    early = torch.empty(2**20)
ok = allocator.use_huge_pages()
t = torch.empty(16 * 2**20)
print(ok, allocator._huge_page_advised(t.data_ptr()))
"""


@pytest.fixture(scope="module")
def huge_children() -> dict[str, tuple[list[str], str]]:
    """The three fresh processes of the tests below (PyTorch reads its switch once per process), run at once."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    explicit = {**env, "THP_MEM_ALLOC_ENABLE": "0"}
    cases = {"first": ("first", env), "late": ("late", env), "explicit": ("first", explicit)}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", HUGE, mode], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, (mode, e) in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results[name] = (out.split(), err)
    return results


@pytest.mark.skipif(not THP_ON, reason="needs Linux with transparent huge pages in 'always' or 'madvise' mode")
def test_use_huge_pages_at_the_start_of_a_process(huge_children):
    """Called first, it turns PyTorch's switch on: large tensors are then advised for huge pages."""
    assert huge_children["first"][0] == ["True", "True"]


@pytest.mark.skipif(not THP_ON, reason="needs Linux with transparent huge pages in 'always' or 'madvise' mode")
def test_use_huge_pages_too_late_says_so(huge_children):
    """After a tensor of 2 MiB or more, PyTorch has read the switch: the call says it did not take effect."""
    result, stderr = huge_children["late"]
    assert result == ["False", "False"]
    assert "already made a tensor of 2 MiB or more" in stderr


@pytest.mark.skipif(not THP_ON, reason="needs Linux with transparent huge pages in 'always' or 'madvise' mode")
def test_use_huge_pages_leaves_an_explicit_setting_alone(huge_children):
    assert huge_children["explicit"][0] == ["False", "False"]


def test_use_huge_pages_when_the_kernel_has_them_off(monkeypatch, tmp_path, caplog):
    mode = tmp_path / "enabled"
    mode.write_text("always madvise [never]\n")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(allocator, "_THP_MODE_FILE", str(mode))
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    with caplog.at_level("INFO", logger="monai_patcher.allocator"):
        assert allocator.use_huge_pages() is False
    assert "transparent huge pages are off" in caplog.text and "THP_MEM_ALLOC_ENABLE" not in os.environ


def test_use_huge_pages_on_other_platforms(monkeypatch, caplog):
    monkeypatch.setattr(sys, "platform", "darwin")
    with caplog.at_level("INFO", logger="monai_patcher.allocator"):
        assert allocator.use_huge_pages() is False
    assert "not Linux" in caplog.text

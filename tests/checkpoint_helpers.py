"""Helpers shared by the tests of atomic files (tests/io) and checkpoint handlers (tests/handlers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from monai_patcher.io import atomic_save

#: the environment of the subprocesses these tests start (one thread: they share a loaded machine)
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


class RunsCodeWhenUnpickled:
    """Unpickling this calls ``open(marker, "w")``: code execution on load."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_name(final: str, pid: int, host: str | None = None) -> str:
    """A temporary file name as atomic_save makes it: ``.<final>.<pid>-<host>.<random>.tmp``."""
    from monai_patcher.io.atomic import _host_tag

    return f".{final}.{pid}-{host or _host_tag()}.k3j_9xq2.tmp"


def set_age(path: Path, seconds: float) -> None:
    """Make ``path`` look last modified ``seconds`` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def _save_then_die_half_way(path: str) -> None:
    def half_then_die(obj, f):
        f.write(b"PK\x03\x04" + bytes(50000))
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    atomic_save({"v": torch.zeros(1000)}, path, save_func=half_then_die)


def checkpoint_then_killed_save(folder: Path) -> tuple[Path, int]:
    """``folder/ckpt.pt`` saved, then a forked process SIGKILLed half-way through overwriting it; its pid."""
    import multiprocessing

    path = folder / "ckpt.pt"
    atomic_save({"v": torch.arange(1000.0)}, path)
    child = multiprocessing.get_context("fork").Process(target=_save_then_die_half_way, args=(str(path),))
    child.start()
    child.join(600)  # generous: a shared, loaded machine
    assert child.exitcode == -signal.SIGKILL
    return path, child.pid

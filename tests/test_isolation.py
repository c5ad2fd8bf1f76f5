"""run_isolated: a result, an exception, a crash, a hang and a memory blow-up in the child, each told apart."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from monai_patcher.isolation import run_isolated

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _raise():
    raise ValueError("bad file")


def test_result_error_crash_hang_and_memory_are_told_apart():
    out = run_isolated(lambda: {"array": np.arange(5), "pid": os.getpid()}, timeout=120)
    assert out.ok and out.value["array"].tolist() == [0, 1, 2, 3, 4] and out.value["pid"] != os.getpid()
    out = run_isolated(_raise, timeout=120, describe_error=lambda e: f"described: {e}")
    assert not out.ok and (out.error, out.exception_type) == ("described: bad file", "ValueError")
    out = run_isolated(lambda: os.kill(os.getpid(), signal.SIGSEGV), timeout=120)
    assert not out.ok and out.signal == "SIGSEGV"
    start = time.monotonic()
    out = run_isolated(lambda: time.sleep(600), timeout=3)
    assert out.timed_out and not out.ok and time.monotonic() - start < 120
    out = run_isolated(lambda: bytearray(2 << 30), timeout=120, max_address_space=256 << 20)
    assert out.exception_type == "MemoryError", out

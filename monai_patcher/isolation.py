"""Run untrusted work in a forked child process: a crash, a hang or a memory blow-up there ends the child only.

C++ readers (ITK, GDCM) can crash the interpreter or hang on a file no validation foresaw. :func:`run_isolated` runs a
callable in a ``fork`` of this process (POSIX), optionally under an address-space limit, and returns its result, or
the exception message it raised, or how it died (the signal, or killed after ``timeout`` seconds).
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Isolated", "run_isolated"]


@dataclass
class Isolated:
    """The outcome of :func:`run_isolated`: exactly one of ``value`` (with ``ok``), ``error``, ``signal``, ``timed_out``.

    Attributes:
        ok: the callable returned; ``value`` is its result.
        value: the result (unpickled).
        error: the message of the exception it raised (``describe_error(exception)``).
        exception_type: that exception's type name.
        signal: the name of the signal that killed the child (``"SIGSEGV"``), if one did.
        timed_out: the child ran past ``timeout`` and was killed.
    """

    ok: bool = False
    value: Any = None
    error: str | None = None
    exception_type: str | None = None
    signal: str | None = None
    timed_out: bool = False


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_isolated(
    fn: Callable[[], Any],
    timeout: float,
    max_address_space: int | None = None,
    describe_error: Callable[[BaseException], str] = str,
) -> Isolated:
    """``fn()`` in a forked child process; its result comes back pickled through a pipe.

    The child runs one intra-op thread (OpenMP is not fork-safe across threads); it must not use CUDA. The result
    must be picklable, and is trusted (it is this program's own child).

    Args:
        fn: the work; runs in the child.
        timeout: seconds the child may take; then it is killed (``SIGKILL``) and ``timed_out`` is set.
        max_address_space: bytes the child may map beyond this process's current size (``RLIMIT_AS``); None: no
            limit. Allocation beyond it fails in the child (``MemoryError`` in Python).
        describe_error: turns an exception raised by ``fn`` into the message returned in ``error``.

    Returns:
        an :class:`Isolated`.

    Example:
        >>> run_isolated(lambda: 6 * 7, timeout=60).value  # doctest: +SKIP
        42
    """
    if not hasattr(os, "fork"):  # pragma: no cover - Windows
        raise RuntimeError("run_isolated needs os.fork (POSIX)")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(r)
            if max_address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + int(max_address_space), resource.RLIM_INFINITY))
            import torch

            torch.set_num_threads(1)
            try:
                payload = pickle.dumps(("ok", fn()), protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
                payload = pickle.dumps(("error", (describe_error(e), type(e).__name__)))
            view = memoryview(payload)
            while view:
                view = view[os.write(w, view) :]
        except BaseException:  # noqa: BLE001
            code = 70
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline, timed_out = [], time.monotonic() + timeout, False
    try:
        while True:
            ready, _, _ = select.select([r], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                timed_out = True
                break
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if timed_out:
        return Isolated(timed_out=True)
    if os.WIFSIGNALED(status):
        return Isolated(signal=signal.Signals(os.WTERMSIG(status)).name)
    if not chunks:
        return Isolated(error=f"the child process exited with status {os.WEXITSTATUS(status)} without a result",
                        exception_type="SystemExit")  # fmt: skip
    kind, value = pickle.loads(b"".join(chunks))  # our own child's output
    if kind == "error":
        return Isolated(error=value[0], exception_type=value[1])
    return Isolated(ok=True, value=value)

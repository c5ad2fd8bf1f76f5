"""Benchmarks of monai_patcher: accuracy, speed and memory measurements behind docs/results.md and
docs/architecture.md. Measures, not tests: nothing here is imported by the library.

Every script runs as a module from the repository root, e.g.::

    python -m benchmarks.kvasir --smoke
    python -m benchmarks.bench_network --presets small tiny --models unet

Every benchmark builds its networks from one registry, :mod:`benchmarks.models`. Scripts that measure in child
processes start them with :func:`module_command` and :func:`child_env`, so a child imports this checkout's
``benchmarks`` and ``monai_patcher`` whatever its working directory.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

__all__ = ["ROOT", "child_env", "module_command", "peak_rss_mib"]

#: the repository root (the folder that holds ``benchmarks/`` and ``monai_patcher/``)
ROOT = Path(__file__).resolve().parent.parent


def module_command(module: str, *args: str) -> list[str]:
    """The command line of a child process running ``python -m benchmarks.<module> *args`` (this interpreter).

    Example:
        >>> module_command("kvasir", "--smoke")[1:]
        ['-m', 'benchmarks.kvasir', '--smoke']
    """
    return [sys.executable, "-m", f"benchmarks.{module}", *args]


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment with the repository root first on ``PYTHONPATH``, plus ``overrides``."""
    env = {**os.environ, **overrides}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def peak_rss_mib() -> float:
    """Peak resident memory of this process's own address space, in MiB.

    Linux's ``VmHWM`` (``/proc/self/status``), which starts again at ``exec``. Not ``getrusage(RUSAGE_SELF).
    ru_maxrss``: Linux carries that maximum over ``fork`` and ``exec``, so a child started by a process that had
    5 GB resident reports at least 5 GB whatever it used itself. ``ru_maxrss`` is the fallback where ``/proc``
    is missing.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB

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
import sys
from pathlib import Path

__all__ = ["ROOT", "child_env", "module_command"]

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

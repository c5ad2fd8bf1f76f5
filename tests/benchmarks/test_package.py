"""benchmarks/ as a package: every script is a module with a ``main`` that does nothing on import, and child
processes started with ``module_command`` / ``child_env`` find the package from any working directory."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import benchmarks
from benchmarks import ROOT, child_env, module_command, peak_rss_mib

LIBRARY_MODULES = {"models"}  # imported by the scripts, not run


def test_every_script_is_a_module_with_a_main_and_no_import_time_work(capsys):
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__))
    assert {"kvasir", "bench_network", "bench_train_step", "flops", "kvasir_baselines", "tables"} <= set(names)
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        assert name in LIBRARY_MODULES or callable(getattr(module, "main", None)), name
    assert capsys.readouterr().out == ""  # e.g. flops.py and kvasir_baselines.py used to run on import


def test_a_child_runs_the_module_from_another_working_directory(tmp_path):
    env = child_env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    cmd = module_command("tables", "no_such_table")
    assert cmd[1:] == ["-m", "benchmarks.tables", "no_such_table"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 1 and "KeyError: 'no_such_table'" in res.stderr  # the module ran and parsed its argument
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(cmd, cwd=tmp_path, env=bare, capture_output=True, text=True)
    assert res.returncode != 0 and "No module named 'benchmarks'" in res.stderr  # what child_env is for


def test_peak_rss_of_a_child_is_its_own_not_its_parents():
    """A child started by a process with a large resident set reports its own peak (ru_maxrss would carry the
    parent's over fork and exec)."""
    ballast = bytearray(400 * 2**20)
    for i in range(0, len(ballast), 4096):  # touch every page: resident
        ballast[i] = 1
    assert peak_rss_mib() >= 400
    code = (
        "import resource; from benchmarks import peak_rss_mib; "
        "print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True)
    own, inherited = map(float, out.stdout.split())
    assert own < 200, out.stdout  # an interpreter that imported the benchmarks package: tens of MiB
    if sys.platform.startswith("linux"):
        assert inherited >= 400  # the reason for the helper: Linux's ru_maxrss is the parent's here
    del ballast

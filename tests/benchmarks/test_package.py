"""benchmarks/ as a package: every script is a module with a ``main`` that does nothing on import, and child
processes started with ``module_command`` / ``child_env`` find the package from any working directory."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess

import benchmarks
from benchmarks import ROOT, child_env, module_command

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

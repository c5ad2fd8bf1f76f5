"""README.md states the two commands; .ci/run must run the test command exactly as written there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return [m.strip() for m in re.findall(r"^    (pip install .+)$", (ROOT / "README.md").read_text(), re.M)]


def test_readme_states_install_plus_main_job_and_install_plus_tests():
    cmds = _readme_commands()
    assert any("monai.bundle run training" in c for c in cmds), cmds
    assert any("pytest" in c for c in cmds), cmds
    assert all(c.startswith("pip install torch==2.13.0 && ") for c in cmds), cmds


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = next(c for c in _readme_commands() if "pytest" in c)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines

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


def _bundle_run_commands(path: Path) -> list[str]:
    """The ``monai.bundle run`` commands of a markdown file (backslash-continued lines joined)."""
    text = (ROOT / path).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if "monai.bundle run" in line and "--config_file" in line]


def test_bundle_commands_from_the_repository_root_name_the_bundle_root():
    """MONAI resolves ``bundle_root`` ('.') against the current directory, not the config file: every command run
    from the repository root (config files under bundles/<name>/) must pass ``--bundle_root bundles/<name>``."""
    checked = 0
    for doc in ("README.md", "docs/bundles.md"):
        for cmd in _bundle_run_commands(Path(doc)):
            names = set(re.findall(r"bundles/(patcher_\w+)/configs/", cmd))
            if names:
                checked += 1
                assert len(names) == 1 and f"--bundle_root bundles/{names.pop()}" in cmd, f"{doc}: {cmd}"
    assert checked >= 5, checked

"""The sdist and the wheel: built from a copy of the source tree, installed in a fresh venv, imported from there.

The venv sees the system site-packages (torch, MONAI, ... are not downloaded again) and the wheel is installed with
``--no-deps``, so this checks what the wheel itself carries: every module, the version, the bundles' names for its
classes, and a bundle from the sdist run against the installed package (not this checkout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("patcher_stroke", "patcher_polyp")

# run inside the venv: everything must come from the installed wheel
IMPORT_CHECK = r"""
import importlib, importlib.metadata, json, pkgutil, sys
from pathlib import Path
import monai_patcher
venv = Path(sys.prefix).resolve()
where = Path(monai_patcher.__file__).resolve()
assert venv in where.parents, f"monai_patcher imported from {where}, not from the venv {venv}"
modules = sorted(m.name for m in pkgutil.walk_packages(monai_patcher.__path__, "monai_patcher."))
for name in modules:
    importlib.import_module(name)
from monai.bundle import ConfigParser
parser = ConfigParser({"imports": ["$import monai_patcher"], "short": {"_target_": "patcher_preset", "name": "tiny"},
                       "reader": {"_target_": "SimpleITKReader"}})
net, reader = parser.get_parsed_content("short"), parser.get_parsed_content("reader")
from monai.bundle import verify_net_in_out
verified = []
for configs in sys.argv[1:]:  # bundles unpacked from the sdist, run with this venv's package
    verify_net_in_out("network_def", config_file=f"{configs}/inference.json", meta_file=f"{configs}/metadata.json",
                      **{"network_def#name": "tiny"})
    verified.append(Path(configs).parent.name)
print(json.dumps({"version": monai_patcher.__version__, "dist_version": importlib.metadata.version("monai_patcher"),
                  "modules": modules, "net": type(net).__module__, "reader": type(reader).__module__,
                  "verified": verified}))
"""


# run outputs and figures of licensed data that a working tree may hold: MANIFEST.in must keep them out of the sdist
LOCAL_ONLY = ("bundles/patcher_polyp/models/model.pt", "bundles/patcher_stroke/models/demo/checkpoint_epoch=1.pt",
              "bundles/patcher_stroke/eval/metrics.csv", "bundles/patcher_stroke/demo_data/case000/dwi.nii.gz",
              "docs/figures/kvasir_overlays.png", "benchmarks/results/kvasir/cache/val.npz")


def _copy_source(dst: Path) -> None:
    """The source tree without VCS data and caches (copying this checkout's own run outputs would be slow), plus
    one planted file of each kind that must not ship (``LOCAL_ONLY``)."""
    skip = {".git", "build", "dist", "eval", "demo_data", "cache", "__pycache__", ".pytest_cache", ".hypothesis"}
    shutil.copytree(REPO_ROOT, dst, ignore=lambda d, names: [
        n for n in names if n in skip or n.endswith((".egg-info", ".pt", ".ts", ".pyc", ".nii.gz"))])
    for name in LOCAL_ONLY:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        (dst / name).write_bytes(b"local only")


def _run(cmd: list, cwd: Path, timeout: int = 300, env: dict | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=env, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``python -m build`` (sdist, then the wheel from the sdist) of a copy of the tree; a venv with the wheel."""
    pytest.importorskip("build", reason="the `build` package is needed to build the sdist and wheel")
    root = tmp_path_factory.mktemp("packaging")
    src, dist = root / "src", root / "dist"
    _copy_source(src)
    # --no-isolation: build with the setuptools installed here (no download); the sdist is built first and the
    # wheel from the unpacked sdist, so a file missing from the sdist breaks the wheel build
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src], cwd=root)
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    # the system's pip is visible in the venv (system site-packages) and installs into the venv's prefix;
    # --ignore-installed: the editable install of the system site-packages has the same version and must not count
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel], cwd=root)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from this checkout
    return {"root": root, "dist": dist, "wheel": wheel, "python": python, "env": env}


def test_sdist_and_wheel_contents(built):
    import tarfile

    from monai_patcher import __version__

    (sdist,) = built["dist"].glob("*.tar.gz")
    assert built["wheel"].name == f"monai_patcher-{__version__}-py3-none-any.whl"
    assert sdist.name == f"monai_patcher-{__version__}.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for bundle in BUNDLES:  # the bundles, their licences and model cards travel with the source
        for f in ("LICENSE", "configs/metadata.json", "configs/inference.json", "docs/README.md"):
            assert f"bundles/{bundle}/{f}" in names, f
    assert {"LICENSE", "CHANGELOG.md", "README.md", "tests/conftest.py", "docs/bundles.md"} <= names
    # figures of licensed data and run outputs never ship, even when they exist locally
    assert not set(LOCAL_ONLY) & names, set(LOCAL_ONLY) & names
    assert not [n for n in names if n.startswith("docs/figures/") and n != "docs/figures/kvasir_dice_vs_time.png"]
    assert not [n for n in names if n.endswith((".pt", ".ts", ".nii.gz", ".jpg", ".npz")) or "/eval/" in n]
    with zipfile.ZipFile(built["wheel"]) as whl:
        top = {n.split("/")[0] for n in whl.namelist()}
        metadata = whl.read(f"monai_patcher-{__version__}.dist-info/METADATA").decode()
    assert top == {"monai_patcher", f"monai_patcher-{__version__}.dist-info"}  # no tests/, bundles/ in the wheel
    assert "Requires-Dist: monai" in metadata and "License-File: LICENSE" in metadata


def test_wheel_imports_in_a_fresh_venv(built, tmp_path):
    """Every module imports from the venv; the bundles' short names resolve to the wheel's classes; both bundles,
    unpacked from the sdist, pass MONAI's ``verify_net_in_out`` with the installed package (cwd holds no
    ``monai_patcher`` and PYTHONPATH is unset)."""
    import tarfile

    from monai_patcher import __version__

    with tarfile.open(next(built["dist"].glob("*.tar.gz"))) as tar:
        tar.extractall(tmp_path, filter="data")
    configs = [next(tmp_path.glob(f"monai_patcher-*/bundles/{b}/configs")) for b in BUNDLES]
    out = _run([built["python"], "-c", IMPORT_CHECK, *configs], cwd=tmp_path, env=built["env"])
    out = json.loads(out.splitlines()[-1])
    assert out["version"] == out["dist_version"] == __version__
    assert "monai_patcher.networks.patcher" in out["modules"] and len(out["modules"]) >= 10, out["modules"]
    assert out["net"].startswith("monai_patcher.networks") and out["reader"].startswith("monai_patcher.data")
    assert out["verified"] == list(BUNDLES)


def test_bundles_ask_for_the_wheel_version(built):
    """``required_packages_version`` names the distribution the wheel installs, at the wheel's version."""
    from importlib.metadata import PackageNotFoundError, version

    from monai_patcher import __version__

    for bundle in BUNDLES:
        meta = json.loads((REPO_ROOT / "bundles" / bundle / "configs" / "metadata.json").read_text())
        required = meta["required_packages_version"]
        assert required["monai_patcher"] == __version__, (bundle, required)
        for name in required:  # every name is a distribution pip can resolve here (not an import name)
            try:
                version(name)
            except PackageNotFoundError:
                pytest.fail(f"{bundle}: required package {name!r} is not an installed distribution name")


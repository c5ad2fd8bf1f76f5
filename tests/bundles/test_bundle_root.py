"""``bundle_root`` the MONAI way: a bundle unzipped anywhere reads and writes inside its own folder.

Each bundle is zipped and unpacked with ``monai.bundle.download`` (how a model-zoo bundle reaches a user) into a
temporary folder. With MONAI's ``--bundle_root`` override, or run from inside the folder (the ``"."`` default),
every path of every config lands in that folder; only the data paths point at the data. Checked with a plain
``ConfigParser`` (what MONAI Label, MONAI Deploy and model-zoo's CI use) and with ``python -m monai.bundle run``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bundle_cli import REPO_ROOT, run_bundle  # noqa: E402

BUNDLES = REPO_ROOT / "bundles"
# config layers a user runs; train.json and inference.json carry bundle_root, the others are layered over them
LAYERS = {
    "patcher_stroke": [["train.json"], ["train.json", "evaluate.json"], ["train.json", "demo.json"],
                       ["train.json", "demo.json", "evaluate.json"], ["inference.json"],
                       ["inference.json", "demo.json"], ["train.json", "multi_gpu_train.json"],
                       ["train.json", "evaluate.json", "multi_gpu_evaluate.json"]],
    "patcher_polyp": [["train.json"], ["train.json", "evaluate.json"], ["inference.json"],
                      ["train.json", "multi_gpu_train.json"], ["train.json", "evaluate.json", "multi_gpu_evaluate.json"]],
}
# entries that locate the user's data (overridden to point at DATA unless the config builds them from bundle_root)
DATA_KEYS = ("dataset_dir", "datalist", "train_dir", "val_dir", "eval_dir", "input")
PATH_NAMES = ("bundle_root", "load_path", "save_dir", "log_dir", "filepath")


def unzip_bundle(name: str, dst: Path) -> Path:
    """The bundle's tracked layout zipped, then unpacked by ``monai.bundle.download`` into ``dst``."""
    from monai.bundle import download

    staging = dst / "staging" / name
    shutil.copytree(BUNDLES / name, staging, ignore=shutil.ignore_patterns("eval", "demo_data", "*.pt", "*.ts"))
    archive = shutil.make_archive(str(dst / name), "zip", root_dir=staging.parent, base_dir=name)
    download(name=name, bundle_dir=str(dst / "bundles"), url=Path(archive).as_uri(), progress=False)
    return dst / "bundles" / name


@pytest.fixture(scope="module")
def unzipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("unzipped")
    return {name: unzip_bundle(name, root) for name in LAYERS}


def _path_ids(config, prefix=""):
    """Ids of the config leaves that hold a path: ``*_dir``, ``*_path`` and the MONAI handlers' path arguments."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        id_ = f"{prefix}#{key}" if prefix else str(key)
        if isinstance(value, (dict, list)):
            yield from _path_ids(value, id_)
        elif isinstance(value, str) and isinstance(key, str) and (key.endswith(("_dir", "_path")) or key in PATH_NAMES):
            yield id_


def resolved_paths(files: list[Path], overrides: dict) -> dict[str, Path]:
    """Every path entry of ``files`` parsed by a plain ``ConfigParser`` with ``overrides``, made absolute against
    the current directory (relative paths are relative to it when the bundle runs)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update(overrides)
    out = {}
    for id_ in _path_ids(parser.get()):
        value = parser.get_parsed_content(id_)
        if value not in ("", None):
            out[id_] = Path(value).absolute()
    return out


def _check_inside(paths: dict[str, Path], bundle: Path, data: Path, files: list[Path]) -> None:
    outside = {k: v for k, v in paths.items()
               if bundle.resolve() not in [*v.resolve().parents, v.resolve()] and data not in [*v.parents, v]}
    assert not outside, f"{[f.name for f in files]}: paths outside the bundle {bundle} and the data: {outside}"
    inside = {k for k, v in paths.items() if bundle.resolve() in [*v.resolve().parents, v.resolve()]}
    expected = {"ckpt_dir", "output_dir"} | ({"ckpt_path"} if files[0].name == "inference.json" else set())
    assert expected <= inside, (expected - inside, [f.name for f in files])


def _data_overrides(files: list[Path], data: Path) -> dict:
    """Point the data entries at ``data`` (as a user's ``--dataset_dir`` would), except those a layer builds from
    ``bundle_root`` (the demo's own data folder)."""
    from monai.bundle import ConfigParser

    merged = ConfigParser.load_config_files([str(f) for f in files])
    return {k: str(data) for k in DATA_KEYS if k in merged and "bundle_root" not in str(merged[k])}


@pytest.mark.parametrize("bundle", sorted(LAYERS))
def test_default_bundle_root_is_the_model_zoo_dot(bundle):
    for name in ("train.json", "inference.json"):
        assert json.loads((BUNDLES / bundle / "configs" / name).read_text())["bundle_root"] == "."


@pytest.mark.parametrize("bundle", sorted(LAYERS))
def test_plain_config_parser_with_bundle_root_override(unzipped, bundle, tmp_path, monkeypatch):
    """``parser["bundle_root"] = <folder>`` (what ``--bundle_root`` and MONAI's tools do), from a foreign directory."""
    folder, data = unzipped[bundle], tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    for layer in LAYERS[bundle]:
        files = [folder / "configs" / f for f in layer]
        paths = resolved_paths(files, {"bundle_root": str(folder), **_data_overrides(files, data)})
        assert paths["bundle_root"] == folder
        _check_inside(paths, folder, data, files)
        assert not [v for v in paths.values() if REPO_ROOT in v.parents], paths  # not this checkout's copy


@pytest.mark.parametrize("bundle", sorted(LAYERS))
def test_plain_config_parser_run_from_inside_the_bundle(unzipped, bundle, tmp_path, monkeypatch):
    """The model-zoo way: ``"bundle_root": "."`` from inside the bundle folder, nothing overridden but the data."""
    folder, data = unzipped[bundle], tmp_path / "data"
    monkeypatch.chdir(folder)
    for layer in LAYERS[bundle]:
        files = [Path("configs") / f for f in layer]
        paths = resolved_paths(files, _data_overrides(files, data))
        _check_inside(paths, folder, data, files)


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_monai_bundle_run_writes_only_inside_the_unzipped_bundle(unzipped, tmp_path):
    """``python -m monai.bundle run`` of the stroke demo (its data, checkpoints and logs are all bundle paths):
    trained from a foreign directory with ``--bundle_root``, then inference from inside the folder with the
    ``"."`` default, which loads the model trained by the first run. Nothing is written anywhere else."""
    folder = unzipped["patcher_stroke"]
    foreign = tmp_path / "elsewhere"
    foreign.mkdir()
    before = _files_under(folder)
    # the unzipped bundles' root (the other bundle, the zips) and this checkout's copy of the bundle stay as they are
    around = {p: _files_under(p) for p in (folder.parent.parent, BUNDLES / "patcher_stroke")}
    configs = folder / "configs"
    tiny = ["--network_def#name", "tiny", "--spatial_size", "64", "--num_workers", "0"]
    run_bundle("run", "training", "--config_file", f"['{configs / 'train.json'}','{configs / 'demo.json'}']",
               "--bundle_root", str(folder), "--demo_num_cases", "3", "--max_epochs", "1", "--val_interval", "1",
               *tiny, cwd=foreign)
    assert not any(foreign.iterdir()), list(foreign.rglob("*"))
    written = _files_under(folder) - before
    assert {"models/demo/model.pt", "models/demo/checkpoint_epoch=1.pt", "demo_data/datalist.json"} <= written, written
    assert any(p.startswith("eval/demo/events.out.tfevents") for p in written), written

    proc = run_bundle("run", "--config_file", "['configs/inference.json','configs/demo.json']",
                      "--input", "demo_data/case000", *tiny, cwd=folder)
    assert "Restored all variables from ./models/demo/model.pt" in proc.stdout + proc.stderr  # in initialize
    assert "eval/demo/case000_seg.nii.gz" in _files_under(folder) - before - written
    assert not any(foreign.iterdir())
    for p, files in around.items():
        new = {f for f in _files_under(p) - files if not (p / f).resolve().is_relative_to(folder.resolve())}
        assert not new, f"written outside the bundle, in {p}: {sorted(new)}"

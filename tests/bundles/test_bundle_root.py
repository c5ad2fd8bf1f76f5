"""``bundle_root`` the MONAI way: a bundle unzipped anywhere reads and writes inside its own folder.

Each bundle is zipped and unpacked with ``monai.bundle.download`` (how a model-zoo bundle reaches a user) into a
temporary folder laid out like this repository (``<root>/bundles/<name>``). With MONAI's ``--bundle_root`` override,
or run from inside the folder (the ``"."`` default), every path of every config lands in that folder; only the data
paths point at the data. MONAI cannot make ``bundle_root`` follow the config file, so anything else (the ``"."``
default from another directory, another bundle's folder) must fail with a clear error before a file is written.
Checked with a plain ``ConfigParser`` (what MONAI Label, MONAI Deploy and model-zoo's CI use) and with
``python -m monai.bundle run`` in the forms of README.md and docs/bundles.md, and without ``--bundle_root``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

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
PATH_NAMES = ("bundle_root", "checked_bundle_root", "load_path", "save_dir", "log_dir", "filepath")


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


def name_of(folder: Path) -> str:
    return json.loads((folder / "configs" / "metadata.json").read_text())["name"]


def _bundle_root_error(files: list[Path], overrides: dict, id_: str) -> str:
    """The message of the error a plain ``ConfigParser`` raises when ``id_`` is resolved."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update(overrides)
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content(id_)
    cause = err.value.__cause__
    assert isinstance(cause, ValueError), err.value
    return str(cause)


@pytest.mark.parametrize("bundle", sorted(LAYERS))
def test_plain_config_parser_refuses_a_wrong_bundle_root(unzipped, bundle, tmp_path, monkeypatch):
    """The ``"."`` default from a directory that is not the bundle (a repository or model-zoo root), and
    ``--bundle_root`` naming the other bundle: every path built on ``bundle_root`` raises instead of pointing
    there, and the message names the folder and the fix."""
    folder, data = unzipped[bundle], tmp_path / "data"
    other = unzipped[next(b for b in LAYERS if b != bundle)]
    name = name_of(folder)
    monkeypatch.chdir(folder.parent.parent)  # holds bundles/<name>, like this repository's root
    for layer in LAYERS[bundle]:
        files = [folder / "configs" / f for f in layer]
        for id_ in ("output_dir",) if layer == ["inference.json"] else ("ckpt_dir", "output_dir"):
            msg = _bundle_root_error(files, _data_overrides(files, data), id_)
            assert f"bundle_root '.' ({folder.parent.parent}) is not a bundle folder" in msg, msg
            assert f"folder of the bundle {name!r}" in msg and "--bundle_root" in msg, msg
            msg = _bundle_root_error(files, {"bundle_root": str(other), **_data_overrides(files, data)}, id_)
            assert f"is the folder of the bundle '{name_of(other)}', not of {name!r}" in msg, msg
    assert not list(folder.parent.parent.glob("models")) and not list(folder.parent.parent.glob("eval"))


@pytest.mark.parametrize("bundle", sorted(LAYERS))
def test_inference_network_def_parses_from_any_folder(unzipped, bundle, tmp_path, monkeypatch):
    """``inference.json`` reads ``<ckpt_dir>/model.pt`` (its model record builds the network) and writes nothing
    there, so that path is not checked: tools that only parse ``network_def`` (``verify_net_in_out``,
    ``ckpt_export``) work from any folder without ``--bundle_root``. With no checkpoint there the network is the
    default one; with ``--bundle_root`` the checkpoint is the bundle's own; the run's outputs stay refused."""
    from monai.bundle import ConfigParser

    folder = unzipped[bundle]
    monkeypatch.chdir(tmp_path)
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    assert parser.get_parsed_content("ckpt_path") == "./models/model.pt"
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module) and sum(p.numel() for p in net.parameters()) > 0
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content("output_dir")
    assert "is not a bundle folder" in str(err.value.__cause__)
    parser["bundle_root"] = str(folder)
    assert Path(parser.get_parsed_content("ckpt_path")) == folder / "models" / "model.pt"


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("bundle", sorted(LAYERS))
def test_explicit_paths_need_no_bundle_root(unzipped, bundle, tmp_path, monkeypatch):
    """Runs that name every path they use (``--ckpt_dir``/``--ckpt_path`` and ``--output_dir``, as the tests and
    benchmarks/kvasir_bundle_eval.py do) from any directory: nothing is built on ``bundle_root``, nothing is refused."""
    from monai.bundle import ConfigWorkflow

    configs = unzipped[bundle] / "configs"
    monkeypatch.chdir(tmp_path)
    out = {"output_dir": str(tmp_path / "eval"), "dataset_dir": str(tmp_path / "data")}
    for layers, paths in ((["train.json"], {"ckpt_dir": str(tmp_path / "models")}),
                          (["train.json", "evaluate.json"], {"ckpt_path": str(tmp_path / "model.pt")})):
        workflow = ConfigWorkflow(config_file=[str(configs / f) for f in layers], meta_file=str(configs / "metadata.json"),
                                  logging_file=False, workflow_type="train", **out, **paths)
        workflow.initialize()
        assert (tmp_path / "eval").is_dir()  # made by initialize, where --output_dir says


def test_monai_bundle_run_without_bundle_root_from_outside_fails_before_writing(unzipped):
    """The commands of README.md without ``--bundle_root``, from the folder that holds ``bundles/`` (as a user in
    this repository's root would): bundle_root is then that folder, not the bundle's; the run must stop with the
    error (in ``initialize``, before the demo data, checkpoints or logs are written) and write nothing anywhere."""
    root = unzipped["patcher_stroke"].parent.parent
    before = set(root.rglob("*"))  # folders too: not even an empty output folder may appear
    configs = "bundles/patcher_stroke/configs"
    for config_file in (f"{configs}/train.json", f"['{configs}/train.json','{configs}/demo.json']"):
        proc = run_bundle("run", "training", "--config_file", config_file, "--dataset_dir", str(root / "no_data"),
                          cwd=root, check=False)
        log = proc.stdout + proc.stderr
        assert proc.returncode != 0, log[-3000:]
        assert f"bundle_root '.' ({root}) is not a bundle folder" in log and "--bundle_root" in log, log[-3000:]
        assert set(root.rglob("*")) == before, sorted(set(root.rglob("*")) - before)


def test_monai_bundle_run_writes_only_inside_the_unzipped_bundle(unzipped):
    """``python -m monai.bundle run`` of the stroke demo (its data, checkpoints and logs are all bundle paths):
    trained with README.md's command (from the folder that holds ``bundles/``, ``--bundle_root
    bundles/patcher_stroke``), then inference from inside the folder with the ``"."`` default, which loads the
    model trained by the first run. Nothing is written anywhere else."""
    folder = unzipped["patcher_stroke"]
    root = folder.parent.parent
    before = _files_under(folder)
    # the unzipped bundles' root (the other bundle, the zips) and this checkout's copy of the bundle stay as they are
    around = {p: _files_under(p) for p in (root, BUNDLES / "patcher_stroke")}
    configs = "bundles/patcher_stroke/configs"
    tiny = ["--network_def#name", "tiny", "--spatial_size", "64", "--num_workers", "0"]
    run_bundle("run", "training", "--config_file", f"['{configs}/train.json','{configs}/demo.json']",
               "--bundle_root", "bundles/patcher_stroke", "--demo_num_cases", "3", "--max_epochs", "1",
               "--val_interval", "1", *tiny, cwd=root)
    written = _files_under(folder) - before
    assert {"models/demo/model.pt", "models/demo/checkpoint_epoch=1.pt", "demo_data/datalist.json"} <= written, written
    assert any(p.startswith("eval/demo/events.out.tfevents") for p in written), written

    proc = run_bundle("run", "--config_file", "['configs/inference.json','configs/demo.json']",
                      "--input", "demo_data/case000", *tiny, cwd=folder)
    assert "Restored all variables from ./models/demo/model.pt" in proc.stdout + proc.stderr  # in initialize
    assert "eval/demo/case000_seg.nii.gz" in _files_under(folder) - before - written
    for p, files in around.items():
        new = {f for f in _files_under(p) - files if not (p / f).resolve().is_relative_to(folder.resolve())}
        assert not new, f"written outside the bundle, in {p}: {sorted(new)}"

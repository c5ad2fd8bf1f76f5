"""Both bundles through the checks MONAI model-zoo's ``ci/unit_tests`` apply to a bundle (same method, our code).

On random data written by the test: ``ConfigWorkflow`` for training (one epoch), training then evaluation
(``evaluate.json`` over ``train.json``, checked as a training workflow as model-zoo does) and inference, each
initialised, checked with MONAI's ``check_properties`` (``TrainProperties`` / ``InferProperties`` + ``MetaProperties``),
run and finalised; and ``torchrun`` with 2 CPU processes (gloo) for ``multi_gpu_train.json`` and
``multi_gpu_evaluate.json``, whose exported configs are property-checked first. Tiny preset, 64 x 64 inputs.
``bundle_root`` (MONAI's override) is a temporary copy of the bundle's configs, so nothing is written into the
repository.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_cli import REPO_ROOT, bundle_copy  # noqa: E402

BUNDLES = ("patcher_polyp", "patcher_stroke")
TINY = {"network_def#name": "tiny", "spatial_size": 64, "num_workers": 0, "batch_size": 2}
TRAIN_ONE_EPOCH = {"max_epochs": 1, "val_interval": 1}


def configs(bundle: str) -> Path:
    return REPO_ROOT / "bundles" / bundle / "configs"


def write_polyp_data(root: Path, seed: int = 0) -> Path:
    """Random RGB JPEG images with random-disc masks in the Kvasir layout: 4 train, 2 val pairs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", 4), ("val", 2)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = 48 + 8 * i, 64
            yy, xx = np.mgrid[:h, :w]
            disc = (yy - rng.integers(12, h - 12)) ** 2 + (xx - rng.integers(12, w - 12)) ** 2 < 10**2
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / "images" / f"{i}.jpg")
            Image.fromarray((disc * 255).astype(np.uint8)).save(root / split / "masks" / f"{i}.jpg")
    return root


def write_stroke_data(root: Path, seed: int = 0) -> Path:
    """Random DWI / ADC NIfTI volumes (32 x 32 x 6) with a random-box lesion, and a decathlon datalist:
    2 training, 1 validation, 2 test cases."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(5):
        lesion = np.zeros((32, 32, 6), np.float32)
        x, y = rng.integers(4, 20, 2)
        lesion[x : x + 8, y : y + 8, 2:5] = 1
        dwi = rng.uniform(0.5, 1.0, lesion.shape) + lesion
        adc = rng.uniform(0.6, 1.2, lesion.shape) * (1 - 0.5 * lesion)  # 1e-3 mm^2/s, like a real ADC map
        case = {}
        for key, arr in (("dwi", dwi), ("adc", adc), ("label", lesion)):
            path = root / f"case{i}" / f"{key}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr.astype(np.float32), np.diag([1.5, 1.5, 4.0, 1.0])), str(path))
            case[key] = str(path.relative_to(root))
        cases.append(case)
    (root / "datalist.json").write_text(json.dumps({"training": cases[:2], "validation": cases[2:3], "test": cases[3:]}))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("random_data")
    return {"patcher_polyp": write_polyp_data(root / "polyp"), "patcher_stroke": write_stroke_data(root / "stroke")}


def check_workflow(workflow) -> None:
    """model-zoo's order: initialize, check_properties (no missing or wrongly wired property), run, finalize."""
    workflow.initialize()
    missing = workflow.check_properties()
    assert missing == [], f"check_properties: {missing}"
    workflow.run()
    workflow.finalize()


def workflow(bundle: str, workflow_type: str, layers: list[str], **override):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(
        workflow_type=workflow_type, config_file=[str(configs(bundle) / f) for f in layers],
        meta_file=str(configs(bundle) / "metadata.json"), logging_file=False, **{**TINY, **override},
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_then_evaluate_config(bundle, data, tmp_path):
    common = {"bundle_root": str(bundle_copy(bundle, tmp_path)), "dataset_dir": str(data[bundle])}
    trainer = workflow(bundle, "train", ["train.json"], **common, **TRAIN_ONE_EPOCH)
    check_workflow(trainer)
    assert trainer.max_epochs == 1 and trainer.trainer.state.epoch == 1  # properties read from the workflow
    assert {p.name for p in (tmp_path / "models").iterdir()} == {"model.pt", "checkpoint_epoch=1.pt"}

    validator = workflow(bundle, "train", ["train.json", "evaluate.json"], **common)  # evaluate.json extends train
    check_workflow(validator)
    metrics = dict(line.split(",") for line in (tmp_path / "eval" / "metrics.csv").read_text().split())
    assert {"val_mean_dice", "val_mean_iou"} <= set(metrics)
    assert all(0.0 <= float(v) <= 1.0 for v in metrics.values())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_infer_config(bundle, data, tmp_path):
    """``InferProperties`` (``dataset_dir`` included) and the checkpoint loaded in ``initialize``: the network holds
    the weights of ``models/model.pt`` (written here from random weights) before ``run``."""
    source = data[bundle] / ("val" if bundle == "patcher_polyp" else "")
    bundle_copy(bundle, tmp_path)
    reference = workflow(bundle, "infer", ["inference.json"], bundle_root=str(tmp_path), dataset_dir=str(source),
                         load_pretrain=False)
    reference.initialize()
    net = reference.network_def
    (tmp_path / "models").mkdir()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)  # not the initialisation a fresh network_def gets: the load is visible
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    inferrer = workflow(bundle, "infer", ["inference.json"], bundle_root=str(tmp_path), dataset_dir=str(source))
    inferrer.initialize()
    for name, value in inferrer.parser.get_parsed_content("network").state_dict().items():
        torch.testing.assert_close(value, net.state_dict()[name], msg=name)
    assert inferrer.check_properties() == []
    inferrer.run()
    inferrer.finalize()
    written = sorted(p.name for p in (tmp_path / "eval" / "inference").glob("*_*.*"))
    if bundle == "patcher_polyp":
        assert written == ["0_mask.png", "1_mask.png"]
    else:
        assert written == [f"case{i}_seg.nii.gz" for i in range(5)]  # --dataset_dir: every case of the folder

    no_weights = bundle_copy(bundle, tmp_path / "no_weights")
    skip = workflow(bundle, "infer", ["inference.json"], bundle_root=str(no_weights),
                    dataset_dir=str(source), load_pretrain=False)
    skip.initialize()  # no models/model.pt there: load_pretrain false does not look for it
    assert skip.check_properties() == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_and_check(bundle: str, layers: list[str], override: dict, out: Path, monkeypatch) -> Path:
    """model-zoo's ``export_config_and_run_mgpu_cmd`` first half: the layers merged with the overrides into one
    config file, initialised (here as a 1-process gloo group) and property-checked as a training workflow."""
    import ignite.distributed as idist
    from monai.bundle import ConfigParser, ConfigWorkflow

    parser = ConfigParser()
    parser.read_config([str(configs(bundle) / f) for f in layers])
    parser.update(override)
    ConfigParser.export_config_file(parser.config, str(out), indent=4)
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    scratch = out.parent / f"{out.stem}_check"  # the check's TensorBoard files must not count as the run's
    engine = ConfigWorkflow(workflow_type="train", config_file=str(out), meta_file=str(configs(bundle) / "metadata.json"),
                            logging_file=False, output_dir=str(scratch), ckpt_dir=str(scratch))
    engine.initialize()
    try:
        assert engine.check_properties() == []
    finally:
        engine.finalize()  # destroys the process group
        idist.sync()  # and ignite, which cached it, goes back to its serial (no process group) model
    return out


def torchrun(config: Path, bundle: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", str(config), "--meta_file", str(configs(bundle) / "metadata.json"),
           "--logging_file", str(configs(bundle) / "logging.conf")]
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("bundle", BUNDLES)
def test_torchrun_two_cpu_processes_train_then_evaluate(bundle, data, tmp_path, monkeypatch):
    """``multi_gpu_train.json`` then ``multi_gpu_evaluate.json``: DistributedDataParallel + DistributedSampler on 2 CPU
    processes (gloo); the checkpoint holds the unwrapped network; only rank 0 logs; every evaluation item is scored
    once (no padding duplicates when there are at least as many items as processes)."""
    common = {**TINY, "bundle_root": str(bundle_copy(bundle, tmp_path)), "dataset_dir": str(data[bundle])}
    train = export_and_check(bundle, ["train.json", "multi_gpu_train.json"], {**common, **TRAIN_ONE_EPOCH},
                             tmp_path / "train_override.json", monkeypatch)
    torchrun(train, bundle, tmp_path)
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state), "the DDP wrapper leaked into the checkpoint"
    assert (tmp_path / "models" / "checkpoint_epoch=1.pt").is_file()
    # only rank 0 logs: all TensorBoard event files (events.out.tfevents.<time>.<host>.<pid>.<n>) from one process
    events = sorted(p.name for p in (tmp_path / "eval").glob("events.out.tfevents.*"))
    assert events and len({name.split(".")[-2] for name in events}) == 1, events

    evaluate = export_and_check(bundle, ["train.json", "evaluate.json", "multi_gpu_evaluate.json"], common,
                                tmp_path / "evaluate_override.json", monkeypatch)
    log = torchrun(evaluate, bundle, tmp_path)
    assert "Restored all variables from" in log
    rows = (tmp_path / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()[1:]
    names = [r.split(",")[0] for r in rows]
    assert len(names) == 2 and len(set(names)) == 2, rows  # 2 val images / 2 test cases, each scored once
    # the same checkpoint scored by one process: the same per-item scores and means (gathered over the processes)
    single = tmp_path / "single"
    check_workflow(workflow(bundle, "train", ["train.json", "evaluate.json"], **common, output_dir=str(single)))
    for name in ("metrics.csv", "val_mean_dice_raw.csv"):
        multi = sorted((tmp_path / "eval" / name).read_text().splitlines())
        one = sorted((single / name).read_text().splitlines())
        assert [r.split(",")[0] for r in multi] == [r.split(",")[0] for r in one], (multi, one)
        np.testing.assert_allclose([[float(v) for v in r.split(",")[1:]] for r in multi if "filename" not in r],
                                   [[float(v) for v in r.split(",")[1:]] for r in one if "filename" not in r],
                                   atol=1e-5, err_msg=name)

"""Exact resume after ``kill -9`` (EpochSeedHandler, monai_patcher/handlers/epoch_seed_handler.py, with the checkpoint
handlers and RNGState).

The resume tests run a small MONAI ``SupervisedTrainer`` (tiny Patcher, 32 x 32 synthetic 2-channel slices,
random crop/flip/noise transforms, shuffling, dropout and drop-path: every source of randomness a real run
has) in subprocesses, SIGKILL one of them mid-epoch, resume it and compare with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from checkpoint_helpers import ENV
from monai_patcher.handlers import EpochSeedHandler, SafeCheckpointLoader, SafeCheckpointSaver
from monai_patcher.io import safe_load_checkpoint
from monai_patcher.seeding import RNGState


def _train_main(ckpt_dir, log_path, max_epochs=3, kill_at=-1, resume=False, workers=0, n_saved=1) -> None:
    """3 epochs x 4 iterations of a tiny Patcher with SafeCheckpointSaver/Loader, EpochSeedHandler and RNGState.

    Logs ``[epoch, iteration, loss]`` per iteration to ``log_path``; SIGKILLs its own process at iteration
    ``kill_at``; saves the final weights as ``final_weights.pt``. Run in a fresh interpreter by the kill test.
    """
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedTrainer
    from monai.handlers import LrScheduleHandler
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandSpatialCropd

    from monai_patcher.io import latest_checkpoint
    from monai_patcher.networks import patcher_preset

    max_epochs, kill_at, workers = int(max_epochs), int(kill_at), int(workers)
    resume = str(resume) in ("1", "True", "true")
    g = torch.Generator().manual_seed(1)
    data = []
    for _ in range(8):
        image = torch.randn(2, 40, 40, generator=g)
        data.append({"image": image, "label": (image[:1] > 0.5).float()})
    keys = ["image", "label"]
    transform = Compose([
        RandSpatialCropd(keys, roi_size=(32, 32), random_size=False),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandGaussianNoised("image", prob=0.5, std=0.1),
    ])
    loader = DataLoader(Dataset(data, transform), batch_size=2, shuffle=True, num_workers=workers)
    torch.manual_seed(123)  # same initial weights in every run; resumed runs load them anyway
    net = patcher_preset("tiny", in_channels=2, out_channels=1, drop_path_rate=0.2, dropout_rate=0.2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=loader, network=net, optimizer=opt,
        loss_function=torch.nn.BCEWithLogitsLoss(),
        train_handlers=[EpochSeedHandler(seed=0), LrScheduleHandler(sched, epoch_level=False, print_lr=False)],
    )
    state = {"model": net, "optimizer": opt, "lr_scheduler": sched, "trainer": trainer, "rng": RNGState()}
    if resume:
        SafeCheckpointLoader(latest_checkpoint(ckpt_dir), state).attach(trainer)
    SafeCheckpointSaver(str(ckpt_dir), state, epoch_level=True, save_interval=1, n_saved=n_saved).attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED)
    def log_and_maybe_die(engine):
        with open(log_path, "a") as f:
            f.write(json.dumps([engine.state.epoch, engine.state.iteration, float(engine.state.output[0]["loss"])]) + "\n")
        if engine.state.iteration == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.run()
    finally:
        torch.set_num_threads(threads)
    torch.save(net.state_dict(), os.path.join(ckpt_dir, "final_weights.pt"))


def _train(tmp_path: Path, name: str, kill_at: int = -1, resume: bool = False, workers: int = 0,
           subprocess_run: bool = True, n_saved: int | None = 1):
    """Run :func:`_train_main` in a fresh interpreter (or in this one); returns (returncode, folder, log)."""
    ckpt, log = tmp_path / name, tmp_path / f"{name}.jsonl"
    ckpt.mkdir(exist_ok=True)
    args = [str(ckpt), str(log), "3", str(kill_at), "1" if resume else "0", str(workers)]
    if subprocess_run:
        paths = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # this module and tests/ (its helpers)
        code = f"import sys; sys.path[:0] = {paths!r}; import test_epoch_seed_handler as t; t._train_main(*sys.argv[1:])"
        proc = subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, encoding="utf-8", errors="replace", timeout=1800)
        rc, err = proc.returncode, proc.stderr[-3000:]
    else:
        _train_main(*args, n_saved=n_saved)
        rc, err = 0, ""
    lines = log.read_text().splitlines() if log.exists() else []
    return rc, err, ckpt, [json.loads(line) for line in lines]


def _assert_same_weights(a: Path, b: Path) -> None:
    ref = torch.load(a, weights_only=True)
    got = torch.load(b, weights_only=True)
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"weight {k} differs")


def _losses(log):
    return [loss for *_, loss in log]


def test_kill_9_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    """A fresh interpreter is SIGKILLed at iteration 6 (in epoch 2 of 3, after checkpoint_epoch=1); the run is
    resumed (here in the test process, with scrambled global generators; the bundle test below resumes in a
    fresh interpreter); losses and final weights equal those of an uninterrupted run."""
    rc, err, ref_dir, ref_log = _train(tmp_path, "reference", subprocess_run=False)
    assert [it for _, it, _ in ref_log] == list(range(1, 13))

    rc, err, run_dir, killed_log = _train(tmp_path, "run", kill_at=6)
    assert rc == -signal.SIGKILL, err
    assert [it for _, it, _ in killed_log] == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "checkpoint_epoch=1.pt").is_file() and not (run_dir / "final_weights.pt").exists()

    import random

    import numpy as np

    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # whatever state a new process would have
    rc, err, _, log = _train(tmp_path, "run", resume=True, subprocess_run=False)
    resumed = log[len(killed_log):]
    # the resumed process restarts at epoch 2 / iteration 5 (optimizer, LR schedule, counters restored) ...
    assert [(ep, it) for ep, it, _ in resumed] == [(ep, it) for ep, it, _ in ref_log[4:]]
    # ... and sees the same batches, augmentations and dropout masks: same losses and final weights
    assert _losses(resumed) == pytest.approx(_losses(ref_log[4:]), rel=1e-5, abs=1e-6)
    assert _losses(killed_log) == pytest.approx(_losses(ref_log[:6]), rel=1e-5, abs=1e-6)
    _assert_same_weights(ref_dir / "final_weights.pt", run_dir / "final_weights.pt")
    last = safe_load_checkpoint(run_dir / "checkpoint_epoch=3.pt")
    assert last["trainer"]["iteration"] == 12 and last["lr_scheduler"]["last_epoch"] == 12
    assert not (run_dir / "checkpoint_epoch=2.pt").exists()  # rotation still works after a resume


def test_resume_is_exact_with_dataloader_workers(tmp_path):
    """Same with ``num_workers=1`` (transform seeds come from MONAI's worker_init_fn), resumed in-process after
    scrambling every global generator (as a new process would have them)."""
    import random

    import numpy as np

    _, _, ref_dir, ref_log = _train(tmp_path, "reference", workers=1, subprocess_run=False, n_saved=None)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint_epoch=1.pt").write_bytes((ref_dir / "checkpoint_epoch=1.pt").read_bytes())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    _, _, _, log = _train(tmp_path, "run", resume=True, workers=1, subprocess_run=False)
    assert [(ep, it) for ep, it, _ in log] == [(ep, it) for ep, it, _ in ref_log[4:]]
    assert _losses(log) == pytest.approx(_losses(ref_log[4:]), rel=1e-5, abs=1e-6)
    _assert_same_weights(ref_dir / "final_weights.pt", run_dir / "final_weights.pt")


def test_epoch_seed_handler_reseeds_dataset_transforms():
    from monai.data import Dataset
    from monai.transforms import Compose, RandGaussianNoised

    ds = Dataset([{"x": torch.zeros(1, 4)}], Compose([RandGaussianNoised("x", prob=1.0)]))
    engine = Engine(lambda e, b: ds[0]["x"].clone())
    EpochSeedHandler(seed=3, dataset=ds).attach(engine)
    outs = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: outs.append(e.state.output))
    engine.run([0], max_epochs=2)
    engine2 = Engine(lambda e, b: ds[0]["x"].clone())
    EpochSeedHandler(seed=3, dataset=ds).attach(engine2)
    engine2.load_state_dict({"epoch": 1, "max_epochs": 2, "epoch_length": 1})
    engine2.run([0])
    assert engine2.state.epoch == 2 and torch.equal(engine2.state.output, outs[1])
    assert not torch.equal(outs[0], outs[1])


def test_epoch_seed_handler_keeps_cudnn_flags_and_set_determinism_streams():
    """The handler seeds the generators exactly as ``set_determinism`` did (the exact-resume tests depend on these
    streams) but leaves the user's cuDNN flags (``set_determinism`` forced ``benchmark=False`` every epoch)."""
    import random

    import numpy as np
    from monai.utils import get_seed, set_determinism

    from monai_patcher.seeding import epoch_seed

    flags = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        s = epoch_seed(5, 2)
        set_determinism(seed=s)
        expected = (random.random(), float(np.random.rand()), float(torch.rand(1)), get_seed())
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
        random.seed(1), np.random.seed(1), torch.manual_seed(1)
        engine = Engine(lambda e, b: None)
        engine.state.epoch = 2
        EpochSeedHandler(seed=5)(engine)
        assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.deterministic is False
        assert (random.random(), float(np.random.rand()), float(torch.rand(1)), get_seed()) == expected
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags
        set_determinism(seed=None)


REPO = Path(__file__).resolve().parents[2]


TRAIN_JSON = REPO / "bundles" / "patcher_stroke" / "configs" / "train.json"


def _bundle_train(dataset_dir: Path, ckpt: Path, out: Path, resume: bool = False) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(TRAIN_JSON),
        "--dataset_dir", str(dataset_dir), "--ckpt_dir", str(ckpt), "--output_dir", str(out),
        "--max_epochs", "4", "--val_interval", "1000", "--batch_size", "4", "--network_def#name", "tiny",
        "--spatial_size", "64", "--num_workers", "0",
    ] + (["--resume", "true"] if resume else [])
    return subprocess.Popen(args, cwd=str(out.parent), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            encoding="utf-8", errors="replace")


@pytest.mark.slow
def test_bundle_training_kill_9_then_resume_matches_uninterrupted_run(tmp_path, demo_dataset):
    """``python -m monai.bundle run training`` (bundles/patcher_stroke): SIGKILL it once the first epoch checkpoint
    exists, run it again with ``--resume true``: the final checkpoint equals that of an uninterrupted run."""
    import time

    cfg = json.loads(TRAIN_JSON.read_text())
    assert cfg["train"]["checkpoint_saver"]["_target_"].endswith("SafeCheckpointSaver")
    assert any(str(h.get("_target_", "")).endswith("EpochSeedHandler") for h in cfg["train"]["handlers"])
    data = Path(demo_dataset).parent
    ref = _bundle_train(data, tmp_path / "ref_models", tmp_path / "ref_eval")
    log = ref.communicate(timeout=1800)[0]
    assert ref.returncode == 0, log[-4000:]

    ckpt, out = tmp_path / "models", tmp_path / "eval"
    run = _bundle_train(data, ckpt, out)
    deadline = time.time() + 1800
    while not list(ckpt.glob("checkpoint_epoch=*.pt")) and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    run.kill()  # SIGKILL, in epoch 2 (or while saving its checkpoint)
    log = run.communicate(timeout=600)[0]
    assert list(ckpt.glob("checkpoint_epoch=*.pt")), f"no epoch checkpoint within 30 min:\n{log[-3000:]}"
    assert run.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{log[-3000:]}"
    assert not (ckpt / "checkpoint_epoch=4.pt").exists()

    resumed = _bundle_train(data, ckpt, out, resume=True)
    log = resumed.communicate(timeout=1800)[0]
    assert resumed.returncode == 0, log[-4000:]
    assert "Restored all variables from" in log
    a = safe_load_checkpoint(tmp_path / "ref_models" / "checkpoint_epoch=4.pt")
    b = safe_load_checkpoint(ckpt / "checkpoint_epoch=4.pt")
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"]
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"]
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-5, atol=1e-6, msg=f"weight {k} differs")

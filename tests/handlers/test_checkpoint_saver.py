"""SafeCheckpointSaver and AtomicDiskSaver (monai_patcher/handlers/checkpoint_saver.py): crash-safe checkpoint files
and the cleanup of killed saves' temporary files."""

from __future__ import annotations


import pytest
import torch
from ignite.engine import Engine, Events

from checkpoint_helpers import checkpoint_then_killed_save, dead_pid, set_age, temp_name
from handlers_helpers import train_with_validation
from monai_patcher.handlers import AtomicDiskSaver, SafeCheckpointSaver
from monai_patcher.io import safe_load_checkpoint


def _run_saver(tmp_path, fail_at_epoch: int | None, n_saved: int = 1):
    """Three epochs with SafeCheckpointSaver(n_saved); torch.save fails (disk full) at ``fail_at_epoch``."""
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: net.weight.data.add_(1.0))
    saver = SafeCheckpointSaver(
        str(tmp_path), {"model": net, "trainer": engine}, epoch_level=True, save_interval=1, n_saved=n_saved,
        save_key_metric=False,
    )
    saver.attach(engine)
    real_save = torch.save

    def flaky_save(obj, f, *a, **k):
        if fail_at_epoch is not None and engine.state.epoch == fail_at_epoch:
            f.write(b"PK\x03\x04partial")
            raise OSError("No space left on device")
        return real_save(obj, f, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", flaky_save)
        engine.run([0], max_epochs=3)
    return net


def test_safe_checkpoint_saver_n_saved_1_failure_keeps_last_good_checkpoint(tmp_path):
    # plain MONAI CheckpointSaver(n_saved=1) deletes checkpoint_epoch=1.pt *before* writing epoch 2 (non-atomically)
    with pytest.raises(OSError):
        _run_saver(tmp_path, fail_at_epoch=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_epoch=1.pt"], names
    ck = safe_load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")
    assert ck["trainer"]["iteration"] == 1 and float(ck["model"]["weight"][0, 0]) > 0


def test_safe_checkpoint_saver_rotates_like_monai(tmp_path):
    net = _run_saver(tmp_path, fail_at_epoch=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=3.pt"]
    ck = safe_load_checkpoint(tmp_path / "checkpoint_epoch=3.pt")
    assert torch.equal(ck["model"]["weight"], net.weight.data)
    _run_saver(tmp_path / "two", fail_at_epoch=None, n_saved=2)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]


def test_safe_checkpoint_saver_fixed_filename(tmp_path):
    """The key-metric checkpoint with a fixed name (``model.pt``) is replaced atomically, never deleted."""
    saver = AtomicDiskSaver(tmp_path, filename="model.pt")
    saver({"v": torch.tensor(1.0)}, "ignored_1.pt")
    saver.remove("ignored_1.pt")  # ignite removes the old entry before saving the new one
    saver({"v": torch.tensor(2.0)}, "ignored_2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert safe_load_checkpoint(tmp_path / "model.pt")["v"].item() == 2.0


def test_saver_removes_temp_file_of_a_killed_save_and_logs_it(tmp_path, caplog):
    """A real ``kill -9`` during a save leaves ``.ckpt.pt.<pid>-<host>.<random>.tmp``; the next saver removes it
    when its engine starts (before any save) and says so; nothing else in the folder is touched."""
    import logging

    path, pid = checkpoint_then_killed_save(tmp_path)
    (stray,) = [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert f".{pid}-" in stray.name
    keep = ["notes.tmp", ".ckpt.pt.abcdefgh.tmp", ".ckpt.pt.tmp", "checkpoint_epoch=1.pt.tmp", "x.123-0000abcd.k.tmp"]
    for n in keep:
        (tmp_path / n).write_bytes(b"not ours")
        set_age(tmp_path / n, 2 * 3600)  # old: they stay because they are not ours, not because they are recent
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / temp_name("ckpt.pt", dead_pid())).write_bytes(b"in a subfolder: not ours")

    net = torch.nn.Linear(1, 1)
    engine = Engine(lambda e, b: None)
    saver = SafeCheckpointSaver(str(tmp_path), {"model": net}, epoch_level=True, save_interval=1, n_saved=None)
    saver.attach(engine)
    removed = []
    engine.add_event_handler(Events.STARTED, lambda e: removed.append(stray.exists()))  # runs after the saver's
    with caplog.at_level(logging.WARNING, logger="monai_patcher.io.atomic"):
        engine.run([0], max_epochs=1)
    assert removed == [False], "the stray temporary file was not removed when the engine started"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["model_epoch=1.pt", "ckpt.pt", "sub"])
    assert len(list((tmp_path / "sub").iterdir())) == 1
    assert torch.equal(safe_load_checkpoint(path)["v"], torch.arange(1000.0))
    assert any(stray.name in r.getMessage() and "no longer running" in r.getMessage() for r in caplog.records), caplog.text


def test_only_the_saving_rank_removes_temp_files(tmp_path, monkeypatch):
    import ignite.distributed as idist

    stray = tmp_path / temp_name("model.pt", dead_pid())
    stray.write_bytes(b"half")
    saver = SafeCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1)}, save_key_metric=True,
                                key_metric_name="m", key_metric_filename="model.pt")
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    assert saver.remove_stale_temp_files() == [] and stray.exists()
    monkeypatch.setattr(idist, "get_rank", lambda: 0)
    assert saver.remove_stale_temp_files() == [stray] and not stray.exists()


def test_resume_removes_the_checkpoint_it_resumed_from_once_a_newer_one_is_written(tmp_path, monkeypatch):
    """Every resume left the epoch checkpoint it resumed from (n_saved=1: 43 MB per resume for the small preset).
    It is deleted after the next one is complete; if that save fails, it stays."""
    import monai_patcher.handlers.checkpoint_saver as ck

    train_with_validation(tmp_path, [0.8], epochs=1, resume=False)
    real = ck.atomic_save

    def disk_full(obj, path, *a, **k):
        if "checkpoint_epoch" in str(path):
            raise OSError(28, "No space left on device")
        return real(obj, path, *a, **k)

    monkeypatch.setattr(ck, "atomic_save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch=*")) == ["checkpoint_epoch=1.pt"]
    monkeypatch.setattr(ck, "atomic_save", real)
    train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert sorted(p.name for p in tmp_path.glob("checkpoint_epoch=*")) == ["checkpoint_epoch=2.pt"]
    assert safe_load_checkpoint(tmp_path / "checkpoint_epoch=2.pt")["trainer"]["iteration"] == 2  # 1 per epoch
    # a checkpoint resumed from another folder is not this saver's: left alone
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoint_epoch=2.pt").write_bytes((tmp_path / "checkpoint_epoch=2.pt").read_bytes())
    (tmp_path / "checkpoint_epoch=2.pt").rename(tmp_path / "keep_epoch=2.pt")
    (other / "checkpoint_epoch=2.pt").replace(tmp_path / "checkpoint_epoch=2.pt")
    train_with_validation(tmp_path, [0.5], epochs=3, resume=True)
    assert sorted(p.name for p in tmp_path.glob("*epoch=*")) == ["checkpoint_epoch=3.pt", "keep_epoch=2.pt"]

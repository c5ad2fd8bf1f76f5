"""Crash-safe checkpoints: atomic writes, safe loading, exact resume after ``kill -9`` (monai_patcher.checkpoint).

The resume tests run a small MONAI ``SupervisedTrainer`` (tiny Patcher, 32 x 32 synthetic 2-channel slices,
random crop/flip/noise transforms, shuffling, dropout and drop-path: every source of randomness a real run
has) in subprocesses, SIGKILL one of them mid-epoch, resume it and compare with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from monai_patcher.checkpoint import (
    AtomicDiskSaver,
    BestMetricState,
    CheckpointError,
    EpochSeedHandler,
    RNGState,
    SafeCheckpointLoader,
    SafeCheckpointSaver,
    UnsafeCheckpointError,
    atomic_save,
    epoch_seed,
    remove_stale_temp_files,
    safe_load_checkpoint,
)

ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

# ------------------------------------------------------------------------------------------ safe loading


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: code execution on load."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("fmt", ["torch_zip", "pickle_protocol_2", "pickle_protocol_5"])
def test_malicious_checkpoint_is_refused_without_running_code(tmp_path, fmt):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    payload = {"model": {"w": torch.zeros(2)}, "extra": _Evil(str(marker))}
    if fmt == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(fmt[-1])))
    with pytest.raises(CheckpointError) as err:
        safe_load_checkpoint(path)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)
    if fmt != "pickle_protocol_5":  # protocol 5 is refused earlier, as an unsupported pickle opcode (FRAME)
        assert isinstance(err.value, UnsafeCheckpointError) and "arbitrary code" in str(err.value)
    assert not marker.exists(), "the pickle's code ran"


def test_safe_checkpoint_loader_refuses_malicious_file_in_an_engine(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil(str(marker))}, path)
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    SafeCheckpointLoader(str(path), {"model": net}).attach(engine)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        engine.run([0], max_epochs=1)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "missing", "bitflip_in_weights"])
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage):
    good = tmp_path / "good.pt"
    torch.save({"model": torch.nn.Linear(8, 8).state_dict()}, good)
    bad = tmp_path / "bad.pt"
    data = bytearray(good.read_bytes())
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(random.Random(0).randbytes(2000))
    elif damage == "bitflip_in_weights":
        # torch.load does not check the zip CRCs: this flip would load silently as a different weight
        with zipfile.ZipFile(good) as z:
            info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
        name_len, extra_len = struct.unpack("<HH", bytes(data[info.header_offset + 26: info.header_offset + 30]))
        start = info.header_offset + 30 + name_len + extra_len  # the record's data, after its local header
        data[start + 5] ^= 0x10
        bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="bad.pt"):
        safe_load_checkpoint(bad)
    engine = Engine(lambda e, b: None)
    SafeCheckpointLoader(str(bad), {"model": torch.nn.Linear(8, 8)}).attach(engine)
    with pytest.raises(CheckpointError, match="bad.pt"):
        engine.run([0], max_epochs=1)


def test_fuzzed_checkpoints_error_clearly_or_load_intact(tmp_path):
    """300 seeded random/truncated/bit-flipped checkpoints: a CheckpointError naming the file, or the exact data."""
    orig = {"model": torch.nn.Linear(8, 8).state_dict(), "epoch": 3, "names": ["a", "b"]}
    good = tmp_path / "good.pt"
    torch.save(orig, good)
    data = good.read_bytes()
    rng = random.Random(1234)
    path = tmp_path / "fuzz.pt"
    outcomes = {"error": 0, "intact": 0}
    for i in range(300):
        if i % 3 == 0:
            blob = rng.randbytes(rng.randint(1, 3000))
        elif i % 3 == 1:
            blob = data[: rng.randint(1, len(data) - 1)]
        else:
            b = bytearray(data)
            for _ in range(rng.randint(1, 20)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            blob = bytes(b)
        path.write_bytes(blob)
        try:
            out = safe_load_checkpoint(path)
        except CheckpointError as e:
            assert str(path) in str(e)
            outcomes["error"] += 1
            continue
        assert out["epoch"] == 3 and out["names"] == ["a", "b"], f"case {i}: silently wrong content"
        for k, v in orig["model"].items():
            assert torch.equal(out["model"][k], v), f"case {i}: silently wrong weights"
        outcomes["intact"] += 1
    assert outcomes["error"] >= 250, outcomes


def test_safe_loader_loads_a_normal_checkpoint(tmp_path):
    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    path = tmp_path / "m.pt"
    torch.save({"model": src.state_dict()}, path)
    engine = Engine(lambda e, b: None)
    SafeCheckpointLoader(str(path), {"model": dst}).attach(engine)
    engine.run([0], max_epochs=1)
    assert torch.equal(src.weight, dst.weight)


def test_safe_loader_names_the_file_for_a_checkpoint_that_does_not_fit(tmp_path):
    """Other shapes (PyTorch's RuntimeError) or a missing required entry (ignite's ValueError): the error names
    the file and says what does not fit, not only PyTorch's header line."""
    from monai_patcher.checkpoint import CheckpointMismatchError

    path = tmp_path / "linear.pt"
    torch.save({"model": torch.nn.Linear(2, 1).state_dict()}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        SafeCheckpointLoader(str(path), {"model": torch.nn.Linear(3, 1)})(Engine(lambda e, b: None))
    msg = str(info.value)
    assert str(path) in msg and "size mismatch for weight" in msg and "torch.Size([1, 2])" in msg, msg
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, CheckpointError)  # both old and new handlers
    net = torch.nn.Linear(2, 1)
    with pytest.raises(CheckpointMismatchError) as info:
        SafeCheckpointLoader(str(path), {"model": net, "optimizer": torch.optim.SGD(net.parameters(), 0.1)})(
            Engine(lambda e, b: None))
    msg = str(info.value)
    assert str(path) in msg and "'optimizer'" in msg and "optional_keys" in msg, msg
    torch.save({"model": {"weight": torch.zeros(1, 2)}}, path)  # a missing key (strict=True)
    with pytest.raises(CheckpointMismatchError, match=r"Missing key\(s\) in state_dict: \"bias\""):
        SafeCheckpointLoader(str(path), {"model": torch.nn.Linear(2, 1)})(Engine(lambda e, b: None))


def test_rng_state_round_trip_is_weights_only(tmp_path):
    import random

    import numpy as np

    state = RNGState().state_dict()
    atomic_save(state, tmp_path / "rng.pt")
    loaded = safe_load_checkpoint(tmp_path / "rng.pt")  # weights_only=True
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.random(), np.random.rand(), torch.rand(3)  # move every generator on
    RNGState().load_state_dict(loaded)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_epoch_seed_distinct():
    seeds = {epoch_seed(s, e) for s in range(20) for e in range(50)}
    assert len(seeds) == 1000 and all(0 <= s < 2**31 for s in seeds)


# ------------------------------------------------------------------------------------------ atomic writes


def test_atomic_save_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": torch.tensor([1.0])}, path)

    def half_then_fail(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_save({"v": torch.tensor([2.0])}, path, save_func=half_then_fail)
    assert safe_load_checkpoint(path)["v"].item() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"], "temporary file left behind"
    mode = os.stat(path).st_mode & 0o777
    assert mode & 0o400 and mode == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_atomic_write_never_changes_the_umask(tmp_path, monkeypatch):
    """Reading the umask with ``os.umask`` means setting it: a file another thread creates meanwhile gets
    0o666. atomic_write never calls it, and its file still gets ``0o666 & ~umask``."""
    from monai_patcher.checkpoint import atomic_write

    old = os.umask(0o027)
    calls = []
    real = os.umask
    monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real(m))
    try:
        atomic_write(tmp_path / "a.pt", lambda tmp: Path(tmp).write_bytes(b"x"))
        atomic_save({"v": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        real(old)
    assert calls == [], f"the process umask was changed: {calls}"
    assert (os.stat(tmp_path / "a.pt").st_mode & 0o777) == 0o640
    assert (os.stat(tmp_path / "b.pt").st_mode & 0o777) == 0o640


def test_atomic_write_without_overwrite_never_replaces_a_file(tmp_path, monkeypatch):
    """``overwrite=False``: a file that exists, or that another process creates while the new one is written,
    is kept (``FileExistsError``), and no temporary file is left; with hard links unsupported, the same."""
    import errno

    from monai_patcher.checkpoint import atomic_write

    path = tmp_path / "case_seg.nii.gz"

    def racing_write(tmp: str) -> None:
        Path(tmp).write_bytes(b"this run")
        path.write_bytes(b"another run")  # the other run finishes first

    with pytest.raises(FileExistsError):
        atomic_write(path, racing_write, overwrite=False)
    assert path.read_bytes() == b"another run"
    with pytest.raises(FileExistsError):
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"this run"), overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_seg.nii.gz"]
    atomic_write(tmp_path / "new.nii.gz", lambda tmp: Path(tmp).write_bytes(b"new"), overwrite=False)
    assert (tmp_path / "new.nii.gz").read_bytes() == b"new"

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # e.g. exFAT: falls back to check + rename
    with pytest.raises(FileExistsError):
        atomic_write(path, racing_write, overwrite=False)
    assert path.read_bytes() == b"another run"
    atomic_write(tmp_path / "fat.nii.gz", lambda tmp: Path(tmp).write_bytes(b"fat"), overwrite=False)
    assert (tmp_path / "fat.nii.gz").read_bytes() == b"fat"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_seg.nii.gz", "fat.nii.gz", "new.nii.gz"]
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"replaced"))  # overwrite=True (default): replaced
    assert path.read_bytes() == b"replaced"


def _save_then_die_half_way(path: str) -> None:
    def half_then_die(obj, f):
        f.write(b"PK\x03\x04" + bytes(50000))
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    atomic_save({"v": torch.zeros(1000)}, path, save_func=half_then_die)


def _checkpoint_then_killed_save(folder):
    """``folder/ckpt.pt`` saved, then a forked process SIGKILLed half-way through overwriting it; its pid."""
    import multiprocessing

    path = folder / "ckpt.pt"
    atomic_save({"v": torch.arange(1000.0)}, path)
    child = multiprocessing.get_context("fork").Process(target=_save_then_die_half_way, args=(str(path),))
    child.start()
    child.join(600)  # generous: a shared, loaded machine
    assert child.exitcode == -signal.SIGKILL
    return path, child.pid


def test_sigkill_during_save_leaves_previous_checkpoint_intact(tmp_path):
    """A process SIGKILLed half-way through writing a checkpoint: the old one is intact, no partial file."""
    path, _ = _checkpoint_then_killed_save(tmp_path)
    assert torch.equal(safe_load_checkpoint(path)["v"], torch.arange(1000.0))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert leftovers and all(n.startswith(".ckpt.pt.") and n.endswith(".tmp") for n in leftovers), leftovers


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


# ------------------------------------------------------------------------------------------ stray temporary files


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tmp_name(final: str, pid: int, host: str | None = None) -> str:
    """A temporary file name as atomic_save makes it: ``.<final>.<pid>-<host>.<random>.tmp``."""
    from monai_patcher.checkpoint import _host_tag

    return f".{final}.{pid}-{host or _host_tag()}.k3j_9xq2.tmp"


def _age(path: Path, seconds: float) -> None:
    import time

    t = time.time() - seconds
    os.utime(path, (t, t))


def test_temp_file_name_carries_pid_and_host(tmp_path):
    """The temporary file of a save is named ``.<name>.<pid>-<host>.<random>.tmp`` (what the cleanup relies on)."""
    from monai_patcher.checkpoint import _TMP_NAME, _host_tag

    seen = []
    atomic_save({"v": torch.zeros(1)}, tmp_path / "model.pt",
                save_func=lambda obj, f: seen.extend(p.name for p in tmp_path.iterdir()) or torch.save(obj, f))
    (name,) = seen
    m = _TMP_NAME.match(name)
    assert m and m["name"] == "model.pt" and int(m["pid"]) == os.getpid() and m["host"] == _host_tag(), name


def test_saver_removes_temp_file_of_a_killed_save_and_logs_it(tmp_path, caplog):
    """A real ``kill -9`` during a save leaves ``.ckpt.pt.<pid>-<host>.<random>.tmp``; the next saver removes it
    when its engine starts (before any save) and says so; nothing else in the folder is touched."""
    import logging

    path, pid = _checkpoint_then_killed_save(tmp_path)
    (stray,) = [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert f".{pid}-" in stray.name
    keep = ["notes.tmp", ".ckpt.pt.abcdefgh.tmp", ".ckpt.pt.tmp", "checkpoint_epoch=1.pt.tmp", "x.123-0000abcd.k.tmp"]
    for n in keep:
        (tmp_path / n).write_bytes(b"not ours")
        _age(tmp_path / n, 2 * 3600)  # old: they stay because they are not ours, not because they are recent
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / _tmp_name("ckpt.pt", _dead_pid())).write_bytes(b"in a subfolder: not ours")

    net = torch.nn.Linear(1, 1)
    engine = Engine(lambda e, b: None)
    saver = SafeCheckpointSaver(str(tmp_path), {"model": net}, epoch_level=True, save_interval=1, n_saved=None)
    saver.attach(engine)
    removed = []
    engine.add_event_handler(Events.STARTED, lambda e: removed.append(stray.exists()))  # runs after the saver's
    with caplog.at_level(logging.WARNING, logger="monai_patcher.checkpoint"):
        engine.run([0], max_epochs=1)
    assert removed == [False], "the stray temporary file was not removed when the engine started"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["model_epoch=1.pt", "ckpt.pt", "sub"])
    assert len(list((tmp_path / "sub").iterdir())) == 1
    assert torch.equal(safe_load_checkpoint(path)["v"], torch.arange(1000.0))
    assert any(stray.name in r.getMessage() and "no longer running" in r.getMessage() for r in caplog.records), caplog.text


def test_live_writers_temp_files_are_kept(tmp_path):
    """Temporary files another live saver may be writing stay: a live process of this host (another rank), a
    fresh file of another host, a file this process is writing right now (another thread)."""
    # a live process for the whole test, however slow the machine (killed in ``finally``)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        live = tmp_path / _tmp_name("checkpoint_epoch=3.pt", sleeper.pid)
        other_host = tmp_path / _tmp_name("model.pt", _dead_pid(), host="0badc0de")
        dead = tmp_path / _tmp_name("checkpoint_epoch=2.pt", _dead_pid())
        old_other_host = tmp_path / _tmp_name("model.pt", 12345, host="0badc0de")
        old_live = tmp_path / _tmp_name("checkpoint_epoch=1.pt", sleeper.pid)
        for p in (live, other_host, dead, old_other_host, old_live):
            p.write_bytes(b"PK\x03\x04 half")
        _age(old_other_host, 2 * 3600)
        _age(old_live, 2 * 3600)  # untouched for 2 hours: its pid is alive but can no longer be writing it
        _age(live, 30 * 60)
        _age(other_host, 30 * 60)

        during = {}

        def write(tmp: str) -> None:  # another saver of this process cleans while this one is writing
            Path(tmp).write_bytes(b"half")
            during["removed"] = remove_stale_temp_files(tmp_path)
            during["kept"] = Path(tmp).exists()
            Path(tmp).write_bytes(b"whole")

        from monai_patcher.checkpoint import atomic_write

        atomic_write(tmp_path / "model.pt", write)
        assert during["kept"], "an in-flight temporary file of this process was removed"
        assert sorted(p.name for p in during["removed"]) == sorted([dead.name, old_other_host.name, old_live.name])
        assert (tmp_path / "model.pt").read_bytes() == b"whole"
        assert live.exists() and other_host.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name, "model.pt"])
    finally:
        sleeper.kill()
        sleeper.wait()
    # the writer is gone now: the next save removes its file; the other host's fresh file still stays
    AtomicDiskSaver(tmp_path)({"v": torch.zeros(1)}, "checkpoint_epoch=4.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other_host.name, "checkpoint_epoch=4.pt", "model.pt"])


def test_temp_file_of_an_earlier_process_with_this_pid_is_removed(tmp_path):
    """A restarted container often gets the pid its killed predecessor had: that file is stale too."""
    stale = tmp_path / _tmp_name("model.pt", os.getpid())
    stale.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [stale] and not stale.exists()


def test_temp_file_with_the_final_extension_is_removed(tmp_path):
    """``atomic_write(..., suffix=".tmp.nii.gz")`` (the batch-inference masks) names its files
    ``.<name>.<pid>-<host>.<random>.tmp.nii.gz``: the same rules apply to them."""
    dead = tmp_path / (_tmp_name("case_seg.nii.gz", _dead_pid()) + ".nii.gz")
    other_host = tmp_path / (_tmp_name("case_seg.nii.gz", 12345, host="0badc0de") + ".nii.gz")
    for p in (dead, other_host):
        p.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [dead]
    assert other_host.exists()


def test_temp_files_of_version_0_1_0_are_removed_by_age_only(tmp_path):
    """``.<name>.<random>.tmp`` (no writer recorded): kept while recent, removed after ``stale_after``."""
    fresh, old = tmp_path / ".model.pt.abcd_123.tmp", tmp_path / ".checkpoint_epoch=2.pt.x9y8z7w6.tmp"
    not_ours = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / ".model.pt.tmp"]
    for p in (fresh, old, *not_ours):
        p.write_bytes(b"PK\x03\x04half")  # how a half-written torch.save file starts
        _age(p, 2 * 3600)
    _age(fresh, 60)
    assert remove_stale_temp_files(tmp_path) == [old]
    assert fresh.exists() and all(p.exists() for p in not_ours)


def test_old_user_files_named_like_temp_files_are_never_removed(tmp_path):
    """Users' own hidden ``*.tmp`` files, however old, stay (the rule of version 0.1.0 used to delete any
    ``.<anything>.<8 alnum>.tmp`` older than an hour, e.g. in the batch-inference ``--output`` folder); our own
    stale temporary files, of both naming schemes, go."""
    users = {
        ".thesis.docx.backup01.tmp": b"user data",
        ".results.csv.20240611.tmp": b"case,1",
        ".ckpt.pt.abcdefgh.tmp": b"user data",  # a 0.1.0 checkpoint name, but not a checkpoint's content
        ".model.pt.ABCDEFGH.tmp": b"PK\x03\x04",  # tempfile never makes upper-case names
        ".notes.txt.abcdefgh.tmp": b"",
        ".scan_seg.nii.gz.abcdefgh.tmp": b"\x1f\x8b",  # 0.1.0 masks ended in .tmp.nii.gz
        ".summary.json.abcdefgh.tmp.csv": b"{",
        ".x.1-0badc0de.k3j_9xq2.tmp.docx": b"",  # our scheme only ends in the final name's own extensions
        ".backup.7-20240611.v1.tmp": b"",  # ours have 8 random characters
    }
    ours = {
        ".model.pt.abcd_123.tmp": b"PK\x03\x04 half",  # 0.1.0 (tempfile names): checkpoint
        ".checkpoint_epoch=2.pt.x9y8z7w6.tmp": b"",  # killed before writing a byte
        ".old.pt.k3j_9xq2.tmp": b"\x80\x02 legacy pickle",
        ".case1_seg.nii.gz.abcdefgh.tmp.nii.gz": b"\x1f\x8b half",  # 0.1.0 batch inference
        ".case1_prob.nii.gz.a_b_c_d_.tmp.nii.gz": b"\x1f\x8b",
        ".summary.json.q1w2e3r4.tmp.json": b'{"counts"',
        ".summary.csv.q1w2e3r4.tmp.csv": b"case,file,status",
        _tmp_name("model.pt", 12345, host="0badc0de"): b"half",  # current scheme, another host
        _tmp_name("c_seg.nii.gz", 12345, host="0badc0de") + ".nii.gz": b"half",
    }
    for n, content in {**users, **ours}.items():
        (tmp_path / n).write_bytes(content)
        _age(tmp_path / n, 2 * 3600)
    assert sorted(p.name for p in remove_stale_temp_files(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(users)
    assert all((tmp_path / n).read_bytes() == c for n, c in users.items())


def test_only_the_saving_rank_removes_temp_files(tmp_path, monkeypatch):
    import ignite.distributed as idist

    stray = tmp_path / _tmp_name("model.pt", _dead_pid())
    stray.write_bytes(b"half")
    saver = SafeCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1)}, save_key_metric=True,
                                key_metric_name="m", key_metric_filename="model.pt")
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    assert saver.remove_stale_temp_files() == [] and stray.exists()
    monkeypatch.setattr(idist, "get_rank", lambda: 0)
    assert saver.remove_stale_temp_files() == [stray] and not stray.exists()


# ------------------------------------------------------------------------------------------ best metric across resume


class _ScriptedMetric:
    """An ignite metric whose value at each validation is the next of ``scores`` (a controlled Dice)."""

    def __new__(cls, scores):
        from ignite.metrics import Metric

        class _M(Metric):
            def __init__(self):
                self.scores = list(scores)
                super().__init__(output_transform=lambda o: None)

            def reset(self):
                pass

            def update(self, output):
                pass

            def compute(self):
                return self.scores.pop(0)

        return _M()


def _train_with_validation(ckpt: Path, scores, epochs: int, resume: bool, optional_keys=("best_metric",),
                           save_best_state: bool = True):
    """A trainer whose epoch adds 1 to the weight, validated after every epoch by a MONAI evaluator whose key
    metric takes ``scores``; like the bundles: ``model.pt`` by key metric (validation saver), the epoch
    checkpoint (trainer saver) with ``BestMetricState``; ``resume`` loads the last epoch checkpoint."""
    from monai.engines import Evaluator

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    val_saver = SafeCheckpointSaver(str(ckpt), {"model": net}, save_key_metric=True, key_metric_filename="model.pt")
    evaluator = Evaluator(device="cpu", val_data_loader=[0], epoch_length=1, iteration_update=lambda e, b: {},
                          key_val_metric={"dice": _ScriptedMetric(scores)}, val_handlers=[val_saver])
    trainer = Engine(lambda e, b: net.weight.data.add_(1.0))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run(e.state.epoch))
    state = {"model": net, "trainer": trainer}
    if save_best_state:
        state["best_metric"] = BestMetricState(evaluator, [val_saver])
    if resume:
        last = max(ckpt.glob("checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
        SafeCheckpointLoader(str(last), state, optional_keys=list(optional_keys)).attach(trainer)
    SafeCheckpointSaver(str(ckpt), state, epoch_level=True, save_interval=1, n_saved=1).attach(trainer)
    trainer.run([0], max_epochs=epochs)
    return evaluator


def _model_weight(ckpt: Path) -> float:
    return float(safe_load_checkpoint(ckpt / "model.pt")["weight"])


def test_resume_keeps_the_best_model_and_best_metric(tmp_path):
    """Best Dice 0.8 at epoch 1; killed; resumed, epoch 2 scores 0.5: model.pt stays the epoch-1 model and the
    evaluator still reports 0.8 at epoch 1. A later, better score (0.9) still replaces it."""
    ev = _train_with_validation(tmp_path, [0.8], epochs=1, resume=False)
    assert (ev.state.best_metric, ev.state.best_metric_epoch, _model_weight(tmp_path)) == (0.8, 1, 1.0)
    stored = safe_load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")["best_metric"]
    assert stored["best_metric"] == 0.8 and stored["best_metric_epoch"] == 1 and len(stored["savers"][0]) == 1

    ev = _train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert _model_weight(tmp_path) == 1.0, "a worse model overwrote the best one after resume"
    assert (ev.state.best_metric, ev.state.best_metric_epoch) == (0.8, 1)

    ev = _train_with_validation(tmp_path, [0.9], epochs=3, resume=True)
    assert _model_weight(tmp_path) == 3.0 and (ev.state.best_metric, ev.state.best_metric_epoch) == (0.9, 3)


def test_resume_rewrites_best_model_that_is_gone(tmp_path):
    """The restored list names model.pt; if that file was deleted, the next validation writes it again."""
    _train_with_validation(tmp_path, [0.8], epochs=1, resume=False)
    (tmp_path / "model.pt").unlink()
    ev = _train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert _model_weight(tmp_path) == 2.0 and (ev.state.best_metric, ev.state.best_metric_epoch) == (0.8, 1)


def test_checkpoint_without_best_metric_still_resumes(tmp_path):
    """A checkpoint written before ``best_metric`` was in save_dict: ``optional_keys`` lets it load (the best
    metric then starts afresh, as before); without it ignite refuses the missing key (``strict`` does not help)."""
    _train_with_validation(tmp_path, [0.8], epochs=1, resume=False, save_best_state=False)
    assert "best_metric" not in safe_load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")
    with pytest.raises(ValueError, match="best_metric"):
        _train_with_validation(tmp_path, [0.5], epochs=2, resume=True, optional_keys=())
    ev = _train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert (ev.state.best_metric, ev.state.best_metric_epoch) == (0.5, 2)  # MONAI's behaviour without the state
    assert safe_load_checkpoint(tmp_path / "checkpoint_epoch=2.pt")["trainer"]["iteration"] == 2


# ------------------------------------------------------------------------------------------ exact resume

def _train_main(ckpt_dir, log_path, max_epochs=3, kill_at=-1, resume=False, workers=0, n_saved=1) -> None:
    """3 epochs x 4 iterations of a tiny Patcher with SafeCheckpointSaver/Loader, EpochSeedHandler and RNGState.

    Logs ``[epoch, iteration, loss]`` per iteration to ``log_path``; SIGKILLs its own process at iteration
    ``kill_at``; saves the final weights as ``final_weights.pt``. Run in a fresh interpreter by the kill test.
    """
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedTrainer
    from monai.handlers import LrScheduleHandler
    from monai.transforms import Compose, RandFlipd, RandGaussianNoised, RandSpatialCropd

    from monai_patcher.bundle_utils import latest_checkpoint
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
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_checkpoint as t; t._train_main(*sys.argv[1:])"
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

    from monai_patcher.checkpoint import epoch_seed

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


# ------------------------------------------------------------------------------------------ the stroke bundle

REPO = Path(__file__).resolve().parents[1]
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


def test_epoch_seed_differs_between_ranks_and_is_stable_per_rank():
    """``epoch_seed`` lives in ``monai_patcher.checkpoint``; the bundles' ``EpochSeedHandler`` calls it with the
    process rank (``multi_gpu_train.json``): ranks must not share augmentations, a rank must repeat its own."""
    from monai_patcher.checkpoint import epoch_seed

    for seed, epoch in [(0, 0), (0, 1), (7, 3), (12345, 99)]:
        by_rank = [epoch_seed(seed, epoch, rank) for rank in range(8)]
        assert len(set(by_rank)) == 8, (seed, epoch, by_rank)
        assert by_rank == [epoch_seed(seed, epoch, rank) for rank in range(8)]  # same rank, same seed
        assert by_rank[0] == epoch_seed(seed, epoch)  # rank 0 is the single-process seed (resume compatibility)
        assert all(0 <= s < 2**31 for s in by_rank)
    # nor does a rank collide with another epoch of another rank in a short run
    grid = {epoch_seed(3, e, r) for e in range(20) for r in range(4)}
    assert len(grid) == 80

"""Atomic files (monai_patcher/io/atomic.py): a file is its old or its new complete version, never a partial one;
the temporary files of killed writers are removed, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from checkpoint_helpers import checkpoint_then_killed_save, dead_pid, set_age, temp_name
from monai_patcher.handlers import AtomicDiskSaver
from monai_patcher.io import atomic_save, remove_stale_temp_files, safe_load_checkpoint


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
    from monai_patcher.io import atomic_write

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

    from monai_patcher.io import atomic_write

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


def test_sigkill_during_save_leaves_previous_checkpoint_intact(tmp_path):
    """A process SIGKILLed half-way through writing a checkpoint: the old one is intact, no partial file."""
    path, _ = checkpoint_then_killed_save(tmp_path)
    assert torch.equal(safe_load_checkpoint(path)["v"], torch.arange(1000.0))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert leftovers and all(n.startswith(".ckpt.pt.") and n.endswith(".tmp") for n in leftovers), leftovers


def test_temp_file_name_carries_pid_and_host(tmp_path):
    """The temporary file of a save is named ``.<name>.<pid>-<host>.<random>.tmp`` (what the cleanup relies on)."""
    from monai_patcher.io.atomic import _TMP_NAME, _host_tag

    seen = []
    atomic_save({"v": torch.zeros(1)}, tmp_path / "model.pt",
                save_func=lambda obj, f: seen.extend(p.name for p in tmp_path.iterdir()) or torch.save(obj, f))
    (name,) = seen
    m = _TMP_NAME.match(name)
    assert m and m["name"] == "model.pt" and int(m["pid"]) == os.getpid() and m["host"] == _host_tag(), name


def test_live_writers_temp_files_are_kept(tmp_path):
    """Temporary files another live saver may be writing stay: a live process of this host (another rank), a
    fresh file of another host, a file this process is writing right now (another thread)."""
    # a live process for the whole test, however slow the machine (killed in ``finally``)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        live = tmp_path / temp_name("checkpoint_epoch=3.pt", sleeper.pid)
        other_host = tmp_path / temp_name("model.pt", dead_pid(), host="0badc0de")
        dead = tmp_path / temp_name("checkpoint_epoch=2.pt", dead_pid())
        old_other_host = tmp_path / temp_name("model.pt", 12345, host="0badc0de")
        old_live = tmp_path / temp_name("checkpoint_epoch=1.pt", sleeper.pid)
        for p in (live, other_host, dead, old_other_host, old_live):
            p.write_bytes(b"PK\x03\x04 half")
        set_age(old_other_host, 2 * 3600)
        set_age(old_live, 2 * 3600)  # untouched for 2 hours: its pid is alive but can no longer be writing it
        set_age(live, 30 * 60)
        set_age(other_host, 30 * 60)

        during = {}

        def write(tmp: str) -> None:  # another saver of this process cleans while this one is writing
            Path(tmp).write_bytes(b"half")
            during["removed"] = remove_stale_temp_files(tmp_path)
            during["kept"] = Path(tmp).exists()
            Path(tmp).write_bytes(b"whole")

        from monai_patcher.io import atomic_write

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
    stale = tmp_path / temp_name("model.pt", os.getpid())
    stale.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [stale] and not stale.exists()


def test_temp_file_with_the_final_extension_is_removed(tmp_path):
    """``atomic_write(..., suffix=".tmp.nii.gz")`` (the batch-inference masks) names its files
    ``.<name>.<pid>-<host>.<random>.tmp.nii.gz``: the same rules apply to them."""
    dead = tmp_path / (temp_name("case_seg.nii.gz", dead_pid()) + ".nii.gz")
    other_host = tmp_path / (temp_name("case_seg.nii.gz", 12345, host="0badc0de") + ".nii.gz")
    for p in (dead, other_host):
        p.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [dead]
    assert other_host.exists()


def test_old_user_files_named_like_temp_files_are_never_removed(tmp_path):
    """Users' own hidden ``*.tmp`` files, however old, stay (an early rule deleted any ``.<anything>.<8 alnum>.tmp``
    older than an hour, e.g. in the batch-inference ``--output`` folder); names that record no writer (``tempfile``
    names, as an unreleased development version wrote them) are not ours either; our own stale temporary files go."""
    users = {
        ".model.pt.abcd_123.tmp": b"PK\x03\x04 half",  # tempfile names (no pid, no host): not ours
        ".checkpoint_epoch=2.pt.x9y8z7w6.tmp": b"",
        ".old.pt.k3j_9xq2.tmp": b"\x80\x02 legacy pickle",
        ".case1_seg.nii.gz.abcdefgh.tmp.nii.gz": b"\x1f\x8b half",
        ".case1_prob.nii.gz.a_b_c_d_.tmp.nii.gz": b"\x1f\x8b",
        ".summary.json.q1w2e3r4.tmp.json": b'{"counts"',
        ".summary.csv.q1w2e3r4.tmp.csv": b"case,file,status",
        ".thesis.docx.backup01.tmp": b"user data",
        ".results.csv.20240611.tmp": b"case,1",
        ".ckpt.pt.abcdefgh.tmp": b"user data",
        ".model.pt.ABCDEFGH.tmp": b"PK\x03\x04",  # tempfile never makes upper-case names
        ".notes.txt.abcdefgh.tmp": b"",
        ".scan_seg.nii.gz.abcdefgh.tmp": b"\x1f\x8b",
        ".summary.json.abcdefgh.tmp.csv": b"{",
        ".x.1-0badc0de.k3j_9xq2.tmp.docx": b"",  # our scheme only ends in the final name's own extensions
        ".backup.7-20240611.v1.tmp": b"",  # ours have 8 random characters
    }
    ours = {
        temp_name("checkpoint_epoch=2.pt", 12345, host="0badc0de"): b"",  # killed before writing a byte
        temp_name("model.pt", 12345, host="0badc0de"): b"half",  # current scheme, another host
        temp_name("c_seg.nii.gz", 12345, host="0badc0de") + ".nii.gz": b"half",
    }
    for n, content in {**users, **ours}.items():
        (tmp_path / n).write_bytes(content)
        set_age(tmp_path / n, 2 * 3600)
    assert sorted(p.name for p in remove_stale_temp_files(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(users)
    assert all((tmp_path / n).read_bytes() == c for n, c in users.items())

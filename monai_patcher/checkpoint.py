"""Crash-safe checkpoints: atomic writes, safe loading, and training that resumes exactly.

What MONAI 1.6.1 / ignite 0.5 already give, and what this module adds:

- ``monai.handlers.CheckpointLoader`` already loads with ``torch.load(..., weights_only=True)``, so a checkpoint
  carrying pickled code is refused, but with PyTorch's generic message and without the file name.
  :class:`SafeCheckpointLoader` (a drop-in subclass) and :func:`safe_load_checkpoint` turn that, and a
  truncated/corrupt file, into :class:`UnsafeCheckpointError` / :class:`CheckpointError` naming the file.
- ``monai.handlers.CheckpointSaver`` builds on ignite's ``Checkpoint`` + ``DiskSaver`` but passes
  ``atomic=False`` (so ``torch.save`` writes straight into the final file name), and ignite's ``Checkpoint``
  deletes the oldest checkpoint *before* writing the new one (``n_saved=1``: the only good checkpoint is gone
  while the new one is half written). :class:`SafeCheckpointSaver` (a drop-in subclass, same arguments) writes
  every file to a temporary file in the same folder, ``fsync``\\ s it and renames it over the final name
  (:func:`atomic_save`), and removes superseded checkpoints only *after* the new one is complete. A ``kill -9``
  during a save leaves its temporary file behind; the saver deletes such leftovers (and only those) when it
  starts and before every save (:func:`remove_stale_temp_files`).
- Best metric after resume: MONAI keeps the best key-metric value in ``evaluator.state.best_metric`` and a
  key-metric ``CheckpointSaver`` keeps its own list of saved (score, file) pairs; neither is in the trainer's
  checkpoint, so a resumed run starts from ``best_metric = -1`` and its first validation overwrites the best
  model even if it is worse. :class:`BestMetricState` puts both into the trainer's checkpoint
  (``save_dict``/``load_dict``); ``SafeCheckpointLoader(optional_keys=[...])`` still resumes from checkpoints
  written before that key existed.
- Exact resume: ignite restores the epoch/iteration counters (``"trainer"`` in the checkpoint), the optimizer and
  the LR scheduler, but not the random streams, and MONAI's ``DataLoader`` seeds the transforms' random states
  once, when it is built. :class:`EpochSeedHandler` re-seeds everything at the start of every epoch from
  ``(seed, epoch)`` (without touching the cuDNN flags, unlike ``set_determinism``): Python/NumPy/torch global generators (so the shuffling order, dropout and drop-path)
  and the random state of every randomizable transform of the dataset. An epoch's randomness is therefore a
  function of ``(seed, epoch)`` only, and a run killed in epoch ``e`` and resumed from the checkpoint of epoch
  ``e - 1`` redoes epoch ``e`` exactly. :class:`RNGState` additionally carries the generators' states in the
  checkpoint (as tensors, loadable with ``weights_only=True``).

Bundle use (``train.json``)::

    "checkpoint_saver": {"_target_": "monai_patcher.checkpoint.SafeCheckpointSaver", "save_dir": "@ckpt_dir",
                         "save_dict": {...}, "epoch_level": true, "save_interval": 1, "n_saved": 1}
    "checkpoint_loader": {"_target_": "monai_patcher.checkpoint.SafeCheckpointLoader", ...,
                          "optional_keys": ["best_metric"]}
    save_dict/load_dict: "best_metric": {"_target_": "monai_patcher.checkpoint.BestMetricState",
                                         "engine": "@validate#evaluator", "savers": ["@validate#checkpoint_saver"]}
    handlers: {"_target_": "monai_patcher.checkpoint.EpochSeedHandler", "seed": "@seed"}
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import random
import re
import socket
import threading
import time
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.data.utils import set_rnd
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import set_determinism

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "load_error_details",
    "atomic_save",
    "atomic_write",
    "remove_stale_temp_files",
    "safe_load_checkpoint",
    "verify_checkpoint_file",
    "AtomicDiskSaver",
    "SafeCheckpointSaver",
    "SafeCheckpointLoader",
    "EpochSeedHandler",
    "RNGState",
    "BestMetricState",
    "epoch_seed",
    "seed_everything",
    "TMP_SUFFIX",
    "STALE_TMP_SECONDS",
]

logger = logging.getLogger(__name__)

#: temporary files of :func:`atomic_save` are ``.<final name>.<pid>-<host>.<random>.tmp`` in the target folder
#: (``pid``: the writing process, ``host``: 8 hex digits, the CRC-32 of its host name).
TMP_SUFFIX = ".tmp"

#: :func:`remove_stale_temp_files` removes a temporary file whose writer it cannot check (another host, or a
#: live process with the same pid) once it has not been modified for this long (seconds).
STALE_TMP_SECONDS = 3600.0


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (missing, truncated, corrupt); the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds pickled objects other than tensors/containers (possibly code); it was not loaded."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """A readable checkpoint does not fit what it is loaded into (missing/unexpected keys, other tensor shapes, a
    required entry missing); the message names the file and the first mismatches. Also a ``RuntimeError``, the type
    ``load_state_dict`` raises for these, so existing ``except RuntimeError`` handlers still catch it."""


# --------------------------------------------------------------------------------------------------- writing


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# the characters of ``tempfile``'s random names (8 of them; also those of version 0.1.0's temporary files)
_RANDOM_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _create_temp(folder: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """Create ``folder/<prefix><8 random chars><suffix>`` exclusively, with mode ``0o666`` minus the umask.

    Like ``tempfile.mkstemp`` (same names), except that the permissions are those a plain ``open`` gives: the
    kernel applies the process umask, which therefore never has to be read (``os.umask`` can only read it by
    setting it, and a file another thread created meanwhile would get the wrong mode).
    """
    rng = random.SystemRandom()
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(10000):
        name = os.path.join(folder, prefix + "".join(rng.choice(_RANDOM_CHARS) for _ in range(8)) + suffix)
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no usable temporary file name {prefix}XXXXXXXX{suffix}")  # pragma: no cover


def atomic_save(obj: Any, path: str | os.PathLike, save_func: Callable[..., Any] | None = None, **kwargs: Any) -> Path:
    """Write ``obj`` to ``path`` so that ``path`` is always either the old complete file or the new complete one.

    ``save_func(obj, fileobj, **kwargs)`` writes into a temporary file next to ``path``
    (``.<name>.<pid>-<host>.<random>.tmp``), which is flushed, ``fsync``\\ ed and renamed over ``path`` (``os.replace`` is
    atomic on POSIX and Windows); the folder is ``fsync``\\ ed too. If anything fails (an exception, a full disk),
    the temporary file is removed and ``path`` is untouched. A ``kill -9`` at any moment leaves at most a
    stray ``*.tmp`` file, never a partial file under ``path``. The file gets the permissions a plain ``open``
    would give it (``0o666 & ~umask``), not ``tempfile``'s ``0o600``.

    Args:
        obj: what to save (a state dict, a tensor, ...).
        path: final file name.
        save_func: any ``func(obj, binary_file, **kwargs)``; default ``torch.save``.
        kwargs: passed to ``save_func``.

    Returns:
        ``path`` as a ``Path``.
    """
    save_func = torch.save if save_func is None else save_func

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            save_func(obj, f, **kwargs)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], Any], suffix: str = TMP_SUFFIX, overwrite: bool = True
) -> Path:
    """``write(tmp_path)`` into a temporary file next to ``path``, then rename it over ``path`` (see :func:`atomic_save`).

    Args:
        path: final file name.
        write: writes the whole file to the path it is given.
        suffix: ending of the temporary name (e.g. keep ``.nii.gz`` for writers that choose a format by extension).
        overwrite: False: never replace an existing ``path``, not even one another process creates while
            ``write`` runs: the file is published with ``os.link`` (which fails if ``path`` exists) instead of
            ``os.replace``; on file systems without hard links, an existence check just before ``os.replace``
            (a narrow race remains there). The temporary file is removed in every case.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        FileExistsError: ``overwrite=False`` and ``path`` exists (it is left untouched).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "file exists (not overwritten)", str(path))
    with _IN_FLIGHT_LOCK:  # registered before any other thread's remove_stale_temp_files can see it
        fd, tmp = _create_temp(folder, f".{path.name}.{os.getpid()}-{_host_tag()}.", suffix)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        _IN_FLIGHT.add(key)
    os.close(fd)
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    finally:
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.discard(key)
    _fsync_dir(folder)
    return path


def _publish_new(tmp: str, path: Path) -> None:
    """Give the complete file ``tmp`` the name ``path`` only if ``path`` does not exist (atomically where hard links
    exist); ``tmp`` is gone afterwards unless an exception is raised."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "file exists (created while this one was written; not overwritten)",
                              str(path)) from None
    except OSError as e:  # no hard links here (FAT/exFAT, some network file systems): check, then rename
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "file exists (created while this one was written; not overwritten)",
                                  str(path)) from None
        os.replace(tmp, path)
        return
    os.remove(tmp)


# temporary files this process is writing right now, as (st_dev, st_ino): never removed as stale
_IN_FLIGHT: set[tuple[int, int]] = set()
_IN_FLIGHT_LOCK = threading.Lock()
# ``.<name>.<pid>-<host>.<random>.tmp``, optionally followed by the final name's extensions (``atomic_write``'s
# ``suffix``, e.g. ``.tmp.nii.gz`` for the batch-inference masks); ``<random>``: 8 of ``_RANDOM_CHARS``
_TMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})-(?P<host>[0-9a-f]{8})\.[a-z0-9_]{8}" + re.escape(TMP_SUFFIX)
    + r"(?P<ext>(\.[A-Za-z0-9]{1,8}){0,3})$"
)
# Version 0.1.0 named its temporary files ``tempfile.mkstemp(prefix=".<name>.", suffix=...)``, without pid and host:
# ``.<name>.<8 of [a-z0-9_]><suffix>``. Such a name says nothing about its writer, and users keep files named like
# that too, so only the kinds 0.1.0 wrote are considered: checkpoints (``atomic_save``: ``<name>.pt``/``.pth`` +
# ``.tmp``), batch-inference masks (``<case>_seg.nii.gz``/``<case>_prob.nii.gz`` + ``.tmp.nii.gz``) and its
# summaries (``summary.json``/``summary.csv`` + ``.tmp.json``/``.tmp.csv``); and only if the content starts like
# that kind (or the file is empty: killed before writing anything). Removed by age only.
_OLD_TMP_NAME = re.compile(
    r"^\.(?:(?P<pt>.+\.pth?)\.[a-z0-9_]{8}\.tmp"
    r"|(?P<nii>.+_(?:seg|prob)\.nii\.gz)\.[a-z0-9_]{8}\.tmp\.nii\.gz"
    r"|summary\.(?P<summary>json|csv)\.[a-z0-9_]{8}\.tmp\.(?P=summary))$"
)
# how a (partial) file of each kind starts: torch.save's zip archive or a legacy pickle; gzip; our summary.json/csv
_OLD_TMP_MAGIC = {"pt": (b"PK\x03\x04", b"\x80"), "nii": (b"\x1f\x8b",), "json": (b"{",), "csv": (b"case,",)}


def _is_our_old_temp_file(name: str, path: str) -> bool:
    """Whether ``name`` is a temporary file version 0.1.0 of this package wrote (see ``_OLD_TMP_NAME``)."""
    m = _OLD_TMP_NAME.match(name)
    if m is None:
        return False
    kind = "pt" if m["pt"] else "nii" if m["nii"] else m["summary"]
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return not head or head.startswith(_OLD_TMP_MAGIC[kind])


def _is_our_temp_name(m: re.Match) -> bool:
    """The extension after ``.tmp`` is empty or the final name's own (what ``atomic_write`` callers here pass)."""
    return not m["ext"] or m["ext"] == "".join(Path(m["name"]).suffixes)


def _host_tag() -> str:
    """8 hex digits naming this host in temporary file names (CRC-32 of the host name)."""
    return f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')) & 0xFFFFFFFF:08x}"


def _pid_running(pid: int) -> bool | None:
    """Whether process ``pid`` of this host exists (``None``: cannot tell, e.g. on Windows)."""
    if os.name != "posix" or not 0 < pid < 2**31:
        return None
    try:
        os.kill(pid, 0)  # signal 0: existence check only, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return None
    return True


def remove_stale_temp_files(
    folder: str | os.PathLike, stale_after: float = STALE_TMP_SECONDS, log: logging.Logger | None = None
) -> list[Path]:
    """Delete the temporary files that :func:`atomic_save` left in ``folder`` when its process was killed.

    Only files named exactly like :func:`atomic_save`'s / :func:`atomic_write`'s temporary files,
    ``.<name>.<pid>-<host>.<random>.tmp[<ext>]`` (``<random>``: 8 of ``[a-z0-9_]``; ``<ext>``: nothing or the
    extensions of ``<name>``, e.g. ``.nii.gz``), directly in ``folder``, are considered (never a checkpoint,
    another file or a subfolder). One is deleted when no running process can still be writing it:

    - it was written on this host (same ``<host>``) by a process ``<pid>`` that no longer exists, or by this
      process's pid while this process is not writing it (an earlier process that had the same pid); or
    - it has not been modified for ``stale_after`` seconds (default :data:`STALE_TMP_SECONDS`, one hour): files
      from another host (e.g. a job moved to another node), or whose pid now belongs to another process.

    Temporary files of version 0.1.0 (``.<name>.<random><suffix>``, no writer recorded) are deleted by the age rule
    only, and only of the kinds 0.1.0 wrote, with the content that kind starts with (or empty): checkpoints
    ``.<name>.pt.<random>.tmp`` (zip or pickle data), masks ``.<case>_seg.nii.gz.<random>.tmp.nii.gz`` /
    ``_prob`` (gzip data), ``.summary.json.<random>.tmp.json`` / ``.summary.csv.<random>.tmp.csv``. A user's
    ``.thesis.docx.backup01.tmp`` or ``.results.csv.20240611.tmp`` is never touched, however old.

    A writer's own temporary file therefore survives: another saver (another rank of the same host, another
    process, another thread of this process) never deletes a temporary file that is being written. This
    assumes the processes of one host that write into ``folder`` see each other's pids (one pid namespace:
    true for ``torchrun`` ranks and the processes of one machine or container).

    Args:
        folder: the checkpoint folder (a missing folder is fine).
        stale_after: age (seconds since the last modification) after which a temporary file is removed whatever
            its writer.
        log: where to log each removal (warning level); default the ``monai_patcher.checkpoint`` logger.

    Returns:
        the removed files.
    """
    log = logger if log is None else log
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    host, me, now = _host_tag(), os.getpid(), time.time()
    removed: list[Path] = []
    for entry in entries:
        m = _TMP_NAME.match(entry.name)
        if m is not None and not _is_our_temp_name(m):
            m = None
        old_scheme = m is None and _OLD_TMP_NAME.match(entry.name) is not None
        if m is None and not old_scheme:
            continue
        with _IN_FLIGHT_LOCK:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not entry.is_file(follow_symlinks=False) or (st.st_dev, st.st_ino) in _IN_FLIGHT:
                continue
            age = now - st.st_mtime
            reason = None
            if old_scheme:
                if age > stale_after and _is_our_old_temp_file(entry.name, entry.path):
                    reason = f"not modified for {age / 60:.0f} min (an older version's temporary file)"
            elif m["host"] == host and int(m["pid"]) == me:
                reason = f"left by an earlier process with this process's pid {me}"
            elif m["host"] == host and _pid_running(int(m["pid"])) is False:
                reason = f"its writer, process {m['pid']} of this host, is no longer running"
            elif age > stale_after:
                reason = f"not modified for {age / 60:.0f} min (written by process {m['pid']} on host tag {m['host']})"
            if reason is None:
                continue
            try:
                os.remove(entry.path)
            except FileNotFoundError:
                continue
        removed.append(Path(entry.path))
        log.warning(f"removed stale temporary file {entry.path} ({reason}; a save was interrupted)")
    return removed


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that writes with :func:`atomic_save` and deletes superseded files only afterwards.

    ignite's ``Checkpoint`` calls ``remove(old)`` *before* ``__call__(new)``; here ``remove`` only marks the
    file, and marked files are deleted after the next checkpoint has been written completely. So a crash
    during a save always leaves the previous checkpoint on disk. Before every save, the temporary files that
    killed savers left in the folder are deleted (:func:`remove_stale_temp_files`; never a file another
    process is still writing). Only the rank ``save_on_rank`` (default 0) writes and cleans.

    Args:
        dirname: folder of the checkpoints (created if needed).
        filename: a fixed file name to use instead of ignite's (MONAI's ``key_metric_filename``/``final_filename``).
        kwargs: passed to ``torch.save``.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False, **kwargs)
        self.filename = filename
        self._pending_removal: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:  # distributed training: one rank writes (as DiskSaver)
            return
        name = self.filename or filename
        remove_stale_temp_files(self.dirname)
        atomic_save(checkpoint, self.dirname / name, **self.kwargs)
        pending, self._pending_removal = self._pending_removal, []
        for old in pending:
            if old != name:
                try:
                    (self.dirname / old).unlink()
                except FileNotFoundError:
                    pass

    def remove(self, filename: str) -> None:
        name = self.filename or filename
        if name not in self._pending_removal:
            self._pending_removal.append(name)

    def remove_stale_temp_files(self) -> list[Path]:
        """:func:`remove_stale_temp_files` of the folder, on the saving rank only."""
        if idist.get_rank() != self.save_on_rank:
            return []
        return remove_stale_temp_files(self.dirname)


class SafeCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` with crash-safe files: same arguments, same file names, same events.

    Every checkpoint it writes (interval, key-metric, final) goes through :class:`AtomicDiskSaver`: temporary
    file + ``fsync`` + rename, and a superseded checkpoint is deleted only after its successor is complete.
    When the engine starts, and before every save, it deletes the temporary files that a killed save left in
    ``save_dir`` (:func:`remove_stale_temp_files`: only its own ``.<name>.<pid>-<host>.<random>.tmp`` files,
    and only those no running process is writing), on the saving rank only, and logs each one.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, save_dict=save_dict, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                fixed = getattr(ckpt.save_handler, "filename", None)
                ckpt.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed)

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if not engine.has_event_handler(self.remove_stale_temp_files, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.remove_stale_temp_files)

    def remove_stale_temp_files(self, engine: Engine | None = None) -> list[Path]:
        """Delete the temporary files killed saves left in ``save_dir`` (:func:`remove_stale_temp_files`), on the saving rank."""
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:  # they all share save_dir
                return ckpt.save_handler.remove_stale_temp_files()
        return []


# --------------------------------------------------------------------------------------------------- loading


def verify_checkpoint_file(path: str | os.PathLike) -> None:
    """Check that ``path`` is a complete checkpoint whose stored CRC-32 checksums match its contents.

    ``torch.save`` writes a zip archive with a CRC-32 per record, but ``torch.load`` does not check them, so a
    bit flip in the tensor data (a bad disk, a bad copy) would load silently. This reads every record once
    (about 1 s per GB). Legacy (non-zip) checkpoints cannot be verified and are let through.

    Raises:
        CheckpointError: missing, empty, truncated file, or a record whose checksum does not match.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise CheckpointError(f"{p}: checkpoint file does not exist")
    if os.path.getsize(p) == 0:
        raise CheckpointError(f"{p}: checkpoint file is empty (0 bytes); was the save interrupted?")
    with open(p, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return  # legacy pickle format: torch.load(weights_only=True) still checks what it can
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as e:
        raise _corrupt(p, e) from None
    if bad is not None:
        raise CheckpointError(f"{p}: corrupt checkpoint: the checksum of record {bad!r} does not match its data")


def safe_load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", verify: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what is wrong.

    Only tensors, numbers, strings and containers of them are unpickled (``weights_only=True``), so a
    checkpoint whose pickle would import a module or call a function is refused *before* anything runs.

    Args:
        path: checkpoint file.
        map_location: as for ``torch.load`` (default ``"cpu"``).
        verify: first check the file's checksums (:func:`verify_checkpoint_file`), so corrupted tensor data
            is not loaded silently.

    Raises:
        UnsafeCheckpointError: the file holds pickled objects that are not plain data (possibly code).
        CheckpointError: missing, empty, truncated, corrupt (checksum mismatch) or otherwise unreadable file.
    """
    p = os.fspath(path)
    if verify:
        verify_checkpoint_file(p)
    elif not os.path.isfile(p) or os.path.getsize(p) == 0:
        verify_checkpoint_file(p)  # the clear error
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _unpickling_error(p, e) from None
    except Exception as e:  # torch/zip/pickle raise many types on damaged files (RuntimeError, EOFError, ...)
        raise _corrupt(p, e) from None


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:  # PyTorch's message says which global was refused on one of its lines
        if "GLOBAL" in ln or "Unsupported" in ln:
            return ln
    return lines[0] if lines else type(e).__name__


def load_error_details(e: BaseException, max_lines: int = 3, max_chars: int = 300) -> str:
    """The useful part of a ``load_state_dict`` error, on one line: its first ``max_lines`` missing-key /
    unexpected-key / size-mismatch lines (each cut to ``max_chars``), without PyTorch's
    ``Error(s) in loading state_dict for ...:`` header; other errors: their first line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    if not lines:
        return type(e).__name__
    shown = [ln if len(ln) <= max_chars else ln[: max_chars - 3] + "..." for ln in lines[:max_lines]]
    more = f" (and {len(lines) - max_lines} more)" if len(lines) > max_lines else ""
    return "; ".join(shown) + more


def _unpickling_error(path: str, e: BaseException) -> CheckpointError:
    """A refused global/callable -> UnsafeCheckpointError; a malformed pickle stream -> CheckpointError."""
    msg = str(e)
    if "GLOBAL" in msg or "global" in msg.split("\n", 1)[-1] or "unrecognized function" in msg:
        return UnsafeCheckpointError(
            f"{path}: refused to load this checkpoint: it contains pickled objects other than tensors and plain "
            f"containers, which could run arbitrary code when loaded ({_first_line(e)}). Only load it with "
            "weights_only=False if you fully trust its origin, and re-save its state_dicts."
        )
    return _corrupt(path, e)


def _corrupt(path: str, e: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a readable PyTorch checkpoint (truncated, corrupt, or not written by torch.save?): "
        f"{type(e).__name__}: {_first_line(e)}"
    )


class SafeCheckpointLoader(CheckpointLoader):
    """MONAI ``CheckpointLoader`` (which loads with ``weights_only=True``) with clear errors naming the file.

    Same arguments as ``CheckpointLoader``, plus ``optional_keys``. The file's checksums are verified first
    (:func:`verify_checkpoint_file`). An unsafe checkpoint raises :class:`UnsafeCheckpointError`, a
    missing/truncated/corrupt one :class:`CheckpointError`, instead of PyTorch's generic messages (or silently
    corrupted weights).

    Args:
        optional_keys: keys of ``load_dict`` that a checkpoint may lack (e.g. an entry added to ``save_dict``
            after the checkpoint was written): their objects are then left as they are and this is logged.
            Every other key must be in the checkpoint: ignite's ``Checkpoint.load_objects`` raises for a missing
            key whatever ``strict`` says (``strict`` only applies inside ``nn.Module.load_state_dict``).
        args, kwargs: as for MONAI's ``CheckpointLoader``.
    """

    def __init__(self, *args: Any, optional_keys: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optional_keys = [optional_keys] if isinstance(optional_keys, str) else list(optional_keys)

    def __call__(self, engine: Engine) -> None:
        p = os.fspath(self.load_path)
        verify_checkpoint_file(p)
        legacy = not zipfile.is_zipfile(p)
        if legacy:  # legacy format, no checksums: a damaged one raises anything; check it first
            content = safe_load_checkpoint(p, verify=False)
        load_dict = self.load_dict
        try:
            if self.optional_keys:
                if not legacy:  # only the keys are needed: map the tensors instead of reading them
                    content = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
                present = set(content) if isinstance(content, Mapping) else set()
                missing = [k for k in self.optional_keys if k in load_dict and k not in present]
                if missing and len(missing) < len(load_dict):
                    self.load_dict = {k: v for k, v in load_dict.items() if k not in missing}
                    self.logger.info(f"{p} has no {missing} (written before they were saved): left as they are")
            super().__call__(engine)
        except pickle.UnpicklingError as e:
            raise _unpickling_error(p, e) from None
        except (EOFError, zipfile.BadZipFile) as e:
            raise _corrupt(p, e) from None
        except CheckpointError:
            raise
        except RuntimeError as e:
            if "PytorchStreamReader" in str(e) or "zip archive" in str(e):
                raise _corrupt(p, e) from None
            if "state_dict" in str(e):  # load_state_dict: missing/unexpected keys, size mismatch
                raise CheckpointMismatchError(
                    f"{p}: this checkpoint's weights do not fit the objects to load ({load_error_details(e)})"
                ) from e
            raise
        except ValueError as e:  # ignite's Checkpoint.load_objects: "Key 'x' from ... is not found in ..."
            m = re.search(r"Key '(?P<key>.+?)' from .* is not found in \S+: (?P<have>.*)", str(e))
            if m is not None:
                raise CheckpointMismatchError(
                    f"{p}: the checkpoint has no entry {m['key']!r} to load (it holds {m['have'][:300]}); "
                    "list the key in optional_keys if checkpoints may lack it"
                ) from e
            raise
        finally:
            self.load_dict = load_dict


# --------------------------------------------------------------------------------------------------- randomness


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed`` on process ``rank`` (distinct for every triple; < 2**31).

    Ranks of a distributed run get different seeds (different augmentations); a ``DistributedSampler`` shuffles
    with its own seed and ``set_epoch``, consistently across ranks.
    """
    entropy = [int(seed), int(epoch)] + ([int(rank)] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0] >> 1)


def seed_everything(seed: int) -> None:
    """``monai.utils.set_determinism(seed=seed)`` (Python, NumPy and torch generators, MONAI's ``get_seed()``),
    leaving the cuDNN flags as they were: ``set_determinism`` also sets ``torch.backends.cudnn.deterministic = True``
    and ``benchmark = False``, which, called every epoch, would override a user's ``cudnn.benchmark = True``.
    Determinism settings stay the user's choice (``set_determinism`` once at start-up,
    ``torch.use_deterministic_algorithms``)."""
    cudnn = torch.backends.cudnn
    deterministic, benchmark = cudnn.deterministic, cudnn.benchmark
    set_determinism(seed=seed)
    cudnn.deterministic, cudnn.benchmark = deterministic, benchmark


class EpochSeedHandler:
    """Make every epoch's randomness a function of ``(seed, epoch)``, so resuming from an epoch checkpoint is exact.

    At ``EPOCH_STARTED`` it calls :func:`seed_everything` ``(epoch_seed(seed, epoch))`` (Python, NumPy and torch
    global generators, seeded as ``monai.utils.set_determinism`` seeds them but leaving the cuDNN flags as the
    user set them: the ``DataLoader`` shuffling order and the worker seeds, dropout, drop-path) and
    ``monai.data.utils.set_rnd`` on the training dataset (the random state of every randomizable transform,
    which MONAI's ``DataLoader`` otherwise seeds only once, when it is built). ignite creates the epoch's data
    iterator after ``EPOCH_STARTED``, so the batches are re-seeded too; with ``num_workers > 0`` MONAI's
    ``worker_init_fn`` seeds the workers' transforms from a seed drawn from the (re-seeded) torch generator.

    Attach it to the trainer (e.g. first in ``train_handlers``). On CPU, with the same thread count, a run
    killed mid-epoch and resumed from the last epoch checkpoint then ends with the same weights as an
    uninterrupted one (``tests/test_checkpoint.py``).

    Args:
        seed: the run's seed.
        dataset: the dataset whose transforms to re-seed; default: ``engine.data_loader.dataset`` (MONAI
            workflows) or ``engine.state.dataloader.dataset``.
    """

    def __init__(self, seed: int = 0, dataset: Any = None) -> None:
        self.seed = int(seed)
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def _dataset(self, engine: Engine) -> Any:
        if self.dataset is not None:
            return self.dataset
        loader = getattr(engine, "data_loader", None) or getattr(engine.state, "dataloader", None)
        return getattr(loader, "dataset", None)

    def __call__(self, engine: Engine) -> None:
        s = epoch_seed(self.seed, engine.state.epoch, idist.get_rank())
        seed_everything(s)
        dataset = self._dataset(engine)
        if dataset is not None:
            set_rnd(dataset, s)


class RNGState:
    """The Python, NumPy and torch (CPU and CUDA) generator states as a checkpointable object.

    Put it in ``save_dict``/``load_dict`` (``"rng": RNGState()``): ``state_dict()`` returns tensors and plain
    numbers only, so the checkpoint stays loadable with ``weights_only=True``; ``load_state_dict`` restores the
    generators. (With :class:`EpochSeedHandler` the generators are re-seeded at each epoch start anyway; this
    keeps the state for anything that runs between loading and the first epoch.)
    """

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state: dict[str, Any] = {
            "python": torch.tensor(internal, dtype=torch.int64),
            "python_version": int(version),
            "python_gauss": gauss,
            "numpy_name": str(name),
            "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "numpy_pos": int(pos),
            "numpy_has_gauss": int(has_gauss),
            "numpy_cached_gaussian": float(cached),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():  # pragma: no cover - CPU machine
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        random.setstate((int(state["python_version"]), tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
        np.random.set_state(
            (
                state["numpy_name"],
                state["numpy_keys"].numpy().astype(np.uint32),
                int(state["numpy_pos"]),
                int(state["numpy_has_gauss"]),
                float(state["numpy_cached_gaussian"]),
            )
        )
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():  # pragma: no cover
            torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------- best metric


def _plain_saved(ckpt: Any) -> list[tuple[Any, str]]:
    """ignite ``Checkpoint``'s tracking list as plain ``(score, file)`` pairs (loadable with ``weights_only=True``)."""
    return [(p if isinstance(p, int) else float(p), str(f)) for p, f in ckpt.state_dict()["_saved"]]


class BestMetricState:
    """The best key metric of a MONAI workflow (e.g. the validation evaluator) as a checkpointable object.

    MONAI keeps the best key-metric value in ``engine.state.best_metric`` / ``best_metric_epoch``, and each
    key-metric ``CheckpointSaver`` (``save_key_metric=True``, e.g. ``model.pt``) keeps its own list of the
    ``(score, file)`` pairs it has saved, which decides whether a new score is saved. Neither is in the
    trainer's checkpoint, so after a resume the evaluator starts from ``best_metric = -1`` and the saver from an
    empty list: the first validation overwrites the best model even if it is worse. Put this object in the
    trainer's ``save_dict`` and ``load_dict`` (and in the loader's ``optional_keys``, so checkpoints written
    without it still resume)::

        "best_metric": {"_target_": "monai_patcher.checkpoint.BestMetricState",
                        "engine": "@validate#evaluator", "savers": ["@validate#checkpoint_saver"]}

    ``state_dict()`` holds the best value and epoch and every saver's tracking list (plain numbers and strings:
    loadable with ``weights_only=True``); ``load_state_dict`` restores them. A tracked file that is no longer
    on disk is dropped from its saver's list, so the next validation writes it again.

    (MONAI's own ``key_metric_save_state=True`` stores a saver's list inside the key-metric file itself
    (``model.pt``), not in the checkpoint a training run resumes from.)

    Args:
        engine: the workflow whose ``state.best_metric`` / ``best_metric_epoch`` to keep (a MONAI evaluator or trainer).
        savers: key-metric ``CheckpointSaver``\\ s attached to ``engine`` whose tracking lists to keep.
    """

    def __init__(self, engine: Engine, savers: Sequence[CheckpointSaver] | CheckpointSaver | None = None) -> None:
        self.engine = engine
        if savers is None:
            savers = []
        self.savers = [savers] if isinstance(savers, CheckpointSaver) else list(savers)

    def state_dict(self) -> dict[str, Any]:
        st = self.engine.state
        best = getattr(st, "best_metric", -1)
        return {
            "best_metric": float(best.item() if isinstance(best, torch.Tensor) else best),
            "best_metric_epoch": int(getattr(st, "best_metric_epoch", -1)),
            "savers": [[] if s._key_metric_checkpoint is None else _plain_saved(s._key_metric_checkpoint) for s in self.savers],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.engine.state.best_metric = float(state["best_metric"])
        self.engine.state.best_metric_epoch = int(state["best_metric_epoch"])
        saved_lists = list(state.get("savers", []))
        if len(saved_lists) != len(self.savers):
            logger.warning(f"BestMetricState: {len(saved_lists)} saver lists in the checkpoint, {len(self.savers)} savers")
        for saver, saved in zip(self.savers, saved_lists):
            ckpt = saver._key_metric_checkpoint
            if ckpt is None:
                continue
            handler = ckpt.save_handler
            folder, fixed = getattr(handler, "dirname", None), getattr(handler, "filename", None)
            kept = [(p, f) for p, f in saved if folder is None or (Path(folder) / (fixed or f)).exists()]
            ckpt.load_state_dict({"_saved": kept})


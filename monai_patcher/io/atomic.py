"""Atomic files: a file is always either its old complete version or its new complete one.

``torch.save`` (and most writers) write straight into the final file name, so a crash, a full disk or a
``kill -9`` half-way leaves a partial file there. :func:`atomic_write` / :func:`atomic_save` write into a
temporary file next to the target, ``fsync`` it and rename it over the target (``os.replace`` is atomic);
:func:`remove_stale_temp_files` deletes the temporary files that killed writers left behind, and only those no
running process can still be writing. Checkpoint savers (:class:`~monai_patcher.handlers.SafeCheckpointSaver`) and
the batch-inference CLI write every file this way.

Example:
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> path = atomic_save({"w": torch.zeros(2)}, f"{folder}/model.pt")
    >>> remove_stale_temp_files(folder)  # nothing left behind by a complete save
    []
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import socket
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_save", "atomic_write", "remove_stale_temp_files", "TMP_SUFFIX", "STALE_TMP_SECONDS"]

logger = logging.getLogger(__name__)


#: temporary files of :func:`atomic_save` are ``.<final name>.<pid>-<host>.<random>.tmp`` in the target folder
#: (``pid``: the writing process, ``host``: 8 hex digits, the CRC-32 of its host name).
TMP_SUFFIX = ".tmp"

#: :func:`remove_stale_temp_files` removes a temporary file whose writer it cannot check (another host, or a
#: live process with the same pid) once it has not been modified for this long (seconds).
STALE_TMP_SECONDS = 3600.0


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



# the characters of ``tempfile``'s random names (8 of them)
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

    A user's ``.thesis.docx.backup01.tmp`` or ``.results.csv.20240611.tmp`` is never touched, however old.

    A writer's own temporary file therefore survives: another saver (another rank of the same host, another
    process, another thread of this process) never deletes a temporary file that is being written. This
    assumes the processes of one host that write into ``folder`` see each other's pids (one pid namespace:
    true for ``torchrun`` ranks and the processes of one machine or container).

    Args:
        folder: the checkpoint folder (a missing folder is fine).
        stale_after: age (seconds since the last modification) after which a temporary file is removed whatever
            its writer.
        log: where to log each removal (warning level); default the ``monai_patcher.io.atomic`` logger.

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
        if m is None or not _is_our_temp_name(m):
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
            if m["host"] == host and int(m["pid"]) == me:
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

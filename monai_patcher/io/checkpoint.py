"""Checkpoints loaded safely: only plain data is unpickled, damaged files are caught, errors name the file.

``torch.load(..., weights_only=True)`` refuses pickled code, but with PyTorch's generic message and without the
file name, and it does not check the CRC-32 checksums ``torch.save`` writes, so a bit flip in the tensor data
loads silently. :func:`safe_load_checkpoint` verifies the checksums first (:func:`verify_checkpoint_file`) and
turns every failure into a :class:`CheckpointError` (:class:`UnsafeCheckpointError` for pickled code) naming the
file. :class:`~monai_patcher.handlers.SafeCheckpointLoader` does the same inside an Ignite engine.

This module is the home of what a checkpoint is and how it is read; how it is written atomically is
:mod:`monai_patcher.io.atomic`.

Example:
    >>> import tempfile, torch
    >>> path = f"{tempfile.mkdtemp()}/model.pt"
    >>> torch.save({"model": torch.nn.Linear(2, 1).state_dict()}, path)
    >>> sorted(safe_load_checkpoint(path)["model"])
    ['bias', 'weight']
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "CheckpointMismatchError",
    "verify_checkpoint_file",
    "safe_load_checkpoint",
    "checkpoint_load_error",
    "load_error_details",
    "latest_checkpoint",
]


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (missing, truncated, corrupt); the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds pickled objects other than tensors/containers (possibly code); it was not loaded."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """A readable checkpoint does not fit what it is loaded into (missing/unexpected keys, other tensor shapes, a
    required entry missing); the message names the file and the first mismatches. Also a ``RuntimeError``, the type
    ``load_state_dict`` raises for these, so existing ``except RuntimeError`` handlers still catch it."""


def verify_checkpoint_file(path: str | os.PathLike) -> None:
    """Check that ``path`` is a complete checkpoint whose stored CRC-32 checksums match its contents.

    ``torch.save`` writes a zip archive with a CRC-32 per record, but ``torch.load`` does not check them, so a
    bit flip in the tensor data (a bad disk, a bad copy) would load silently. This reads every record once.
    Legacy (non-zip) checkpoints cannot be verified and are let through.

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
    except Exception as e:  # torch/zip/pickle raise many types on damaged files (RuntimeError, EOFError, ...)
        raise checkpoint_load_error(p, e) from None


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


def checkpoint_load_error(path: str, e: BaseException) -> CheckpointError:
    """The :class:`CheckpointError` for an exception raised while loading the checkpoint ``path``.

    A pickle that tried to load a global or call a function (refused by ``weights_only=True``) gives an
    :class:`UnsafeCheckpointError`; anything else (a malformed pickle stream, a truncated zip archive) a
    :class:`CheckpointError` saying the file is not a readable checkpoint. Both name the file.

    Args:
        path: the checkpoint file.
        e: the exception ``torch.load`` (or the zip/pickle layers under it) raised.
    """
    msg = str(e)
    if isinstance(e, pickle.UnpicklingError) and (
        "GLOBAL" in msg or "global" in msg.split("\n", 1)[-1] or "unrecognized function" in msg
    ):
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


def latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> str:
    """The checkpoint with the highest epoch number in ``ckpt_dir`` (written by ``CheckpointSaver``).

    Args:
        ckpt_dir: folder of the checkpoints.
        pattern: glob of the interval checkpoints; the number in the name orders them.

    Raises:
        FileNotFoundError: there is no such checkpoint (nothing to resume from).
    """
    paths = glob.glob(os.path.join(os.fspath(ckpt_dir), pattern))
    if not paths:
        raise FileNotFoundError(
            f"resume is true but there is no checkpoint matching {pattern!r} in {ckpt_dir}: train once without "
            "--resume (or point --ckpt_dir to the folder of a previous run)."
        )

    def _num(p: str) -> int:
        m = re.findall(r"(\d+)", Path(p).name)
        return int(m[-1]) if m else -1

    return max(paths, key=lambda p: (_num(p), os.path.getmtime(p)))

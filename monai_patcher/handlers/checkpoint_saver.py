"""Crash-safe checkpoint saving for Ignite: :class:`SafeCheckpointSaver` and its :class:`AtomicDiskSaver`.

``monai.handlers.CheckpointSaver`` builds on ignite's ``Checkpoint`` + ``DiskSaver`` but passes ``atomic=False``
(so ``torch.save`` writes straight into the final file name), and ignite's ``Checkpoint`` deletes the oldest
checkpoint *before* writing the new one (``n_saved=1``: the only good checkpoint is gone while the new one is half
written). :class:`SafeCheckpointSaver` (a drop-in subclass, same arguments) writes every file to a temporary file
in the same folder, ``fsync``\\ s it and renames it over the final name (:func:`~monai_patcher.io.atomic_save`),
and removes superseded checkpoints only *after* the new one is complete. A ``kill -9`` during a save leaves its
temporary file behind; the saver deletes such leftovers (and only those) when it starts and before every save
(:func:`~monai_patcher.io.remove_stale_temp_files`).

Bundle use (``train.json``)::

    "checkpoint_saver": {"_target_": "monai_patcher.handlers.SafeCheckpointSaver", "save_dir": "@ckpt_dir",
                         "save_dict": {...}, "epoch_level": true, "save_interval": 1, "n_saved": 1}
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointSaver

from ..io.atomic import atomic_save, remove_stale_temp_files
from .checkpoint_loader import take_resumed_checkpoint

__all__ = ["SafeCheckpointSaver", "AtomicDiskSaver"]

logger = logging.getLogger(__name__)


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that writes with :func:`~monai_patcher.io.atomic_save` and deletes superseded files only afterwards.

    ignite's ``Checkpoint`` calls ``remove(old)`` *before* ``__call__(new)``; here ``remove`` only marks the
    file, and marked files are deleted after the next checkpoint has been written completely. So a crash
    during a save always leaves the previous checkpoint on disk. Before every save, the temporary files that
    killed savers left in the folder are deleted (:func:`~monai_patcher.io.remove_stale_temp_files`; never a file another
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
        """:func:`~monai_patcher.io.remove_stale_temp_files` of the folder, on the saving rank only."""
        if idist.get_rank() != self.save_on_rank:
            return []
        return remove_stale_temp_files(self.dirname)


class SafeCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` with crash-safe files: same arguments, same file names, same events.

    Every checkpoint it writes (interval, key-metric, final) goes through :class:`AtomicDiskSaver`: temporary
    file + ``fsync`` + rename, and a superseded checkpoint is deleted only after its successor is complete.
    When the engine starts, and before every save, it deletes the temporary files that a killed save left in
    ``save_dir`` (:func:`~monai_patcher.io.remove_stale_temp_files`: only its own ``.<name>.<pid>-<host>.<random>.tmp`` files,
    and only those no running process is writing), on the saving rank only, and logs each one.

    After a resume (:class:`~monai_patcher.handlers.SafeCheckpointLoader` on the same engine), the interval checkpoint
    the run resumed from counts as one of this saver's own, if it is in ``save_dir`` and named as this saver names
    them (e.g. ``checkpoint_epoch=3.pt``): with ``n_saved=1`` it is deleted once the next checkpoint is completely
    written (before, every resume left it behind).
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

    def interval_completed(self, engine: Engine) -> None:
        """MONAI's interval save, after adopting the checkpoint the engine resumed from (see the class docstring)."""
        resumed = take_resumed_checkpoint(engine)
        if resumed is not None:
            self._adopt(Path(resumed))
        super().interval_completed(engine)

    def _adopt(self, path: Path) -> None:
        """Put ``path`` into the interval checkpoint's list of saved files, so that ``n_saved`` applies to it."""
        ckpt = self._interval_checkpoint
        if ckpt is None or Path(self.save_dir).resolve() != path.parent.resolve():
            return
        name = next(iter(ckpt.to_save)) if len(ckpt.to_save) == 1 else "checkpoint"
        stem = f"{ckpt.filename_prefix}{'_' if ckpt.filename_prefix else ''}{name}_{ckpt.score_name}="
        m = re.fullmatch(re.escape(stem) + r"(?P<step>[0-9]+)\." + re.escape(ckpt.ext.lstrip(".")), path.name)
        if m is None or any(item.filename == path.name for item in ckpt._saved):
            return
        ckpt._saved.append(Checkpoint.Item(int(m["step"]), path.name))
        ckpt._saved.sort(key=lambda item: item.priority)
        logger.info(f"resumed from {path}: deleted once a newer checkpoint is written (n_saved={ckpt.n_saved})")

    def remove_stale_temp_files(self, engine: Engine | None = None) -> list[Path]:
        """Delete the temporary files killed saves left in ``save_dir`` (:func:`~monai_patcher.io.remove_stale_temp_files`), on the saving rank."""
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:  # they all share save_dir
                return ckpt.save_handler.remove_stale_temp_files()
        return []

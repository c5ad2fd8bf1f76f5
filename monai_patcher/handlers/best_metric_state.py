"""The best key metric of a MONAI workflow as a checkpointable object: :class:`BestMetricState`.

MONAI keeps the best key-metric value in ``evaluator.state.best_metric`` and a key-metric ``CheckpointSaver`` keeps
its own list of saved (score, file) pairs; neither is in the trainer's checkpoint, so a resumed run starts from
``best_metric = -1`` and its first validation overwrites the best model even if it is worse.
:class:`BestMetricState` puts both into the trainer's checkpoint (``save_dict``/``load_dict``);
``SafeCheckpointLoader(optional_keys=[...])`` still resumes from checkpoints written before that key existed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointSaver

__all__ = ["BestMetricState"]

logger = logging.getLogger(__name__)


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

        "best_metric": {"_target_": "monai_patcher.handlers.BestMetricState",
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

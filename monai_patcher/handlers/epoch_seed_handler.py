"""Exact resume: :class:`EpochSeedHandler` makes every epoch's randomness a function of ``(seed, epoch)``.

ignite restores the epoch/iteration counters (``"trainer"`` in the checkpoint), the optimizer and the LR
scheduler, but not the random streams, and MONAI's ``DataLoader`` seeds the transforms' random states once, when it
is built. The handler re-seeds everything at the start of every epoch (see :mod:`monai_patcher.seeding`), so a
run killed in epoch ``e`` and resumed from the checkpoint of epoch ``e - 1`` redoes epoch ``e`` exactly.

Bundle use (``train.json``)::

    "handlers": [{"_target_": "monai_patcher.handlers.EpochSeedHandler", "seed": "@seed"}, ...]
"""

from __future__ import annotations

from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd

from ..seeding import epoch_seed, seed_everything

__all__ = ["EpochSeedHandler"]


class EpochSeedHandler:
    """Make every epoch's randomness a function of ``(seed, epoch)``, so resuming from an epoch checkpoint is exact.

    At ``EPOCH_STARTED`` it calls :func:`~monai_patcher.seeding.seed_everything` ``(epoch_seed(seed, epoch))`` (Python, NumPy and torch
    global generators, seeded as ``monai.utils.set_determinism`` seeds them but leaving the cuDNN flags as the
    user set them: the ``DataLoader`` shuffling order and the worker seeds, dropout, drop-path) and
    ``monai.data.utils.set_rnd`` on the training dataset (the random state of every randomizable transform,
    which MONAI's ``DataLoader`` otherwise seeds only once, when it is built). ignite creates the epoch's data
    iterator after ``EPOCH_STARTED``, so the batches are re-seeded too; with ``num_workers > 0`` MONAI's
    ``worker_init_fn`` seeds the workers' transforms from a seed drawn from the (re-seeded) torch generator.

    Attach it to the trainer (e.g. first in ``train_handlers``). On CPU, with the same thread count, a run
    killed mid-epoch and resumed from the last epoch checkpoint then ends with the same weights as an
    uninterrupted one (``tests/handlers/test_epoch_seed_handler.py``).

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

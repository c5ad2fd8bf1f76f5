"""Reproducibility: per-epoch seeds, seeding every generator, and the generators' state as checkpoint data.

- :func:`epoch_seed`: the seed of an epoch of a run (and of a rank of a distributed run);
- :func:`seed_everything`: ``monai.utils.set_determinism(seed)`` without touching the cuDNN flags;
- :class:`RNGState`: the Python, NumPy and torch generator states as a ``state_dict`` of tensors and numbers
  (loadable with ``weights_only=True``), for a checkpoint's ``save_dict``/``load_dict``.

The Ignite handler that applies them at every epoch start is :class:`~monai_patcher.handlers.EpochSeedHandler`.

Example:
    >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
    True
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.utils import set_determinism

__all__ = ["epoch_seed", "seed_everything", "RNGState"]


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


class RNGState:
    """The Python, NumPy and torch (CPU and CUDA) generator states as a checkpointable object.

    Put it in ``save_dict``/``load_dict`` (``"rng": RNGState()``): ``state_dict()`` returns tensors and plain
    numbers only, so the checkpoint stays loadable with ``weights_only=True``; ``load_state_dict`` restores the
    generators. (With :class:`~monai_patcher.handlers.EpochSeedHandler` the generators are re-seeded at each epoch start anyway; this
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

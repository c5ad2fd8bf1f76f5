"""Reproducibility helpers (monai_patcher/seeding.py): epoch seeds and the generators' state as checkpoint data."""

from __future__ import annotations


import torch

from monai_patcher.io import atomic_save, safe_load_checkpoint
from monai_patcher.seeding import RNGState, epoch_seed


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


def test_epoch_seed_differs_between_ranks_and_is_stable_per_rank():
    """``epoch_seed`` lives in ``monai_patcher.seeding``; the bundles' ``EpochSeedHandler`` calls it with the
    process rank (``multi_gpu_train.json``): ranks must not share augmentations, a rank must repeat its own."""
    from monai_patcher.seeding import epoch_seed

    for seed, epoch in [(0, 0), (0, 1), (7, 3), (12345, 99)]:
        by_rank = [epoch_seed(seed, epoch, rank) for rank in range(8)]
        assert len(set(by_rank)) == 8, (seed, epoch, by_rank)
        assert by_rank == [epoch_seed(seed, epoch, rank) for rank in range(8)]  # same rank, same seed
        assert by_rank[0] == epoch_seed(seed, epoch)  # rank 0 is the single-process seed (resume compatibility)
        assert all(0 <= s < 2**31 for s in by_rank)
    # nor does a rank collide with another epoch of another rank in a short run
    grid = {epoch_seed(3, e, r) for e in range(20) for r in range(4)}
    assert len(grid) == 80

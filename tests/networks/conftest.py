"""Shared fixtures of the network tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Every test starts from the same random state (failures reproduce) and runs torch on one thread.

    The tensors here are tiny; with the 2 cores shared by other jobs, OpenMP's multi-thread barriers make each
    tiny op wait for a busy core (measured: 0.8 s instead of 0.02 s per test). The thread count is restored.
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Fixtures of the benchmark tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def mini_kvasir(shared_path_fn, tmp_path) -> Path:
    """A Kvasir-SEG folder with the first 4 train and 4 val images of the real data (symbolic links)."""
    src, dst = shared_path_fn("Kvasir-SEG"), tmp_path / "kvasir"
    for split in ("train", "val"):
        names = sorted((src / split / "images").iterdir())[:4]
        for sub in ("images", "masks"):
            (dst / split / sub).mkdir(parents=True)
            for p in names:
                (dst / split / sub / p.name).symlink_to(src / split / sub / p.name)
    return dst

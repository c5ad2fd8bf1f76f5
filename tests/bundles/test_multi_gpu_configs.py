"""The bundles' ``multi_gpu_train.json`` layered over ``train.json`` (configs only: no process group, no data)."""

from __future__ import annotations

from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.mark.parametrize("bundle", ["patcher_stroke", "patcher_polyp"])
@pytest.mark.parametrize("rank", [0, 1])
def test_multi_gpu_logging_handlers_only_on_rank_zero(bundle, rank, tmp_path, monkeypatch):
    """train.json + multi_gpu_train.json as rank ``rank`` sees them: on ranks > 0 the Stats/TensorBoard/progress
    handlers are not even instantiated (a TensorBoard handler opens its event file when it is built)."""
    import ignite.distributed as idist
    import torch.distributed as dist
    from ignite.handlers import ProgressBar
    from monai.bundle import ConfigParser
    from monai.handlers import StatsHandler, TensorBoardStatsHandler

    configs = BUNDLES / bundle / "configs"
    assert (configs / "multi_gpu_train.json").is_file(), configs
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: rank)
    monkeypatch.setattr(idist, "get_rank", lambda: rank)
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "multi_gpu_train.json")])
    validation = next(i for i, h in enumerate(parser["train#handlers"])
                      if isinstance(h, dict) and h.get("_target_") == "ValidationHandler")
    parser.update({"output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models"),
                   "network_def#name": "tiny", "network": "$@network_def",  # no DDP wrapper: no process group here
                   "max_iterations": 10, f"train#handlers#{validation}#validator": None})  # no data either
    handlers = list(parser.get_parsed_content("train#trainer#train_handlers"))
    handlers += list(parser.get_parsed_content("validate#evaluator#val_handlers") or [])
    logging = [h for h in handlers if isinstance(h, (StatsHandler, TensorBoardStatsHandler, ProgressBar))]
    events = list((tmp_path / "eval").glob("events.out.tfevents.*"))
    if rank == 0:
        assert len(logging) == 5 and len(events) == 2  # train: stats, TensorBoard, progress bar; validation: 2
    else:
        assert not logging and not events, (logging, events)

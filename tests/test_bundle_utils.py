"""monai_patcher.bundle_utils helpers not covered through the bundles' end-to-end tests."""

from pathlib import Path

import pytest
from monai.transforms import CopyItemsd, EnsureChannelFirstd, Orientationd

from monai_patcher.bundle_utils import insert_after


def test_insert_after_by_class_name():
    first, second = EnsureChannelFirstd(keys="image"), Orientationd(keys="image", axcodes="RAS")
    copy = CopyItemsd(keys="label", names="scan_label")
    out = insert_after([first, second], "EnsureChannelFirstd", copy)
    assert out == [first, copy, second]
    assert insert_after([first, second], "Orientationd", copy, copy) == [first, second, copy, copy]


def test_insert_after_missing_class_names_what_is_there():
    with pytest.raises(ValueError, match=r"no CheckGeometryd in the transforms \(EnsureChannelFirstd\)"):
        insert_after([EnsureChannelFirstd(keys="image")], "CheckGeometryd", CopyItemsd(keys="a", names="b"))


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

    configs = Path(__file__).resolve().parents[1] / "bundles" / bundle / "configs"
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

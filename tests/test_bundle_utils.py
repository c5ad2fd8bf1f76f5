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


def test_one_label_file_for_several_cases_is_refused(tmp_path):
    """A single --label file was given to every case of a folder (overlays coloured against the wrong mask)."""
    from monai_patcher.bundle_utils import image_datalist, stroke_inference_datalist
    from monai_patcher.data import write_demo_dataset

    write_demo_dataset(tmp_path / "demo", num_cases=3)
    label = tmp_path / "demo" / "case000" / "label.nii.gz"
    with pytest.raises(ValueError, match="one label file but --input .* holds 3 cases"):
        stroke_inference_datalist(tmp_path / "demo", label=label)
    (item,) = stroke_inference_datalist(tmp_path / "demo" / "case000", label=label)  # one case: fine
    assert item["label"] == str(label)
    for name in ("a.png", "b.png"):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="one mask file but --input .* holds 2 images"):
        image_datalist(tmp_path / "img", label=tmp_path / "img" / "a.png")


def test_label_folder_matches_case_folders_by_folder_name(tmp_path):
    """Case-folder layout (case003/dwi.nii.gz + adc.nii.gz): the case is its folder's name, so a label folder
    works (every case was named 'dwi' and no label could match)."""
    import shutil

    from monai_patcher.bundle_utils import stroke_inference_datalist
    from monai_patcher.data import write_demo_dataset

    write_demo_dataset(tmp_path / "demo", num_cases=3)
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(tmp_path / "demo" / "case000" / "label.nii.gz", labels / "case000.nii.gz")
    shutil.copy(tmp_path / "demo" / "case001" / "label.nii.gz", labels / "case001_seg.nii.gz")
    shutil.copy(tmp_path / "demo" / "case002" / "label.nii.gz", labels / "case002_msk.nii.gz")
    items = stroke_inference_datalist(tmp_path / "demo", label=labels)
    got = {Path(i["dwi"]).parent.name: Path(i["label"]).name for i in items}
    assert got == {"case000": "case000.nii.gz", "case001": "case001_seg.nii.gz", "case002": "case002_msk.nii.gz"}
    (labels / "case002_msk.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no label found for case 'case002'"):
        stroke_inference_datalist(tmp_path / "demo", label=labels)


def test_demo_dataset_is_rewritten_for_other_settings(tmp_path):
    """ensure_demo_dataset reused the first dataset whatever num_cases/seed were asked for later."""
    import json

    from monai_patcher.bundle_utils import ensure_demo_dataset

    def cases(path):
        d = json.loads(Path(path).read_text())
        return sorted(i["dwi"] for v in d.values() if isinstance(v, list) for i in v)

    first = ensure_demo_dataset(tmp_path, num_cases=4, seed=0)
    assert len(cases(first)) == 4 and ensure_demo_dataset(tmp_path, num_cases=4, seed=0) == first
    again = ensure_demo_dataset(tmp_path, num_cases=3, seed=1)
    assert len(cases(again)) == 3

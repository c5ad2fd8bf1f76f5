"""Model records (monai_patcher/io/model_record.py): what a checkpoint carries to be used without repeating settings."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from monai_patcher.handlers import SafeCheckpointLoader
from monai_patcher.io import (
    RECORD_KEY,
    CheckpointError,
    ModelRecord,
    ModelRecordMismatchError,
    guess_preset,
    patcher_from_record,
    read_model_record,
    record_value,
    stroke_model_record,
)
from monai_patcher.networks import patcher_preset


def _save(tmp_path, net, record=None, name="model.pt"):
    path = tmp_path / name
    content = {"model": net.state_dict()}
    if record is not None:
        content[RECORD_KEY] = record.state_dict()
    torch.save(content if record is not None else net.state_dict(), path)
    return path


def test_record_rebuilds_the_same_network_and_pipeline_after_a_weights_only_load(tmp_path):
    net = patcher_preset("tiny", in_channels=2, out_channels=1, decoder_dim=16)
    record = stroke_model_record(net, spatial_size=64, slice_axis=2, b_value=800.0)
    assert record.network == {"preset": "tiny", "in_channels": 2, "out_channels": 1, "overrides": {"decoder_dim": 16}}
    path = _save(tmp_path, net, record)
    raw = torch.load(path, weights_only=True)  # plain types only: the safe loader reads it
    assert raw[RECORD_KEY]["version"] == 1 and raw[RECORD_KEY]["channels"] == ["eADC", "DWI"]
    got = read_model_record(path)
    assert got == record and got.source == str(path)
    assert (record_value(got, "spatial_size", 256), record_value(got, "b_value", 1000.0)) == (64, 800.0)
    assert got.normalization == {"transform": "NormalizeIntensityd", "nonzero": True, "channel_wise": True}
    assert (got.inplane_mode, got.inplane_spacing, got.slice_axis) == ("resize", None, 2)
    rebuilt = patcher_from_record(got, return_gating=True)
    assert rebuilt.return_gating and rebuilt.config == {**net.config, "return_gating": True}
    rebuilt.load_state_dict(raw["model"])  # same parameter names and shapes
    x = torch.randn(1, 2, 40, 36)
    net.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, return_gating=False), net(x))


def test_spacing_mode_is_recorded_with_its_spacing():
    net = patcher_preset("tiny", in_channels=2, out_channels=1)
    record = stroke_model_record(net, spatial_size=[256, 224], inplane_mode="spacing", inplane_spacing=(0.9, 0.9))
    assert (record.inplane_mode, record.spatial_size, record.inplane_spacing) == ("spacing", [256, 224], [0.9, 0.9])
    assert ModelRecord.from_dict(record.state_dict()) == record
    with pytest.raises(ValueError, match="inplane_spacing"):
        stroke_model_record(net, inplane_mode="spacing")


def test_without_a_record_the_explicit_settings_are_used(tmp_path):
    net = patcher_preset("tiny", in_channels=2, out_channels=1)
    path = _save(tmp_path, net)  # an old plain state_dict
    assert read_model_record(path) is None
    assert read_model_record(tmp_path / "missing.pt") is None and read_model_record("") is None
    assert record_value(None, "spatial_size", 256) == 256
    assert patcher_from_record(None, name="tiny").config == net.config
    with torch.device("meta"):  # the paper preset by default, without allocating its weights
        assert patcher_from_record(None).config == patcher_preset("paper", in_channels=2, out_channels=1).config
    with pytest.raises(CheckpointError, match="does not exist"):
        read_model_record(tmp_path / "missing.pt", missing_ok=False)


def test_a_setting_that_disagrees_with_the_record_is_one_sentence_naming_the_file(tmp_path):
    net = patcher_preset("small", in_channels=2, out_channels=1)
    path = _save(tmp_path, net, stroke_model_record(net, spatial_size=64))
    record = read_model_record(path)
    with pytest.raises(ModelRecordMismatchError) as info:
        patcher_from_record(record, name="paper")
    msg = str(info.value)
    assert str(path) in msg and "'small' Patcher" in msg and "'paper'" in msg and "\n" not in msg, msg
    assert "Missing key" not in msg
    with pytest.raises(ModelRecordMismatchError, match=r"2 input channels \(eADC, DWI, its model record\) but this "
                       r"pipeline gives 3"):
        patcher_from_record(record, in_channels=3)
    with pytest.raises(ModelRecordMismatchError, match=r"spatial_size 64 but 128 is asked for"):
        record.check(spatial_size=128)
    with pytest.raises(ModelRecordMismatchError, match=r"spatial_size \[64, 64\] but \[64, 32\]"):
        record.check(spatial_size=[64, 32])
    record.check(spatial_size=[64, 64])
    record.check(spatial_size=64, slice_axis=2, b_value=1000, inplane_spacing=None)  # agreeing or not given: fine
    with pytest.raises(ModelRecordMismatchError, match="slice_axis 2 but 0"):
        record.check(slice_axis=0)
    assert patcher_from_record(record, name="small").config == net.config  # the same preset asked for: fine


def test_newer_or_malformed_records_are_refused_naming_the_file(tmp_path):
    net = patcher_preset("tiny", in_channels=2, out_channels=1)
    state = stroke_model_record(net).state_dict()
    torch.save({"model": net.state_dict(), RECORD_KEY: {**state, "version": 99}}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match=r"new\.pt: .*version 99.*update monai_patcher"):
        read_model_record(tmp_path / "new.pt")
    torch.save({"model": net.state_dict(), RECORD_KEY: {"channels": ["eADC"]}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: .*not a model record"):
        read_model_record(tmp_path / "bad.pt")


def test_guess_preset_from_shapes():
    assert guess_preset(patcher_preset("tiny", in_channels=3, out_channels=2).state_dict()) == "tiny"
    assert guess_preset(patcher_preset("small", in_channels=2, out_channels=1).state_dict()) == "small"
    assert guess_preset(patcher_preset("tiny", in_channels=2, out_channels=1, decoder_dim=16).state_dict()) is None
    assert guess_preset(torch.nn.Linear(2, 1).state_dict()) is None


def test_safe_loader_refuses_a_recorded_checkpoint_of_another_network_before_loading(tmp_path):
    small = patcher_preset("small", in_channels=2, out_channels=1)
    path = _save(tmp_path, small, stroke_model_record(small))
    tiny = patcher_preset("tiny", in_channels=2, out_channels=1)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    with pytest.raises(ModelRecordMismatchError) as info:
        SafeCheckpointLoader(str(path), {"model": tiny})(Engine(lambda e, b: None))
    msg = str(info.value)
    assert str(path) in msg and "'small' Patcher" in msg and "'tiny' Patcher" in msg and "--network_def#name small" in msg
    assert len(msg.splitlines()) == 1 and "Missing key" not in msg
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    # the right network loads, and MONAI's own CheckpointLoader reads the same file ("model" beside the record)
    from monai.handlers import CheckpointLoader

    for loader in (SafeCheckpointLoader, CheckpointLoader):
        fresh = patcher_preset("small", in_channels=2, out_channels=1)
        loader(str(path), {"model": fresh})(Engine(lambda e, b: None))
        assert all(torch.equal(small.state_dict()[k], v) for k, v in fresh.state_dict().items())


def test_safe_loader_names_the_preset_of_a_plain_state_dict_that_does_not_fit(tmp_path):
    """Old checkpoints have no record: the preset is guessed from the shapes instead of listing 245 missing keys."""
    path = _save(tmp_path, patcher_preset("tiny", in_channels=2, out_channels=1))
    with pytest.raises(ModelRecordMismatchError) as info:
        SafeCheckpointLoader(str(path), {"model": patcher_preset("small", in_channels=2, out_channels=1)})(
            Engine(lambda e, b: None))
    msg = str(info.value)
    assert msg.startswith(str(path)) and "'tiny' Patcher" in msg and "guessed from its shapes" in msg, msg
    assert "'small' Patcher" in msg and "--network_def#name tiny" in msg and "Missing key" not in msg


def test_safe_loader_says_how_to_fix_a_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as info:
        SafeCheckpointLoader(str(tmp_path / "model.pt"), {"model": torch.nn.Linear(2, 1)})(Engine(lambda e, b: None))
    msg = str(info.value)
    assert str(tmp_path / "model.pt") in msg and "does not exist" in msg and "--ckpt_path" in msg


def test_a_polyp_record_describes_rgb_images_and_is_refused_by_a_two_channel_pipeline(tmp_path):
    from monai_patcher.io import polyp_model_record

    net = patcher_preset("tiny", in_channels=3, out_channels=1)
    path = _save(tmp_path, net, polyp_model_record(net, spatial_size=96))
    record = read_model_record(path)
    assert (record.channels, record.inplane_mode, record.spatial_size, record.slice_axis, record.b_value) == (
        ["R", "G", "B"], "resize", 96, None, None)
    assert record.normalization["divisor"] == [0.229, 0.224, 0.225]
    assert patcher_from_record(record, in_channels=3, out_channels=1).config == net.config
    record.check(spatial_size=96, slice_axis=2)  # no slice axis recorded: nothing to disagree with
    with pytest.raises(ModelRecordMismatchError) as info:
        patcher_from_record(record, in_channels=2, out_channels=1)  # the stroke bundle's inference.json
    msg = str(info.value)
    assert str(path) in msg and "3 input channels (R, G, B" in msg and "gives 2" in msg and "\n" not in msg, msg

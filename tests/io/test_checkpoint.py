"""Safe loading of checkpoints (monai_patcher/io/checkpoint.py): pickled code refused, damaged files caught,
errors naming the file."""

from __future__ import annotations

import pickle
import random
import struct
import zipfile

import pytest
import torch
from ignite.engine import Engine

from checkpoint_helpers import RunsCodeWhenUnpickled
from monai_patcher.handlers import SafeCheckpointLoader
from monai_patcher.io import CheckpointError, UnsafeCheckpointError, safe_load_checkpoint


@pytest.mark.parametrize("fmt", ["torch_zip", "pickle_protocol_2", "pickle_protocol_5"])
def test_malicious_checkpoint_is_refused_without_running_code(tmp_path, fmt):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    payload = {"model": {"w": torch.zeros(2)}, "extra": RunsCodeWhenUnpickled(str(marker))}
    if fmt == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(fmt[-1])))
    with pytest.raises(CheckpointError) as err:
        safe_load_checkpoint(path)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)
    if fmt != "pickle_protocol_5":  # protocol 5 is refused earlier, as an unsupported pickle opcode (FRAME)
        assert isinstance(err.value, UnsafeCheckpointError) and "arbitrary code" in str(err.value)
    assert not marker.exists(), "the pickle's code ran"


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "missing", "bitflip_in_weights"])
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage):
    good = tmp_path / "good.pt"
    torch.save({"model": torch.nn.Linear(8, 8).state_dict()}, good)
    bad = tmp_path / "bad.pt"
    data = bytearray(good.read_bytes())
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(random.Random(0).randbytes(2000))
    elif damage == "bitflip_in_weights":
        # torch.load does not check the zip CRCs: this flip would load silently as a different weight
        with zipfile.ZipFile(good) as z:
            info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
        name_len, extra_len = struct.unpack("<HH", bytes(data[info.header_offset + 26: info.header_offset + 30]))
        start = info.header_offset + 30 + name_len + extra_len  # the record's data, after its local header
        data[start + 5] ^= 0x10
        bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="bad.pt"):
        safe_load_checkpoint(bad)
    engine = Engine(lambda e, b: None)
    SafeCheckpointLoader(str(bad), {"model": torch.nn.Linear(8, 8)}).attach(engine)
    with pytest.raises(CheckpointError, match="bad.pt"):
        engine.run([0], max_epochs=1)


def test_fuzzed_checkpoints_error_clearly_or_load_intact(tmp_path):
    """300 seeded random/truncated/bit-flipped checkpoints: a CheckpointError naming the file, or the exact data."""
    orig = {"model": torch.nn.Linear(8, 8).state_dict(), "epoch": 3, "names": ["a", "b"]}
    good = tmp_path / "good.pt"
    torch.save(orig, good)
    data = good.read_bytes()
    rng = random.Random(1234)
    path = tmp_path / "fuzz.pt"
    outcomes = {"error": 0, "intact": 0}
    for i in range(300):
        if i % 3 == 0:
            blob = rng.randbytes(rng.randint(1, 3000))
        elif i % 3 == 1:
            blob = data[: rng.randint(1, len(data) - 1)]
        else:
            b = bytearray(data)
            for _ in range(rng.randint(1, 20)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            blob = bytes(b)
        path.write_bytes(blob)
        try:
            out = safe_load_checkpoint(path)
        except CheckpointError as e:
            assert str(path) in str(e)
            outcomes["error"] += 1
            continue
        assert out["epoch"] == 3 and out["names"] == ["a", "b"], f"case {i}: silently wrong content"
        for k, v in orig["model"].items():
            assert torch.equal(out["model"][k], v), f"case {i}: silently wrong weights"
        outcomes["intact"] += 1
    assert outcomes["error"] >= 250, outcomes

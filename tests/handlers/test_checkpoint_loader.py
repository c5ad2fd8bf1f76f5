"""SafeCheckpointLoader (monai_patcher/handlers/checkpoint_loader.py): the safe loading inside an Ignite engine."""

from __future__ import annotations


import pytest
import torch
from ignite.engine import Engine

from checkpoint_helpers import RunsCodeWhenUnpickled
from monai_patcher.handlers import SafeCheckpointLoader
from monai_patcher.io import CheckpointError, UnsafeCheckpointError


def test_safe_checkpoint_loader_refuses_malicious_file_in_an_engine(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": RunsCodeWhenUnpickled(str(marker))}, path)
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    SafeCheckpointLoader(str(path), {"model": net}).attach(engine)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        engine.run([0], max_epochs=1)
    assert not marker.exists()


def test_safe_loader_loads_a_normal_checkpoint(tmp_path):
    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    path = tmp_path / "m.pt"
    torch.save({"model": src.state_dict()}, path)
    engine = Engine(lambda e, b: None)
    SafeCheckpointLoader(str(path), {"model": dst}).attach(engine)
    engine.run([0], max_epochs=1)
    assert torch.equal(src.weight, dst.weight)


def test_safe_loader_names_the_file_for_a_checkpoint_that_does_not_fit(tmp_path):
    """Other shapes (PyTorch's RuntimeError) or a missing required entry (ignite's ValueError): the error names
    the file and says what does not fit, not only PyTorch's header line."""
    from monai_patcher.io import CheckpointMismatchError

    path = tmp_path / "linear.pt"
    torch.save({"model": torch.nn.Linear(2, 1).state_dict()}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        SafeCheckpointLoader(str(path), {"model": torch.nn.Linear(3, 1)})(Engine(lambda e, b: None))
    msg = str(info.value)
    assert str(path) in msg and "size mismatch for weight" in msg and "torch.Size([1, 2])" in msg, msg
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, CheckpointError)  # both old and new handlers
    net = torch.nn.Linear(2, 1)
    with pytest.raises(CheckpointMismatchError) as info:
        SafeCheckpointLoader(str(path), {"model": net, "optimizer": torch.optim.SGD(net.parameters(), 0.1)})(
            Engine(lambda e, b: None))
    msg = str(info.value)
    assert str(path) in msg and "'optimizer'" in msg and "optional_keys" in msg, msg
    torch.save({"model": {"weight": torch.zeros(1, 2)}}, path)  # a missing key (strict=True)
    with pytest.raises(CheckpointMismatchError, match=r"Missing key\(s\) in state_dict: \"bias\""):
        SafeCheckpointLoader(str(path), {"model": torch.nn.Linear(2, 1)})(Engine(lambda e, b: None))

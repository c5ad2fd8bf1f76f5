"""``python -m monai_patcher.export`` (monai_patcher/export.py): ONNX files checked against PyTorch with onnxruntime.

(Named test_export_cli.py: tests/networks/test_export.py holds the network's export paths, and pytest's default
import mode needs distinct base names.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from monai_patcher.export import check_onnx, export_onnx, main
from monai_patcher.io import stroke_model_record
from monai_patcher.networks import patcher_preset

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return patcher_preset("tiny", in_channels=2, out_channels=1, **kw).eval()


def test_command_exports_a_recorded_checkpoint_whose_onnx_outputs_equal_eager(tmp_path):
    net = _tiny()
    ckpt = tmp_path / "model.pt"
    record = stroke_model_record(net, spatial_size=48)
    torch.save({"model": net.state_dict(), "model_record": record.state_dict()}, ckpt)
    out = tmp_path / "model.onnx"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "monai_patcher.export", "--checkpoint", str(ckpt), "--output", str(out)],
        env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnxruntime equals PyTorch within" in proc.stdout and "at 48x48 and 37x37" in proc.stdout, proc.stdout
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["model_record"]) == record.state_dict()  # the record travels with the ONNX file too
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 2, 70, 33)  # another batch and size than the export's: dynamic axes
    (got,) = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = net(x)
    assert got.shape == tuple(ref.shape)
    assert float((torch.from_numpy(got) - ref).abs().max()) <= 1e-4


def test_plain_state_dict_with_preset_and_gating_outputs(tmp_path):
    net = _tiny(seed=1)
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    out = tmp_path / "g.onnx"
    assert main(["--checkpoint", str(tmp_path / "plain.pt"), "--output", str(out), "--preset", "tiny", "--size", "40",
                 "40", "--gating"]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "gating"]
    assert check_onnx(net, out, [(40, 40), (29, 51)], gating=True) <= 1e-4


def test_wrong_preset_is_one_sentence_and_exit_2(tmp_path, capsys):
    torch.save(_tiny().state_dict(), tmp_path / "plain.pt")
    assert main(["--checkpoint", str(tmp_path / "plain.pt"), "--output", str(tmp_path / "x.onnx"),
                 "--preset", "small"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'plain.pt'} holds a 'tiny' Patcher") and "pass --preset tiny" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "x.onnx").exists()


def test_a_check_that_fails_removes_the_file(tmp_path, monkeypatch, capsys):
    torch.save(_tiny().state_dict(), tmp_path / "plain.pt")
    monkeypatch.setattr("monai_patcher.export.check_onnx", lambda *a, **k: 0.5)  # as if onnxruntime disagreed
    out = tmp_path / "bad.onnx"
    assert main(["--checkpoint", str(tmp_path / "plain.pt"), "--output", str(out), "--preset", "tiny",
                 "--size", "32", "32"]) == 1
    assert not out.exists() and "differs from PyTorch by 0.5" in capsys.readouterr().err


def test_export_onnx_refuses_a_bad_size(tmp_path):
    with pytest.raises(ValueError, match="size must be two positive ints"):
        export_onnx(_tiny(), tmp_path / "x.onnx", size=(0, 64))

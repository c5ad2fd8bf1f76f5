"""Export paths of the Patcher network: TorchScript (script and trace), ONNX, and MONAI's ``ckpt_export``.

Supported (torch 2.13, onnxruntime, monai 1.6):

- ``torch.jit.script``: works on any input size, with or without ``return_gating`` (constructor default or per call).
- ``torch.jit.trace``: works; the traced graph keeps the size arithmetic, so it also runs at other sizes.
- ONNX, opset 17, with the TorchScript-based exporter (``dynamo=False``): dynamic batch, H and W; one exported
  graph runs at any size (odd sizes included) in onnxruntime. The large-patch windows are an index gather (not
  ``Tensor.unfold``, which that exporter cannot export with dynamic sizes) and the ceil divisions are written
  ``(h + L - 1) // L`` (``-(-h // L)`` exports as a truncating division: wrong patch counts).
- ONNX with the default (dynamo / ``torch.export``) exporter: opset 18 (asked for opset 17, it emits 18), tested
  with a dynamic batch axis at a fixed H x W.
- ``python -m monai.bundle ckpt_export`` with both ``--use_trace True`` and scripting.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from monai_patcher.networks import PATCHER_PRESETS, patcher_preset


def _tiny(low_res_gate=False, **kw):
    """The tiny preset; ``low_res_gate``: its 32-channel experts take the gate's low-resolution path too (by default
    only experts of 128 channels or more do; ``MoEDecoder._add_upsampled_conv``)."""
    net = patcher_preset("tiny", in_channels=2, out_channels=1, **kw).eval()
    if low_res_gate:
        net.decoder.low_res_gate_min_channels = 1
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a lost buffer would show
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _assert_same(a, b, atol=1e-5):
    a, b = _as_tuple(a), _as_tuple(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-4)


def _jit_roundtrip(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    buf.seek(0)
    return torch.jit.load(buf)


@pytest.mark.parametrize("return_gating,low_res_gate", [(False, False), (True, False), (True, True)])
def test_torchscript_script(return_gating, low_res_gate):
    net = _tiny(low_res_gate, return_gating=return_gating)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
        loaded = _jit_roundtrip(scripted)
    for shape in [(1, 2, 64, 64), (2, 2, 70, 50)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = net(x)
            _assert_same(scripted(x), ref)
            _assert_same(loaded(x), ref)


@pytest.mark.parametrize("low_res_gate", [False, True])
def test_torchscript_trace_and_save_load(tmp_path, low_res_gate):
    net = _tiny(low_res_gate)
    x = torch.randn(1, 2, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(net, x)
        traced.save(str(tmp_path / "patcher.ts"))
        loaded = torch.jit.load(str(tmp_path / "patcher.ts"))
    with torch.no_grad():
        ref = net(x)
        _assert_same(traced(x), ref)
        _assert_same(loaded(x), ref)
        # the size arithmetic (padding to whole large patches, cropping) is traced, not frozen
        y = torch.randn(2, 2, 70, 50)
        _assert_same(loaded(y), net(y))


def test_torchscript_trace_with_gating():
    net = _tiny(return_gating=True)
    x = torch.randn(1, 2, 48, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = _jit_roundtrip(torch.jit.trace(net, x))
            _assert_same(traced(x), net(x))


def test_torchscript_script_per_call_gating():
    """The per-call flag survives scripting: ``scripted(x, True)`` is ``net(x, return_gating=True)``."""
    net = _tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
    x = torch.randn(1, 2, 45, 38)
    with torch.no_grad():
        _assert_same(scripted(x, True), net(x, return_gating=True))
        _assert_same(scripted(x), net(x))
        assert scripted(x, True)[1].shape == (1, 4, 45, 38)


@pytest.mark.parametrize("low_res_gate", [False, True])
def test_onnx_dynamo_matches_pytorch(tmp_path, low_res_gate):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from torch.export import Dim

    net = _tiny(low_res_gate, return_gating=True)
    path = tmp_path / "patcher.onnx"
    h, w = 64, 48
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # dynamo exporter (the default), at a fixed H x W (the legacy exporter's test covers dynamic H/W)
        torch.onnx.export(
            net,
            (torch.randn(2, 2, h, w),),
            str(path),
            dynamo=True,
            opset_version=18,
            input_names=["image"],
            output_names=["logits", "gating"],
            dynamic_shapes={"x": {0: Dim.DYNAMIC}},
            verbose=False,
        )
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 2, h, w)
        logits, gating = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref_logits, ref_gating = net(x)
        assert logits.shape == tuple(ref_logits.shape) and gating.shape == tuple(ref_gating.shape)
        assert abs(torch.from_numpy(logits) - ref_logits).max() <= 1e-4
        assert abs(torch.from_numpy(gating) - ref_gating).max() <= 1e-4


@pytest.mark.parametrize("low_res_gate", [False, True])
def test_onnx_legacy_opset17_dynamic_size(tmp_path, low_res_gate):
    """Legacy exporter at opset 17 with dynamic batch, H and W; onnxruntime at other (odd) sizes and batches."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    net = _tiny(low_res_gate, return_gating=True)
    path = tmp_path / "patcher17.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, 2, 70, 50),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["logits", "gating"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch", 2: "height", 3: "width"},
                "gating": {0: "batch", 2: "height_1", 3: "width_1"},
            },
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # sizes that are not multiples of the large patch (32) or of the stage strides, and other batch sizes
    for shape in [(2, 2, 70, 50), (2, 2, 33, 17), (1, 2, 96, 130), (3, 2, 45, 64), (2, 2, 1, 5)]:
        x = torch.randn(*shape)
        logits, gating = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref_logits, ref_gating = net(x)
        assert logits.shape == tuple(ref_logits.shape) and gating.shape == tuple(ref_gating.shape), shape
        assert abs(torch.from_numpy(logits) - ref_logits).max() <= 1e-4, shape
        assert abs(torch.from_numpy(gating) - ref_gating).max() <= 1e-4, shape


TINY_ARGS = {k: list(v) if isinstance(v, tuple) else v for k, v in PATCHER_PRESETS["tiny"].items()}


def _write_bundle(tmp_path, network_def):
    net = _tiny()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    config = {"imports": ["$import monai_patcher"], "network_def": network_def}
    (tmp_path / "inference.json").write_text(json.dumps(config))
    return net


def _check_exported(path, net, network_def):
    extra = {"inference.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["inference.json"])["network_def"] == network_def  # the config travels with the model
    x = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        _assert_same(loaded(x), net(x))


def test_monai_bundle_ckpt_export_cli(tmp_path):
    """The real entry point, in a fresh interpreter: short name "Patcher" (found through the config's
    "$import monai_patcher"), exported with torch.jit.trace."""
    network_def = {"_target_": "Patcher", "in_channels": 2, "out_channels": 1, **TINY_ARGS}
    net = _write_bundle(tmp_path, network_def)
    out = tmp_path / "model.ts"
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
        "--filepath", str(out),
        "--ckpt_file", str(tmp_path / "model.pt"),
        "--config_file", str(tmp_path / "inference.json"),
        "--meta_file", str(tmp_path / "no_metadata.json"),
        "--bundle_root", str(tmp_path),
        "--use_trace", "True",
        "--input_shape", "[1,2,64,64]",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model; avoid OpenMP waits on the shared cores
    res = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    _check_exported(out, net, network_def)


def test_monai_bundle_ckpt_export_script(tmp_path):
    """``ckpt_export`` with its default converter (torch.jit.script), dotted path to the preset function."""
    from monai.bundle import ckpt_export

    network_def = {"_target_": "monai_patcher.networks.patcher_preset", "name": "tiny", "in_channels": 2}
    net = _write_bundle(tmp_path, network_def)
    out = tmp_path / "model.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ckpt_export(
            net_id="network_def",
            filepath=str(out),
            ckpt_file=str(tmp_path / "model.pt"),
            config_file=str(tmp_path / "inference.json"),
            meta_file=str(tmp_path / "no_metadata.json"),
            bundle_root=str(tmp_path),
        )
    _check_exported(out, net, network_def)

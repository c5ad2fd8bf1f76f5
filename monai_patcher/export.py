"""ONNX export of a trained Patcher checkpoint, checked against PyTorch with onnxruntime.

Usage::

    python -m monai_patcher.export --checkpoint bundles/patcher_stroke/models/model.pt --output model.onnx \\
        [--preset paper|small|tiny] [--opset 17] [--size 256 256] [--gating] [--atol 1e-4] [--no_check]

The network is built from the checkpoint's model record (:mod:`monai_patcher.io.model_record`) when it has one,
else from ``--preset`` / ``--in_channels`` / ``--out_channels``; the weights are read with ``weights_only=True``.
The graph is exported with PyTorch's TorchScript-based exporter (``dynamo=False``) at ``--opset`` 17 with dynamic
batch, height and width (one file runs at any slice size), input ``image`` (``N x C x H x W``), output ``logits``
(and ``gating``, the mixture-of-experts weights, with ``--gating``). The record is stored in the ONNX file's
metadata (``model_record``, JSON), so the file says how its inputs are made as the checkpoint does.

The check (unless ``--no_check``): onnxruntime runs the file on random inputs at the export size and at an odd
size (not a multiple of the patch sizes), and every output must equal PyTorch's eager output within ``--atol``;
otherwise the file is removed and the exit status is 1. TorchScript export is MONAI's ``ckpt_export`` (see
docs/bundles.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import torch

from .io.model_record import load_patcher, record_value

__all__ = ["export_onnx", "check_onnx", "main"]


def export_onnx(
    network: torch.nn.Module,
    path: str | os.PathLike,
    size: Sequence[int] = (256, 256),
    opset: int = 17,
    gating: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``network`` (``N x C x H x W`` -> logits[, gating]) to ONNX with dynamic batch, height and width.

    Args:
        network: a Patcher in eval mode.
        path: the ``.onnx`` file to write.
        size: the ``H x W`` of the example input the graph is traced with.
        opset: ONNX opset (17 is tested).
        gating: also output the gating maps (``return_gating=True``).
        metadata: strings stored in the file's ``metadata_props`` (e.g. the model record as JSON).

    Example:
        >>> from monai_patcher.networks import patcher_preset
        >>> export_onnx(patcher_preset("tiny").eval(), "tiny.onnx", size=(64, 64))  # doctest: +SKIP
    """
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be two positive ints (H, W), got {list(size)}")
    in_channels = int(getattr(network, "in_channels", 2))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["logits", "gating"] if gating else ["logits"]

    class _Export(torch.nn.Module):  # the per-call flag fixed for the graph
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor):
            return self.net(x, return_gating=gating)

    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({n: {0: "batch", 2: "height", 3: "width"} for n in names})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Export(network).eval(), (torch.randn(1, in_channels, *size),), str(path), dynamo=False,
            opset_version=opset, input_names=["image"], output_names=names, dynamic_axes=axes,
        )
    if metadata:
        import onnx

        model = onnx.load(str(path))
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(path))
    return path


def check_onnx(
    network: torch.nn.Module, path: str | os.PathLike, sizes: Sequence[Sequence[int]], gating: bool = False, seed: int = 0
) -> float:
    """The largest difference between onnxruntime's outputs of ``path`` and ``network``'s eager outputs on random
    inputs of each ``H x W`` in ``sizes`` (batch 2)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for h, w in sizes:
        x = torch.randn(2, int(getattr(network, "in_channels", 2)), int(h), int(w), generator=gen)
        got = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            ref = network(x, return_gating=gating)
        ref = ref if isinstance(ref, tuple) else (ref,)
        for a, b in zip(got, ref):
            if tuple(a.shape) != tuple(b.shape):
                raise RuntimeError(f"{path}: ONNX output shape {tuple(a.shape)} != PyTorch's {tuple(b.shape)} at {h}x{w}")
            worst = max(worst, float((torch.from_numpy(a) - b).abs().max()))
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 exported and checked, 1 check failed, 2 bad input)."""
    ap = argparse.ArgumentParser(prog="python -m monai_patcher.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="model.pt (a bundle's, or a plain state dict)")
    ap.add_argument("--output", required=True, help="the .onnx file to write")
    ap.add_argument("--preset", default=None, help="paper, small, tiny (default: the checkpoint's record, else paper)")
    ap.add_argument("--in_channels", type=int, default=None, help="default: the record's, else 2")
    ap.add_argument("--out_channels", type=int, default=None, help="default: the record's, else 1")
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="example input size (default: the record's spatial_size, else 256 256)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--gating", action="store_true", help="also output the gating maps")
    ap.add_argument("--atol", type=float, default=1e-4, help="largest |onnxruntime - PyTorch| accepted")
    ap.add_argument("--no_check", action="store_true", help="skip the onnxruntime check")
    args = ap.parse_args(argv)
    try:
        net, record = load_patcher(args.checkpoint, args.preset, args.in_channels, args.out_channels)
    except (OSError, ValueError) as e:  # CheckpointError and the mismatch errors are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    net.eval()
    recorded = record_value(record, "spatial_size", 256)
    size = args.size or ([recorded] * 2 if isinstance(recorded, int) else list(recorded))
    meta = {"model_record": json.dumps(record.state_dict())} if record else None
    path = export_onnx(net, args.output, size=size, opset=args.opset, gating=args.gating, metadata=meta)
    if args.no_check:
        print(f"{path}: exported (not checked)")
        return 0
    odd = [max(1, s - s // 4 + 1) for s in size]  # not a multiple of the patch sizes
    worst = check_onnx(net, path, [size, odd], gating=args.gating)
    if worst > args.atol:
        path.unlink()
        print(f"error: {path}: onnxruntime differs from PyTorch by {worst:.3g} > --atol {args.atol:g}; not kept",
              file=sys.stderr)
        return 1
    print(f"{path}: exported; onnxruntime equals PyTorch within {worst:.2g} (--atol {args.atol:g}) at "
          f"{size[0]}x{size[1]} and {odd[0]}x{odd[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

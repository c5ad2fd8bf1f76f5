"""Score a ``benchmarks.kvasir`` Patcher checkpoint with the polyp bundle's own ``evaluate.json``.

A cross-check of two independent evaluation paths on real Kvasir-SEG images, each image at its own size:

- ``benchmarks.kvasir`` (plain torch): the val image resized to 256 x 256, logits upsampled (bilinear) to the
  mask's size, threshold 0.5, per-image Dice ("full");
- the bundle (``bundles/patcher_polyp``, MONAI transforms): ``LoadImaged(PILReader)``, ``Resized`` to 256 x 256,
  sigmoid, ``Invertd`` back to the image's size, threshold 0.5, ``MeanDice`` against the mask as stored.

The checkpoint's state dict (saved by ``benchmarks.kvasir`` around a ``PatcherLogits`` wrapper: keys ``net.*``) is written
as a bundle checkpoint (``{"model": state_dict}``) into ``--out``, and the bundle runs with the checkpoint's preset
and overrides (``benchmarks.models``) as command-line overrides. The two paths differ in their resize code
(torch ``interpolate`` vs MONAI ``Resize``) and in orientation: MONAI's ``PILReader`` gives ``W x H`` arrays, so
the bundle's network sees each image transposed (the training of both paths includes flips and 90-degree
rotations). Per-image differences are printed with the means::

    python -m benchmarks.kvasir_bundle_eval --checkpoint benchmarks/results/kvasir/patcher_small_s4_gate0/best.pt
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from . import ROOT
from .brats_bundle import run  # runs a bundle command, logs it, times it
from .models import PATCHER_VARIANTS

HERE = Path(__file__).resolve().parent

CONFIGS = ROOT / "bundles" / "patcher_polyp" / "configs"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "Kvasir-SEG" / "val"


def bundle_checkpoint(src: Path, dst: Path) -> tuple[str, dict]:
    """Write ``src`` (a ``benchmarks.kvasir`` ``best.pt``) as a bundle checkpoint; returns its model name and Patcher config."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    name = ckpt["model"]
    if name not in PATCHER_VARIANTS:
        raise SystemExit(f"{src}: model {name!r} is not a Patcher variant of benchmarks.models")
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, dst)
    return name, {"preset": PATCHER_VARIANTS[name][0], **PATCHER_VARIANTS[name][1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a benchmarks.kvasir best.pt of a Patcher")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder with images/ and masks/")
    p.add_argument("--out", type=Path, default=HERE / "results" / "kvasir_bundle_eval")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    name, cfg = bundle_checkpoint(args.checkpoint, args.out / "model.pt")
    overrides = ["--network_def#name", cfg.pop("preset")]
    for k, v in cfg.items():
        overrides += [f"--network_def#{k}", json.dumps(list(v) if isinstance(v, tuple) else v)]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file",
           f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']", "--dataset_dir", str(args.data.parent),
           "--eval_dir", str(args.data), "--ckpt_path", str(args.out / "model.pt"),
           "--output_dir", str(args.out / "eval"), "--num_workers", "0", *overrides]  # fmt: skip
    timing = run(cmd, args.out / "evaluate.log", args.threads)  # exits with the log's name if the bundle fails

    with open(args.out / "eval" / "val_mean_dice_raw.csv") as f:
        bundle = {Path(r["filename"]).stem: float(r["mean"]) for r in csv.DictReader(f)}
    ref_file = args.checkpoint.parent / "best_per_image.json"
    ref = json.loads(ref_file.read_text()) if ref_file.is_file() else None
    summary = {"checkpoint": str(args.checkpoint), "model": name, "images": len(bundle), **timing,
               "bundle_dice_mean": round(float(np.mean(list(bundle.values()))), 4)}
    if ref is not None:
        full = dict(zip(ref["names"], ref["per_image_dice_full"]))
        common = sorted(set(full) & set(bundle))
        diff = np.array([bundle[n] - full[n] for n in common])
        summary.update({
            "kvasir_py_dice_full_mean": round(float(np.mean([full[n] for n in common])), 4),
            "images_compared": len(common),
            "per_image_abs_diff_median": round(float(np.median(np.abs(diff))), 4),
            "per_image_abs_diff_max": round(float(np.abs(diff).max()), 4),
            "per_image_correlation": round(float(np.corrcoef([bundle[n] for n in common],
                                                             [full[n] for n in common])[0, 1]), 4),
        })  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

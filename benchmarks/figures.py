"""Figures for docs/results.md from the outputs of ``python -m benchmarks.kvasir``.

    python -m benchmarks.figures --results benchmarks/results/kvasir --figures docs/figures \\
        --overlay-models patcher_small,unet --gating-model patcher_small

- ``kvasir_dice_vs_time.png``: val Dice (original resolution) against training CPU time, every model;
- ``kvasir_overlays.png``: a few val images with the prediction of each best checkpoint in the paper's colours
  (TP green, FP red, FN white), at the original resolution;
- ``kvasir_gating.png``: the four mixture-of-experts weight maps of a Patcher checkpoint (the paper's Fig. 4).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from monai_patcher.visualize import overlay  # noqa: E402

from .kvasir import DEFAULT_DATA, autocast, dice_iou, list_pairs, normalize  # noqa: E402
from .models import build_model  # noqa: E402

HERE = Path(__file__).resolve().parent


def dice_vs_time(results: Path, path: Path, skip: tuple[str, ...] = ()) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for p in sorted(results.glob("*/log.json")):
        log = json.loads(p.read_text())
        if log["model"] in skip or not log["history"]:
            continue
        h = log["history"]
        t = [0.0] + [r["train_cpu_s"] / 60 for r in h]
        d = [0.0] + [100 * r.get("dice_full", r["dice_256"]) for r in h]
        style = "-" if log["model"].startswith("patcher") else "--"
        budget = log.get("config", {}).get("budget_minutes")  # runs of one model at two budgets share the plot
        label = f"{log['model']}, {budget:g} CPU min" if budget else log["model"]
        ax.plot(t, d, style, marker="o", ms=3, label=f"{label} ({log['steps']} steps)")
    ax.set_xlabel("training time (process CPU minutes, 1 thread)")
    ax.set_ylabel("val Dice (%), original resolution")
    ax.set_title("Kvasir-SEG val/ (100 images): Dice against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_best(results: Path, name: str):
    """The best checkpoint of ``name``: model (eval mode), input size, step, and the precision it was trained in."""
    ckpt = torch.load(results / name / "best.pt", map_location="cpu", weights_only=True)
    model = build_model(ckpt["model"], 3, 1)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), int(ckpt.get("input_size", 256)), ckpt.get("step"), ckpt.get("precision", "fp32")


def read_pair(img_path: Path, mask_path: Path):
    from PIL import Image

    img = np.asarray(Image.open(img_path).convert("RGB"))
    mask = np.asarray(Image.open(mask_path).convert("L")) > 127
    return img, mask


@torch.no_grad()
def predict(model, img: np.ndarray, size: int, gating: bool = False, precision: str = "fp32"):
    """Logits at the original size (and the gating maps at the network's output size); forward in ``precision``."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = normalize(x.round().clamp(0, 255).to(torch.uint8))
    with autocast(precision):
        logits, g = model.with_gating(x) if gating else (model(x), None)
    logits, g = logits.float(), None if g is None else g.float()
    up = F.interpolate(logits, size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    return up, g


def overlays(results: Path, data: Path, models: list[str], names: list[str], path: Path) -> None:
    pairs = {i.stem: (i, m) for i, m in list_pairs(data / "val" / "images", data / "val" / "masks")}
    fig, axes = plt.subplots(len(models), len(names), figsize=(3.2 * len(names), 2.9 * len(models)), squeeze=False)
    for r, name in enumerate(models):
        model, size, step, precision = load_best(results, name)
        for c, stem in enumerate(names):
            img, mask = read_pair(*pairs[stem])
            up, _ = predict(model, img, size, precision=precision)
            pred = (up > 0).numpy()
            d, i = dice_iou(pred, mask)
            ax = axes[r, c]
            ax.imshow(overlay(img, pred, mask, alpha=0.5))
            ax.set_title(f"{name}: Dice {100 * d:.1f}", fontsize=8)
            ax.axis("off")
    fig.suptitle("Kvasir-SEG val/: TP green, FP red, FN white (best checkpoint of each model)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def gating_figure(results: Path, data: Path, model_name: str, names: list[str], path: Path) -> None:
    pairs = {i.stem: (i, m) for i, m in list_pairs(data / "val" / "images", data / "val" / "masks")}
    model, size, step, precision = load_best(results, model_name)
    cols = ["image + prediction"] + [f"W{k} (stage {k} expert)" for k in range(1, 5)]
    fig, axes = plt.subplots(len(names), 5, figsize=(14, 2.9 * len(names)), squeeze=False)
    outs = []
    for stem in names:
        img, mask = read_pair(*pairs[stem])
        up, g = predict(model, img, size, gating=True, precision=precision)
        outs.append((img, mask, (up > 0).numpy(), g[0].numpy()))
    lo = min(float(o[3].min()) for o in outs)  # one colour scale for all maps, stretched to their range
    hi = max(float(o[3].max()) for o in outs)
    for r, (img, mask, pred, g) in enumerate(outs):
        axes[r, 0].imshow(overlay(img, pred, mask, alpha=0.5))
        for k in range(4):
            im = axes[r, k + 1].imshow(g[k], vmin=lo, vmax=hi, cmap="viridis")
        for c in range(5):
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title(cols[c], fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label=f"mixture weight (scale {lo:.2f} to {hi:.2f})")
    fig.suptitle(f"MoE gating maps of {model_name} (step {step}) on Kvasir-SEG val/ (W1+W2+W3+W4 = 1 per pixel)",
                 fontsize=9)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=HERE / "results" / "kvasir")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--figures", type=Path, default=HERE.parent / "docs" / "figures")
    p.add_argument("--overlay-models", default="patcher_small,unet")
    p.add_argument("--gating-model", default="patcher_small")
    p.add_argument("--images", default=None, help="comma-separated val image names (default: 4 spread by index)")
    p.add_argument("--skip", default="", help="models to leave out of the Dice-vs-time plot")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.figures.mkdir(parents=True, exist_ok=True)
    names = args.images.split(",") if args.images else None
    if names is None:
        stems = [i.stem for i, _ in list_pairs(args.data / "val" / "images", args.data / "val" / "masks")]
        names = [stems[k] for k in (3, 27, 55, 81)]
    dice_vs_time(args.results, args.figures / "kvasir_dice_vs_time.png", tuple(filter(None, args.skip.split(","))))
    models = [m for m in args.overlay_models.split(",") if (args.results / m / "best.pt").exists()]
    if models:
        overlays(args.results, args.data, models, names, args.figures / "kvasir_overlays.png")
    if args.gating_model and (args.results / args.gating_model / "best.pt").exists():
        gating_figure(args.results, args.data, args.gating_model, names[:3], args.figures / "kvasir_gating.png")
    print(f"figures in {args.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

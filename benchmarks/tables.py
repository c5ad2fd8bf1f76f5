"""Markdown tables for docs/results.md from the benchmark outputs (so no number is copied by hand).

    python -m benchmarks.tables            # prints the Kvasir, BraTS and training-step tables
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
R = HERE / "results"


def kvasir(results: Path = R / "kvasir", models=None) -> str:
    rows = []
    for p in sorted(results.glob("*/log.json")):
        log = json.loads(p.read_text())
        if models is None or log["model"] in models:
            rows.append((log["model"], log))
    order = ["patcher_small", "patcher_small_s4_gate0", "patcher_small_s4", "patcher_small_gate0", "unet",
             "attention_unet", "swin_unetr", "segformer_b0", "segformer_b5", "patcher_paper"]
    rows.sort(key=lambda r: order.index(r[0]) if r[0] in order else 99)
    out = [
        "| model | params (M) | val Dice (%) | val IoU (%) | Dice / IoU at 256 (%) | best step | steps in budget "
        "(epochs) | CPU s / step | train CPU min | train wall min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, log in rows:
        b = log.get("best", {})
        done = "train_cpu_s" in log
        out.append(
            f"| {name} | {log['params'] / 1e6:.2f} | **{100 * b['dice_full']:.2f}** | {100 * b['iou_full']:.2f} | "
            f"{100 * b['dice_256']:.2f} / {100 * b['iou_256']:.2f} | {b['step']} | {log['steps']} "
            f"({log['epochs']:.2f}) | "
            f"{log['sec_per_step_cpu']:.2f} | {log['train_cpu_s'] / 60:.1f} | {log['train_wall_s'] / 60:.1f} |"
            if done else
            f"| {name} (cut short at {log['history'][-1]['train_cpu_s'] / 60:.1f} of {log['config']['budget_minutes']} CPU min) "
            f"| {log['params'] / 1e6:.2f} | {100 * b['dice_full']:.2f} | {100 * b['iou_full']:.2f} | "
            f"{100 * b['dice_256']:.2f} / {100 * b['iou_256']:.2f} | {b['step']} | {log['history'][-1]['step']} | "
            f"{log['history'][-1]['train_cpu_s'] / log['history'][-1]['step']:.2f} | "
            f"{log['history'][-1]['train_cpu_s'] / 60:.1f} | {log['history'][-1]['train_wall_s'] / 60:.1f} |"
        )
    budgets = sorted({log["config"]["budget_minutes"] for _, log in rows})
    return "\n".join(out) + f"\n\nBudget per model: {budgets} CPU minutes.\n"


def history(results: Path = R / "kvasir") -> str:
    out = []
    for p in sorted(results.glob("*/log.json")):
        log = json.loads(p.read_text())
        pts = ", ".join(f"{r['step']}: {100 * r['dice_full']:.1f}" for r in log["history"])
        out.append(f"- {log['model']} (step: val Dice %): {pts}")
    return "\n".join(out) + "\n"


def brats(path: Path = R / "brats_bundle" / "summary.json") -> str:
    if not path.exists():
        return "(no BraTS run)\n"
    s = json.loads(path.read_text())
    m = s["metrics"]
    out = ["| validation case | volume Dice (%) | volume IoU (%) |", "|---|---|---|"]
    for case, d in m["val_mean_dice_per_volume"].items():
        out.append(f"| {case} | {100 * d:.2f} | {100 * m['val_mean_iou_per_volume'][case]:.2f} |")
    out.append(f"| **mean** | **{100 * m['val_mean_dice']:.2f}** | {100 * m['val_mean_iou']:.2f} |")
    out.append("")
    out.append(f"Per-slice Dice (mean over slices whose ground truth has tumour): **{100 * m['val_slice_dice']:.2f} %**; "
               f"per-slice IoU {100 * m['val_slice_iou']:.2f} %.")
    t = s.get("train", {})
    if t:
        out.append(f"Training: Patcher '{s['preset']}', {s['iterations']} optimiser steps of 8 slices, "
                   f"{t['cpu_s'] / 60:.1f} CPU min ({t['cpu_s_per_step']:.1f} CPU s per step incl. start-up), "
                   f"{t['wall_s'] / 60:.1f} wall min; evaluation {s['evaluate']['cpu_s'] / 60:.1f} CPU min.")
    return "\n".join(out) + "\n"


def train_step(paths=(R / "train_step" / "summary.md", R / "train_step_b1" / "summary.md")) -> str:
    return "\n".join(p.read_text() for p in paths if p.exists())


def main(argv: list[str] | None = None) -> int:
    tables = {"kvasir": kvasir, "history": history, "brats": brats, "train_step": train_step}
    for w in (sys.argv[1:] if argv is None else argv) or list(tables):
        print(f"### {w}\n")
        print(tables[w]())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Slice-wise 2-channel MRI segmentation on the BraTS 2015 examples (a stand-in for stroke: tumour, not stroke).

Trains a Patcher (small preset by default) on the axial slices of ``train/`` (pat0005, pat0006), selects the
best evaluation on ``validation/`` (pat0003, pat0004) and reports per-volume Dice and per-slice Dice there::

    python -m benchmarks.brats --budget-minutes 10 --threads 1

- input: 2 channels, FLAIR and T1c (already z-scored inside the brain by the data's provider), label
  ``OTMultiClass > 0`` (whole tumour); axial slices (axis 2) resized from 240 x 240 to 256 x 256;
- training slices: only slices that contain brain (``brainmask``); half of each batch has tumour
  (``--pos-ratio``); augmentation: random rescale 0.7-2.0 then crop/pad to 256 (the paper's stroke
  augmentation) and a random left-right flip;
- loss BCE + IoU (``BCEIoULoss``), Adam lr 1e-4, linear warm-up then poly decay over the budget
  (the stroke bundle's BCE and lr 6e-5 are meant for hours of GPU training, not minutes of CPU);
- budget: ``--budget-minutes`` of process CPU time (``time.process_time()``); wall time is recorded too;
- evaluation: every brain slice of a validation volume is predicted at 256 x 256, the logits resized back to
  240 x 240; slices without brain are predicted empty. Per-volume Dice: over the whole 3D volume. Per-slice
  Dice: mean over the slices whose ground truth has tumour ("lesion slices"), and, separately, over the slices
  where the ground truth or the prediction has foreground.

Outputs in ``--out`` (default ``benchmarks/results/brats``): ``log.json``, ``summary.json``, ``best.pt``
(git-ignored) and, with ``--figure PNG``, an overlay figure (TP green / FP red / FN white) of the best model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .kvasir import Progress, dice_iou, run_config, train_for_budget
from .models import PATCHER_VARIANTS, build_model, count_parameters, describe_model

HERE = Path(__file__).resolve().parent

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "BraTS2015-DeepMedic-examples"


def load_case(folder: Path) -> dict:
    import nibabel as nib

    def read(stem):
        return np.asarray(nib.load(str(folder / f"{stem}.nii.gz")).dataobj, dtype=np.float32)

    image = np.stack([read("Flair_subtrMeanDivStd"), read("T1c_subtrMeanDivStd")])  # 2 x X x Y x Z
    label = read("OTMultiClass") > 0
    brain = read("brainmask") > 0
    return {"case": folder.name, "image": image, "label": label, "brain": brain}


def load_split(root: Path) -> list[dict]:
    cases = [load_case(p) for p in sorted(Path(root).iterdir()) if p.is_dir()]
    if not cases:
        raise FileNotFoundError(f"no cases in {root}")
    return cases


def slices_of(cases: list[dict], size: int) -> dict:
    """Brain-containing axial slices, resized to ``size``: images N x 2 x s x s, labels N x 1 x s x s."""
    imgs, labs = [], []
    for c in cases:
        keep = np.nonzero(c["brain"].any(axis=(0, 1)))[0]
        x = torch.from_numpy(c["image"][..., keep]).permute(3, 0, 1, 2)  # N x 2 x X x Y
        y = torch.from_numpy(c["label"][..., keep]).permute(2, 0, 1)[:, None].float()
        imgs.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
        labs.append((F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False) > 0.5).to(torch.uint8))
    return {"images": torch.cat(imgs), "labels": torch.cat(labs)}


def augment(x: torch.Tensor, y: torch.Tensor, size: int, scale_range, gen: torch.Generator):
    """Random rescale + crop/pad to ``size`` + left-right flip, per sample."""
    xs, ys = [], []
    lo, hi = scale_range
    for img, lab in zip(x, y):
        r = torch.rand(4, generator=gen).tolist()
        t = max(8, int(round(size * (lo + (hi - lo) * r[0]))))
        a = F.interpolate(img[None], size=(t, t), mode="bilinear", align_corners=False)
        b = (F.interpolate(lab[None].float(), size=(t, t), mode="bilinear", align_corners=False) > 0.5).float()
        bg = float(img.min())
        if t < size:
            py, px = int(r[1] * (size - t + 1)), int(r[2] * (size - t + 1))
            pad = (px, size - t - px, py, size - t - py)
            a, b = F.pad(a, pad, value=bg), F.pad(b, pad)
        elif t > size:
            oy, ox = int(r[1] * (t - size + 1)), int(r[2] * (t - size + 1))
            a, b = a[..., oy : oy + size, ox : ox + size], b[..., oy : oy + size, ox : ox + size]
        if r[3] < 0.5:
            a, b = a.flip(-2), b.flip(-2)
        xs.append(a)
        ys.append(b)
    return torch.cat(xs).contiguous(), torch.cat(ys).contiguous()


@torch.no_grad()
def predict_volume(model, case: dict, size: int, batch_size: int = 8, with_gating: bool = False):
    """Binary prediction X x Y x Z (and optionally per-slice logits); slices without brain stay empty."""
    model.eval()
    X, Y, Z = case["label"].shape
    pred = np.zeros((X, Y, Z), bool)
    keep = np.nonzero(case["brain"].any(axis=(0, 1)))[0]
    for i in range(0, len(keep), batch_size):
        idx = keep[i : i + batch_size]
        x = torch.from_numpy(case["image"][..., idx]).permute(3, 0, 1, 2)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        logits = F.interpolate(model(x), size=(X, Y), mode="bilinear", align_corners=False)
        pred[..., idx] = (logits[:, 0] > 0).permute(1, 2, 0).numpy()
    return pred


def evaluate(model, cases: list[dict], size: int, batch_size: int = 8) -> dict:
    per_volume, lesion_slices, fg_slices, preds = {}, [], [], {}
    for c in cases:
        pred = predict_volume(model, c, size, batch_size)
        preds[c["case"]] = pred
        d, i = dice_iou(pred, c["label"])
        per_volume[c["case"]] = {"dice": d, "iou": i}
        for z in range(pred.shape[2]):
            g, p = c["label"][..., z], pred[..., z]
            if g.any() or p.any():
                dz = dice_iou(p, g)[0]
                fg_slices.append(dz)
                if g.any():
                    lesion_slices.append(dz)
    return {
        "per_volume": per_volume,
        "volume_dice_mean": float(np.mean([v["dice"] for v in per_volume.values()])),
        "volume_iou_mean": float(np.mean([v["iou"] for v in per_volume.values()])),
        "slice_dice_lesion_slices": float(np.mean(lesion_slices)) if lesion_slices else float("nan"),
        "n_lesion_slices": len(lesion_slices),
        "slice_dice_fg_slices": float(np.mean(fg_slices)) if fg_slices else float("nan"),
        "n_fg_slices": len(fg_slices),
        "_preds": preds,
    }


def make_figure(preds: dict, cases: list[dict], path: Path, n_per_case: int = 3, title: str = "") -> None:
    """Overlays (TP green / FP red / FN white) on FLAIR for a few tumour slices of each validation case.

    ``preds``: case name -> binary prediction volume (X x Y x Z).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monai_patcher.visualize import overlay

    rows = []
    for c in cases:
        pred = preds[c["case"]]
        area = c["label"].sum(axis=(0, 1))
        zs = np.nonzero(area)[0]
        picks = zs[np.linspace(len(zs) * 0.2, len(zs) * 0.8, n_per_case).astype(int)]
        for z in picks:
            d = dice_iou(pred[..., z], c["label"][..., z])[0]
            img = np.flipud(c["image"][0, ..., z].T)
            rows.append((c["case"], int(z), d, overlay(img, np.flipud(pred[..., z].T), np.flipud(c["label"][..., z].T))))
    fig, axes = plt.subplots(len(cases), n_per_case, figsize=(3 * n_per_case, 3.2 * len(cases)))
    for ax, (case, z, d, rgb) in zip(np.asarray(axes).ravel(), rows):
        ax.imshow(rgb)
        ax.set_title(f"{case.replace('brats_2013_', '')} z={z}\nslice Dice {d:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"BraTS validation, FLAIR: TP green, FP red, FN white {title}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", default="patcher_small", help=f"one of {sorted(PATCHER_VARIANTS)} or another benchmark model")
    p.add_argument("--budget-minutes", type=float, default=10.0, help="training budget, process CPU minutes")
    p.add_argument("--evals", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.7, 2.0))
    p.add_argument("--pos-ratio", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "brats")
    p.add_argument("--figure", type=Path, default=None, help="write the overlay figure of the best model here")
    p.add_argument("--smoke", action="store_true", help="tiny model, tiny budget, few slices")
    args = p.parse_args(argv)
    if args.smoke:
        args.model, args.budget_minutes, args.size, args.batch_size, args.evals = "patcher_tiny", 0.05, 64, 2, 1
        if args.out == p.get_default("out"):
            args.out = HERE / "results" / "brats_smoke"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    train_cases = load_split(args.data / "train")
    val_cases = load_split(args.data / "validation")
    train = slices_of(train_cases, args.size)
    pos = torch.nonzero(train["labels"].flatten(1).any(1)).flatten()
    neg = torch.nonzero(~train["labels"].flatten(1).any(1)).flatten()
    print(f"data: train {[c['case'] for c in train_cases]} -> {len(train['images'])} brain slices "
          f"({len(pos)} with tumour); validation {[c['case'] for c in val_cases]}; {time.perf_counter() - t0:.1f}s",
          flush=True)
    if args.smoke:
        for c in val_cases:  # keep a few slices around the tumour centre
            z = int(np.nonzero(c["label"].any(axis=(0, 1)))[0].mean())
            c["brain"] = c["brain"].copy()
            c["brain"][..., : z - 2] = False
            c["brain"][..., z + 2 :] = False

    model = build_model(args.model, in_channels=2, out_channels=1)
    args.out.mkdir(parents=True, exist_ok=True)
    log = {"model": args.model, "description": describe_model(args.model), "params": count_parameters(model),
           "config": run_config(args), "history": []}
    best, best_preds = None, None
    n_pos = int(round(args.batch_size * args.pos_ratio))

    def next_batch():
        idx = torch.cat([pos[torch.randint(len(pos), (n_pos,), generator=gen)],
                         neg[torch.randint(len(neg), (args.batch_size - n_pos,), generator=gen)]])
        return augment(train["images"][idx], train["labels"][idx], args.size, args.scale_range, gen)

    def on_eval(p: Progress, res: dict) -> None:
        nonlocal best, best_preds
        preds = res.pop("_preds")
        rec = {"step": p.step, "train_cpu_s": round(p.train_cpu_s, 1), "train_wall_s": round(p.train_wall_s, 1),
               "train_loss": p.train_loss, **res}
        log["history"].append(rec)
        print(f"step {p.step} cpu {p.train_cpu_s:.0f}s wall {p.train_wall_s:.0f}s loss {rec['train_loss']:.3f} "
              f"volume Dice {res['volume_dice_mean']:.4f} {json.dumps(res['per_volume'])} "
              f"slice Dice (lesion slices) {res['slice_dice_lesion_slices']:.4f}", flush=True)
        if best is None or res["volume_dice_mean"] > best["volume_dice_mean"]:
            best, best_preds = rec, preds
            torch.save({"model": args.model, "step": p.step, "state_dict": model.state_dict(), "size": args.size},
                       args.out / "best.pt")

    done = train_for_budget(model, next_batch, lambda: evaluate(model, val_cases, args.size), on_eval,
                            args.budget_minutes * 60.0, args.evals, args.lr, args.warmup)
    log.update(best=best, steps=done.step, train_cpu_s=done.train_cpu_s, train_wall_s=done.train_wall_s,
               eval_cpu_s=done.eval_cpu_s, cpu_s_per_step=done.train_cpu_s / max(done.step, 1),
               cut_short_by_budget=True)
    (args.out / "log.json").write_text(json.dumps(log, indent=1))
    summary = {k: log[k] for k in ("model", "params", "steps", "train_cpu_s", "train_wall_s", "cpu_s_per_step")}
    summary.update(budget_cpu_min=args.budget_minutes, best_step=best["step"],
                   **{k: best[k] for k in ("per_volume", "volume_dice_mean", "volume_iou_mean",
                                           "slice_dice_lesion_slices", "n_lesion_slices", "slice_dice_fg_slices",
                                           "n_fg_slices")})
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1), flush=True)
    if args.figure:
        make_figure(best_preds, val_cases, args.figure,
                    title=f"({args.model}, step {best['step']}, volume Dice {best['volume_dice_mean']:.3f})")
        print(f"figure: {args.figure}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

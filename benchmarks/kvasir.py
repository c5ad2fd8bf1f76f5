"""Kvasir-SEG benchmark: train every model the same way, pick the best step on val/, report Dice and IoU.

One command trains each model in ``--models`` on ``train/`` for the same budget of process CPU time
(``time.process_time()``: fair when the machine is shared; wall-clock time is recorded too), evaluates on
``val/`` at regular CPU-time intervals, keeps the best checkpoint by val Dice and writes a log per model plus
a summary (JSON, CSV and a Markdown table) into ``--out``::

    python -m benchmarks.kvasir --models patcher_small,unet,segformer_b0 --budget-minutes 10 --threads 1

Every model gets the same data, augmentation, input size, loss, optimiser and budget:

- data: all images/masks decoded once into memory (uint8); train images resized to ``--base-size`` (320)
  squares, val images to ``--input-size`` (256) squares; masks thresholded at > 127;
- augmentation (per sample, plain torch): random rescale 0.5-1.5 of the input size, random crop/pad to 256,
  horizontal and vertical flips, random 90-degree rotation; ImageNet mean/std normalisation;
- loss ``monai_patcher.losses.BCEIoULoss`` (boundary-weighted BCE + IoU); Adam lr 1e-4; linear warm-up over
  ``--warmup`` of the budget, then poly decay (power 0.9) to 0 at the end of the budget; batch 8;
- precision (``--precision``): fp32, or bf16 (``torch.autocast("cpu", dtype=torch.bfloat16)`` around the
  forward, loss and metrics in fp32); evaluation runs in the training precision.

``--budget-steps N`` replaces the CPU-time budget by N optimiser steps (learning rate and evaluations then follow
the step count: a deterministic schedule, for tests and step-matched comparisons).

A run survives an interruption: ``OUT/<model>/resume.pt`` (model, optimiser, random generators, data order,
CPU time spent, history, best) is written atomically at each evaluation and every ``--save-every-minutes`` of
training CPU time; the same command with ``--resume`` continues from it (same seed, same schedule, the CPU time
already spent counted). Without ``--resume`` an unfinished ``resume.pt`` is never overwritten.

Evaluation (per-image Dice and IoU, mean over images, threshold 0.5 on the sigmoid): the model sees the
256 x 256 val image; "full" metrics upsample the logits (bilinear) to the original mask size, "256" metrics
compare with the mask resized to 256 x 256. The full-resolution numbers are the headline ones.

Score a saved checkpoint on any image/mask folder pair::

    python -m benchmarks.kvasir --eval-only --checkpoint benchmarks/results/kvasir/patcher_small/best.pt \\
        --images ../shared/data/Kvasir-SEG/val/images --masks ../shared/data/Kvasir-SEG/val/masks

(``best.pt`` records the model name, input size and precision it was trained with; the evaluation uses them.)

``--smoke`` runs the whole flow on a few images with tiny settings in well under a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from monai_patcher.io import atomic_save, atomic_write
from monai_patcher.losses import BCEIoULoss
from monai_patcher.seeding import RNGState

from .models import MODEL_NAMES, PATCHER_VARIANTS, build_model, count_parameters, describe_model

HERE = Path(__file__).resolve().parent

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "Kvasir-SEG"
DEFAULT_OUT = HERE / "results" / "kvasir"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
PRECISIONS = ("fp32", "bf16")
RESUME_FILE = "resume.pt"
#: the settings a resumed run must share with the run it continues (they decide data, schedule and results)
RUN_KEYS = ("batch_size", "eval_batch_size", "input_size", "base_size", "scale_range", "lr", "warmup", "seed",
            "budget_minutes", "budget_steps", "evals", "limit_train", "limit_val", "precision")


# ----------------------------------------------------------------------------------------------------- data
def list_pairs(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    """Image/mask pairs matched by file stem (sorted by name)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = []
    for p in sorted(images_dir.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.stem not in masks:
            raise FileNotFoundError(f"no mask for {p.name} in {masks_dir}")
        pairs.append((p, masks[p.stem]))
    if not pairs:
        raise FileNotFoundError(f"no images in {images_dir}")
    return pairs


def _read_resized(path: Path, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft(mode, (size, size))  # DCT-domain downscaling: much faster decoding of large JPEGs
        im = im.convert(mode).resize((size, size), Image.BILINEAR)
        return np.asarray(im)


def _read_full_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def load_split(images_dir, masks_dir, size: int, full_masks: bool = False, limit: int | None = None) -> dict:
    """Decode a folder pair once: ``images`` N x 3 x size x size uint8, ``masks`` N x 1 x size x size uint8
    in {0, 1} (resized mask > 127), ``names``, and with ``full_masks`` the original-size boolean masks."""
    pairs = list_pairs(images_dir, masks_dir)[:limit]
    imgs = np.stack([_read_resized(i, size, "RGB") for i, _ in pairs]).transpose(0, 3, 1, 2)
    msks = np.stack([_read_resized(m, size, "L") > 127 for _, m in pairs])[:, None]
    out = {
        "images": torch.from_numpy(np.ascontiguousarray(imgs)),
        "masks": torch.from_numpy(msks.astype(np.uint8)),
        "names": [i.stem for i, _ in pairs],
    }
    if full_masks:
        out["full_masks"] = [_read_full_mask(m) for _, m in pairs]
    return out


def cached_split(cache_dir: Path | None, tag: str, *args, **kwargs) -> dict:
    """``load_split`` with an on-disk cache (``cache_dir/tag.pt``; never commit it: it is derived data).

    Only a whole split is cached, written atomically so that several runs can share one cache folder
    (``--cache-dir``); with ``limit`` a cached whole split is returned as it is (the caller keeps its first
    images) and a missing one is decoded without caching.
    """
    path = None if cache_dir is None else Path(cache_dir) / f"{tag}.pt"
    if path is not None and path.exists():
        return torch.load(path, weights_only=False)
    data = load_split(*args, **kwargs)
    if path is not None and kwargs.get("limit") is None:
        atomic_save(data, path)
    return data


def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B x 3 x H x W) -> float, ImageNet mean/std."""
    return (x_uint8.float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, size: int, scale_range: tuple[float, float], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference polyp augmentation on a batch of uint8 squares (plain torch, per sample).

    Random rescale of the ``size`` square by ``scale_range``, random crop (or zero pad, after normalisation:
    the ImageNet mean) to ``size``, horizontal/vertical flips (p = 0.5 each), random 90-degree rotation
    (k in 0..3). Returns normalised images ``B x 3 x size x size`` and masks ``B x 1 x size x size`` in {0, 1}.
    """
    xs, ms = [], []
    lo, hi = scale_range
    for img, msk in zip(images, masks):
        r = torch.rand(6, generator=gen).tolist()
        t = max(8, int(round(size * (lo + (hi - lo) * r[0]))))
        x = F.interpolate(img[None].float(), size=(t, t), mode="bilinear", align_corners=False, antialias=True)
        m = F.interpolate(msk[None].float(), size=(t, t), mode="bilinear", align_corners=False, antialias=True) > 0.5
        x = (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        m = m.float()
        if t < size:
            py, px = int(r[1] * (size - t + 1)), int(r[2] * (size - t + 1))
            pad = (px, size - t - px, py, size - t - py)
            x, m = F.pad(x, pad), F.pad(m, pad)
        elif t > size:
            oy, ox = int(r[1] * (t - size + 1)), int(r[2] * (t - size + 1))
            x, m = x[..., oy : oy + size, ox : ox + size], m[..., oy : oy + size, ox : ox + size]
        if r[3] < 0.5:
            x, m = x.flip(-1), m.flip(-1)
        if r[4] < 0.5:
            x, m = x.flip(-2), m.flip(-2)
        k = int(r[5] * 4) % 4
        if k:
            x, m = torch.rot90(x, k, (-2, -1)), torch.rot90(m, k, (-2, -1))
        xs.append(x)
        ms.append(m)
    return torch.cat(xs).contiguous(), torch.cat(ms).contiguous()


# --------------------------------------------------------------------------------------------------- metrics
def dice_iou(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Dice and IoU of two boolean masks (both empty: 1, 1)."""
    pred, gt = torch.as_tensor(pred).bool(), torch.as_tensor(gt).bool()
    inter = (pred & gt).sum().item()
    ps, gs = pred.sum().item(), gt.sum().item()
    union = ps + gs - inter
    if ps + gs == 0:
        return 1.0, 1.0
    return 2.0 * inter / (ps + gs), inter / union


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The context a forward runs in: nothing for ``"fp32"``, CPU autocast to bfloat16 for ``"bf16"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


@torch.no_grad()
def predict_logits(model, images_u8: torch.Tensor, batch_size: int = 8, precision: str = "fp32") -> torch.Tensor:
    """Logits ``N x 1 x H x W`` (float32) for uint8 images ``N x 3 x H x W`` (eval mode, forward in ``precision``)."""
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = normalize(images_u8[i : i + batch_size])
        with autocast(precision):
            out.append(model(x).float())
    return torch.cat(out)


def evaluate(model, data: dict, batch_size: int = 8, precision: str = "fp32") -> dict:
    """Per-image Dice/IoU (mean over images) at the input size and, if present, at the original mask size."""
    logits = predict_logits(model, data["images"], batch_size, precision)
    d256, i256, dfull, ifull = [], [], [], []
    for j in range(len(logits)):
        d, i = dice_iou(logits[j, 0] > 0, data["masks"][j, 0] > 0)
        d256.append(d)
        i256.append(i)
        if "full_masks" in data:
            gt = data["full_masks"][j]
            up = F.interpolate(logits[j : j + 1], size=gt.shape, mode="bilinear", align_corners=False)[0, 0]
            d, i = dice_iou(up > 0, gt)
            dfull.append(d)
            ifull.append(i)
    res = {"dice_256": float(np.mean(d256)), "iou_256": float(np.mean(i256)), "per_image_dice_256": d256}
    if dfull:
        res.update(dice_full=float(np.mean(dfull)), iou_full=float(np.mean(ifull)), per_image_dice_full=dfull)
        res["per_image_iou_full"] = ifull
    return res


# -------------------------------------------------------------------------------------------------- training
def lr_at(frac: float, base_lr: float, warmup: float, power: float = 0.9, warmup_ratio: float = 1e-6) -> float:
    """Linear warm-up over the first ``warmup`` fraction of the budget, then poly decay to 0 at the end."""
    frac = min(max(frac, 0.0), 1.0)
    if warmup > 0 and frac < warmup:
        return base_lr * (warmup_ratio + (1 - warmup_ratio) * frac / warmup)
    return base_lr * (1 - frac) ** power


def run_config(args, skip: tuple[str, ...] = ()) -> dict:
    """``vars(args)`` for a JSON log (paths as strings), without the ``skip`` keys."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}


@dataclass
class Progress:
    """Where :func:`train_for_budget` stands: at an evaluation, and (returned) at the end."""

    step: int = 0
    train_cpu_s: float = 0.0  # process CPU time of the training steps
    train_wall_s: float = 0.0
    eval_cpu_s: float = 0.0  # process CPU time of the evaluations so far (this one included)
    lr: float = 0.0  # learning rate of the last step
    train_loss: float = float("nan")  # mean loss of the steps since the previous evaluation


def train_for_budget(
    model: torch.nn.Module,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    evaluate_fn: Callable[[], dict],
    on_eval: Callable[[Progress, dict], None],
    budget_s: float,
    evals: int,
    lr: float,
    warmup: float,
    stop_on_nonfinite: bool = False,
    log_prefix: str = "",
    *,
    budget_steps: int | None = None,
    precision: str = "fp32",
    state: dict | None = None,
    save_state: Callable[[dict], None] | None = None,
    save_every_s: float = 0.0,
) -> Progress:
    """The benchmarks' training loop: Adam + ``BCEIoULoss`` for ``budget_s`` seconds of process CPU time.

    Each step takes ``x, y = next_batch()``, its learning rate is :func:`lr_at` of the budget spent so far.
    ``evals`` times, evenly spaced in training CPU time (and after the step that ends the budget), it calls
    ``res = evaluate_fn()`` (its CPU time counted apart, as ``eval_cpu_s``) then ``on_eval(progress, res)``.
    With ``stop_on_nonfinite`` a non-finite loss ends the run (a message, no evaluation). Returns the final
    :class:`Progress`.

    ``budget_steps`` makes the budget that many steps instead (learning rate and evaluations then depend on the
    step count only: a deterministic schedule). ``precision`` is the forward's (:func:`autocast`); the loss is
    computed in float32 either way.

    Resuming: ``save_state(loop_state)`` is called after each ``on_eval`` and after the first step that ends
    ``save_every_s`` seconds of training CPU time since the last call (0: at evaluations only). ``loop_state``
    holds the optimiser, the :class:`Progress`, the next evaluation time, the losses since the last evaluation
    and the global random generators (``RNGState``); passed back as ``state`` (to a model and ``next_batch`` in
    the same state as then), the run goes on exactly as if it had not stopped.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = BCEIoULoss()
    total = float(budget_steps) if budget_steps else budget_s
    eval_every = total / max(evals, 1)
    p = Progress()
    next_eval, losses = eval_every, []
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        p = Progress(**state["progress"])
        next_eval, losses = state["next_eval"], list(state["losses"])
        RNGState().load_state_dict(state["rng"])
    saved_at = p.train_cpu_s

    def spent() -> float:
        return p.step if budget_steps else p.train_cpu_s

    def save() -> None:
        nonlocal saved_at
        saved_at = p.train_cpu_s
        if save_state is not None:
            save_state({"optimizer": opt.state_dict(), "progress": asdict(p), "next_eval": next_eval,
                        "losses": list(losses), "rng": RNGState().state_dict()})

    while spent() < total:
        c0, w0 = time.process_time(), time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(spent() / total, lr, warmup)
        x, y = next_batch()
        model.train()
        with autocast(precision):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        p.step += 1
        losses.append(loss.item())
        p.train_cpu_s += time.process_time() - c0
        p.train_wall_s += time.perf_counter() - w0
        if stop_on_nonfinite and not math.isfinite(losses[-1]):
            print(f"{log_prefix}non-finite loss at step {p.step}; stopping", flush=True)
            break
        if spent() >= next_eval or spent() >= total:
            next_eval += eval_every
            c1 = time.process_time()
            res = evaluate_fn()
            p.eval_cpu_s += time.process_time() - c1
            p.lr, p.train_loss = opt.param_groups[0]["lr"], float(np.mean(losses))
            losses = []
            on_eval(p, res)
            save()
        elif save_every_s > 0 and p.train_cpu_s - saved_at >= save_every_s:
            save()
    return p


def _write_json(obj, path: Path, **kwargs) -> None:
    """``json.dump`` to ``path`` atomically (a reader never sees half a file)."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, **kwargs)

    atomic_write(path, write)


def best_checkpoint(name: str, step: int, model: torch.nn.Module, args) -> dict:
    """What ``best.pt`` holds: the weights and everything :func:`eval_only` needs to rebuild and run the model."""
    return {"model": name, "step": step, "state_dict": model.state_dict(), "input_size": args.input_size,
            "in_channels": 3, "out_channels": 1, "precision": args.precision}


def load_resume_state(name: str, path: Path, args) -> dict | None:
    """The run state to continue from ``path`` (``--resume``), or None to start afresh.

    Without ``--resume`` a finished run is started afresh, an unfinished one is an error (its state is never
    overwritten by accident). With ``--resume`` a missing state starts afresh; a state written with other
    :data:`RUN_KEYS` settings is an error (it would not continue the same run).
    """
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not args.resume:
        if state.get("finished"):
            return None
        raise SystemExit(f"{path}: an unfinished run of {name} (step {state['loop']['progress']['step']}); "
                         "continue it with --resume, or delete the file to start afresh")
    now = run_config(args)
    diff = {k: (state["config"].get(k), now.get(k)) for k in RUN_KEYS
            if _plain(state["config"].get(k)) != _plain(now.get(k))}
    if diff:
        raise SystemExit(f"{path}: --resume with other settings than the run it continues "
                         f"(setting: (saved, now)): {diff}")
    return state


def _plain(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def train_one(name: str, train: dict, val: dict, args, out_dir: Path) -> dict:
    """Train ``name`` for ``args.budget_minutes`` of process CPU time (or ``args.budget_steps`` steps); evaluate on
    val at intervals; keep ``resume.pt`` up to date and, with ``args.resume``, continue from it."""
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = build_model(name, in_channels=3, out_channels=1)
    n_params = count_parameters(model)
    budget = args.budget_minutes * 60.0
    mdir = out_dir / name
    mdir.mkdir(parents=True, exist_ok=True)
    state_path = mdir / RESUME_FILE
    state = load_resume_state(name, state_path, args)
    if state is not None and state.get("finished"):
        print(f"[{name}] finished already ({state_path}); nothing to resume", flush=True)
        return json.loads((mdir / "log.json").read_text())
    log = {
        "model": name,
        "description": describe_model(name),
        "params": n_params,
        "config": run_config(args, skip=("models",)),
        "history": [],
        "cut_short_by_budget": True,
    }
    n = len(train["images"])
    perm, pos = torch.randperm(n, generator=gen), 0
    best, best_per_image = {"dice_full": -1.0}, {}
    if state is not None:
        model.load_state_dict(state["model"])
        gen.set_state(state["generator"])
        perm, pos = state["perm"], state["pos"]
        log["history"], best, best_per_image = state["history"], state["best"], state["best_per_image"]
        log["resumed"] = state["resumed"] + [{k: state["loop"]["progress"][k] for k in ("step", "train_cpu_s")}]
        if best.get("step") == state["loop"]["progress"]["step"]:  # it may have stopped before best.pt was written
            atomic_save(best_checkpoint(name, best["step"], model, args), mdir / "best.pt")
            _write_json(best_per_image, mdir / "best_per_image.json")
        print(f"[{name}] resuming from step {state['loop']['progress']['step']} "
              f"({state['loop']['progress']['train_cpu_s']:.0f} s CPU spent)", flush=True)
    budget_text = f"{args.budget_steps} steps" if args.budget_steps else f"{budget:.0f} s CPU"
    print(f"[{name}] {n_params / 1e6:.2f} M parameters, budget {budget_text}, precision {args.precision} "
          "(training and evaluation)", flush=True)
    new_best = False

    def next_batch():
        nonlocal perm, pos
        if pos + args.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + args.batch_size]
        pos += args.batch_size
        return augment_batch(train["images"][idx], train["masks"][idx], args.input_size, args.scale_range, gen)

    def on_eval(p: Progress, res: dict) -> None:
        nonlocal best, best_per_image, new_best
        rec = {
            "step": p.step,
            "epoch": p.step * args.batch_size / n,
            "train_cpu_s": round(p.train_cpu_s, 2),
            "train_wall_s": round(p.train_wall_s, 2),
            "eval_cpu_s_total": round(p.eval_cpu_s, 2),
            "lr": p.lr,
            "train_loss": p.train_loss,
            **{k: v for k, v in res.items() if not k.startswith("per_image")},
        }
        log["history"].append(rec)
        key = "dice_full" if "dice_full" in res else "dice_256"
        if res[key] > best.get("dice_full", -1.0):
            best = {**rec, "dice_full": res[key]}
            best.update({k: v for k, v in res.items() if not k.startswith("per_image")})
            best_per_image = {"names": val["names"], **{k: v for k, v in res.items() if k.startswith("per_image")}}
            new_best = True
        print(
            f"[{name}] step {p.step} ep {rec['epoch']:.2f} cpu {p.train_cpu_s:.0f}s wall {p.train_wall_s:.0f}s "
            f"loss {rec['train_loss']:.3f} val dice {res.get('dice_full', res['dice_256']):.4f} "
            f"iou {res.get('iou_full', res['iou_256']):.4f} (256: {res['dice_256']:.4f})",
            flush=True,
        )

    loop_state = state["loop"] if state is not None else None

    def save_state(loop: dict | None, finished: bool = False) -> None:
        # the state first: if the process stops before best.pt is written, the resumed run writes it (above)
        nonlocal new_best, loop_state
        loop_state = loop
        atomic_save({"model": model.state_dict(), "loop": loop, "generator": gen.get_state(), "perm": perm,
                     "pos": pos, "history": log["history"], "best": best, "best_per_image": best_per_image,
                     "resumed": log.get("resumed", []), "config": run_config(args), "finished": finished},
                    state_path)
        if new_best:
            atomic_save(best_checkpoint(name, best["step"], model, args), mdir / "best.pt")
            _write_json(best_per_image, mdir / "best_per_image.json")
            new_best = False
        if not finished:
            _write_json({**log, "best": best, "steps": loop["progress"]["step"]}, mdir / "log.json", indent=1)

    done = train_for_budget(
        model, next_batch, lambda: evaluate(model, val, args.eval_batch_size, args.precision), on_eval, budget,
        args.evals, args.lr, args.warmup, stop_on_nonfinite=True, log_prefix=f"[{name}] ",
        budget_steps=args.budget_steps, precision=args.precision, state=loop_state, save_state=save_state,
        save_every_s=args.save_every_minutes * 60.0,
    )
    log.update(
        best=best,
        steps=done.step,
        epochs=done.step * args.batch_size / n,
        train_cpu_s=done.train_cpu_s,
        train_wall_s=done.train_wall_s,
        eval_cpu_s=done.eval_cpu_s,
        sec_per_step_cpu=done.train_cpu_s / max(done.step, 1),
        cut_short_by_budget=True,
    )
    _write_json(log, mdir / "log.json", indent=1)
    save_state(loop_state, finished=True)  # log.json is final before the state says so
    return log


# --------------------------------------------------------------------------------------------------- summary
def write_summary(out_dir: Path) -> list[dict]:
    """Collect every ``<model>/log.json`` of ``out_dir`` into summary.json / summary.csv / summary.md."""
    rows = []
    for p in sorted(Path(out_dir).glob("*/log.json")):
        log = json.loads(p.read_text())
        b = log.get("best", {})
        rows.append(
            {
                "model": log["model"],
                "params_M": round(log["params"] / 1e6, 2),
                "dice_full": round(100 * b.get("dice_full", float("nan")), 2),
                "iou_full": round(100 * b.get("iou_full", float("nan")), 2),
                "dice_256": round(100 * b.get("dice_256", float("nan")), 2),
                "iou_256": round(100 * b.get("iou_256", float("nan")), 2),
                "best_step": b.get("step"),
                "steps": log.get("steps"),
                "epochs": round(log.get("epochs", float("nan")), 2),
                "budget_cpu_min": log["config"]["budget_minutes"],
                "budget_steps": log["config"].get("budget_steps"),
                "precision": log["config"].get("precision", "fp32"),
                "train_cpu_s": round(log.get("train_cpu_s", float("nan")), 1),
                "train_wall_s": round(log.get("train_wall_s", float("nan")), 1),
                "cpu_s_per_step": round(log.get("sec_per_step_cpu", float("nan")), 2),
                "finished": "train_cpu_s" in log,
            }
        )
    if not rows:
        return rows
    (Path(out_dir) / "summary.json").write_text(json.dumps(rows, indent=1))
    with open(Path(out_dir) / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = list(rows[0])
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    (Path(out_dir) / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------- eval
def eval_only(args) -> dict:
    """Score ``args.checkpoint`` (a ``best.pt``) on ``args.images`` / ``args.masks`` with the model, input size and
    precision it records (``--model`` / ``--precision`` override them; checkpoints without them: fp32)."""
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    name = args.model or ckpt["model"]
    model = build_model(name, ckpt.get("in_channels", 3), ckpt.get("out_channels", 1))
    model.load_state_dict(ckpt["state_dict"])
    size = int(ckpt.get("input_size", args.input_size))
    precision = args.precision or ckpt.get("precision", "fp32")
    data = load_split(args.images, args.masks, size, full_masks=True, limit=args.limit)
    c0, w0 = time.process_time(), time.perf_counter()
    res = evaluate(model, data, args.eval_batch_size, precision)
    out = {
        "model": name,
        "checkpoint": str(args.checkpoint),
        "step": ckpt.get("step"),
        "images": len(data["names"]),
        "input_size": size,
        "precision": precision,
        **{k: round(v, 4) for k, v in res.items() if not k.startswith("per_image")},
        "eval_cpu_s": round(time.process_time() - c0, 2),
        "eval_wall_s": round(time.perf_counter() - w0, 2),
    }
    print(json.dumps(out, indent=1), flush=True)
    if args.per_image_csv:
        with open(args.per_image_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "dice_full", "iou_full", "dice_256"])
            for row in zip(data["names"], res["per_image_dice_full"], res["per_image_iou_full"], res["per_image_dice_256"]):
                w.writerow(row)
    return out


def machine_info() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Kvasir-SEG folder with train/ and val/")
    p.add_argument("--models", default="patcher_small,unet,attention_unet,swin_unetr,segformer_b0",
                   help=f"comma-separated, from {list(MODEL_NAMES) + sorted(set(PATCHER_VARIANTS) - set(MODEL_NAMES))}")
    p.add_argument("--budget-minutes", type=float, default=6.0, help="training budget per model, process CPU minutes")
    p.add_argument("--budget-steps", type=int, default=None,
                   help="budget in optimiser steps instead of CPU time (a deterministic schedule)")
    p.add_argument("--evals", type=int, default=5, help="val evaluations per model, evenly spaced in CPU time")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--base-size", type=int, default=320, help="train images are stored as base-size squares")
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.5, 1.5))
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.05, help="linear warm-up, fraction of the budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="forward precision of training and evaluation (default fp32; eval-only: the checkpoint's)")
    p.add_argument("--resume", action="store_true", help="continue each model's run from OUT/<model>/resume.pt")
    p.add_argument("--save-every-minutes", type=float, default=5.0,
                   help="also save resume.pt after this much training CPU time (0: at evaluations only)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time equals compute time)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-val", type=int, default=None)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="folder of the decoded-data cache, may be shared by runs (default OUT/cache)")
    p.add_argument("--no-cache", action="store_true", help="do not cache the decoded data")
    p.add_argument("--summary-only", action="store_true", help="only rebuild OUT/summary.* from the model logs")
    p.add_argument("--smoke", action="store_true", help="tiny run of the whole flow (< 1 min)")
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--images", type=Path)
    p.add_argument("--masks", type=Path)
    p.add_argument("--model", default=None, help="eval-only: model name (default: the checkpoint's)")
    p.add_argument("--limit", type=int, default=None, help="eval-only: first N images")
    p.add_argument("--per-image-csv", type=Path, default=None, help="eval-only: write per-image scores")
    args = p.parse_args(argv)
    args.scale_range = tuple(args.scale_range)
    if args.budget_steps is not None and args.budget_steps < 1:
        p.error("--budget-steps must be at least 1")
    if not args.eval_only:
        args.precision = args.precision or "fp32"
    if args.smoke:
        args.limit_train = args.limit_train or 16
        args.limit_val = args.limit_val or 8
        args.input_size, args.base_size, args.batch_size = 64, 80, 2
        args.budget_minutes = min(args.budget_minutes, 0.05)
        args.evals = 2
        if args.models == p.get_default("models"):
            args.models = "patcher_tiny,unet"
        if args.out == DEFAULT_OUT:
            args.out = DEFAULT_OUT.parent / "kvasir_smoke"
        args.no_cache = True
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.summary_only:
        write_summary(args.out)
        return 0
    if args.eval_only:
        if not (args.checkpoint and args.images and args.masks):
            raise SystemExit("--eval-only needs --checkpoint, --images and --masks")
        eval_only(args)
        return 0
    if not (args.data / "train" / "images").is_dir():
        raise SystemExit(f"Kvasir-SEG not found at {args.data} (expected train/images, train/masks, val/...)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODEL_NAMES and m not in PATCHER_VARIANTS:
            raise SystemExit(f"unknown model {m!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    cache = None if args.no_cache else args.cache_dir or args.out / "cache"
    t0 = time.perf_counter()
    train = cached_split(cache, f"train_{args.base_size}", args.data / "train" / "images", args.data / "train" / "masks",
                         args.base_size, limit=args.limit_train)
    val = cached_split(cache, f"val_{args.input_size}", args.data / "val" / "images", args.data / "val" / "masks",
                       args.input_size, full_masks=True, limit=args.limit_val)
    if args.limit_train:
        train = {k: v[: args.limit_train] for k, v in train.items()}
    if args.limit_val:
        val = {k: v[: args.limit_val] for k, v in val.items()}
    print(f"data: {len(train['names'])} train, {len(val['names'])} val, loaded in {time.perf_counter() - t0:.1f}s; "
          f"machine {machine_info()}", flush=True)
    (args.out / "machine.json").write_text(json.dumps(machine_info(), indent=1))
    for m in models:
        train_one(m, train, val, args, args.out)
        write_summary(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training step and forward on one CUDA GPU, fp32 and AMP, for the Patcher presets against UNet and SegFormer-b0.

    bash benchmarks/gpu_check.sh                  # or: python -m benchmarks.gpu_check --models patcher_small,unet

For every model (random init, ``B x 3 x size x size`` random images and masks, ``BCEIoULoss`` in fp32, Adam) and
every precision (``fp32``; ``bf16`` and ``fp16``: ``torch.autocast("cuda")``, fp16 with a ``GradScaler``): the
median time of ``--steps`` training steps after ``--warmup`` untimed ones, the median time of the eval-mode forward
(``torch.inference_mode``) of the same batch, their ratio, images per second, the peak GPU memory of the training
steps, and the loss (finite, or the row says so). Patcher rows also time the eval forward on the plain path
(:func:`monai_patcher.networks.set_fast_paths` off): the fast paths must not slow the GPU down. All rows run in one
process, so their ratios are comparable. Without a CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

DEFAULT_MODELS = "patcher_small,patcher_paper,unet,segformer_b0"


def _timed(fn, steps: int) -> float:
    """Median seconds of ``fn`` over ``steps`` calls, each synchronised with the GPU."""
    import torch

    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, precision: str, args: argparse.Namespace) -> dict:
    """One model at one precision: train step, eval forward (and the plain path's for Patcher models)."""
    import torch

    from monai_patcher.losses import BCEIoULoss
    from monai_patcher.networks import set_fast_paths

    from .models import build_model

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, out_channels=1).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = BCEIoULoss()
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    y = (torch.rand(args.batch_size, 1, args.size, args.size, device=device) > 0.8).float()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    losses = []

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            model(x)

    for _ in range(args.warmup):
        step()
    torch.cuda.reset_peak_memory_stats()
    train_s = _timed(step, args.steps)
    peak = torch.cuda.max_memory_allocated() / 2**30
    model.eval()
    for _ in range(args.warmup):
        forward()
    eval_s = _timed(forward, args.steps)
    plain_s = float("nan")
    if name.startswith("patcher"):
        set_fast_paths(model, False)
        for _ in range(args.warmup):
            forward()
        plain_s = _timed(forward, args.steps)
        set_fast_paths(model, True)
    return {"model": name, "precision": precision, "train_s": train_s, "eval_s": eval_s, "plain_eval_s": plain_s,
            "images_per_s": args.batch_size / train_s, "peak_gib": peak,
            "loss_finite": all(math.isfinite(v) for v in losses)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--precisions", default="fp32,bf16,fp16")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU available (torch.cuda.is_available() is False): nothing to check, exiting 0.")
        return 0
    torch.backends.cudnn.benchmark = True
    print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}; batch "
          f"{args.batch_size}, {args.size} x {args.size}; median of {args.steps} after {args.warmup} warm-up", flush=True)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for precision in [q.strip() for q in args.precisions.split(",") if q.strip()]:
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                continue
            try:
                rows.append(measure(name, precision, args))
            except torch.cuda.OutOfMemoryError:
                rows.append({"model": name, "precision": precision, "error": "out of GPU memory"})
            torch.cuda.empty_cache()  # the model of this row is gone with measure()'s frame
            print(rows[-1], flush=True)
    print("\n| model | precision | train step ms | images/s | eval forward ms | train / eval | plain-path eval ms "
          "| peak GiB | loss finite |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['precision']} | {r['error']} | | | | | | |")
            continue
        print(f"| {r['model']} | {r['precision']} | {1e3 * r['train_s']:.1f} | {r['images_per_s']:.0f} "
              f"| {1e3 * r['eval_s']:.1f} | {r['train_s'] / r['eval_s']:.2f} | {1e3 * r['plain_eval_s']:.1f} "
              f"| {r['peak_gib']:.2f} | {r['loss_finite']} |")
    return 0 if all(r.get("loss_finite") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

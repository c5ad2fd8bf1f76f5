"""Training-step speed and memory: one optimiser step (forward + backward + Adam) per model, each in its own process.

    python -m benchmarks.bench_train_step --models patcher_small,unet --batch-size 8 --size 256 --threads 1

For every model a child process builds the network (random init), runs ``--warmup`` untimed steps (the first
Adam step allocates the optimiser state) and then ``--steps`` timed steps on random data (``B x 3 x size x
size``, BCE + IoU loss). Reported per model: parameters, process CPU seconds and wall seconds per step, the
child's peak resident memory (``ru_maxrss``) and its resident memory after building the model (so the
difference is what training adds). Each child runs under an address-space limit (``--mem-limit-gb``) so
that a model too large for the machine fails with an allocation error instead of exhausting a shared machine's
memory. Results go to ``--out`` as JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from . import child_env, module_command

HERE = Path(__file__).resolve().parent
DEFAULT_MODELS = "patcher_small,unet,attention_unet,swin_unetr,segformer_b0,segformer_b5,patcher_paper"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> dict:
    import torch

    from monai_patcher.losses import BCEIoULoss

    from .models import build_model, count_parameters

    if args.mem_limit_gb > 0:  # fail with an allocation error instead of pushing a shared machine into swap/OOM
        lim = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.child, in_channels=3, out_channels=1).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = BCEIoULoss()
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    y = (torch.rand(args.batch_size, 1, args.size, args.size) > 0.8).float()
    rss_model = _rss_mb()

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    cpu, wall = [], []
    for _ in range(args.steps):
        c0, w0 = time.process_time(), time.perf_counter()
        step()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {
        "model": args.child,
        "params_M": round(count_parameters(model) / 1e6, 2),
        "batch_size": args.batch_size,
        "size": args.size,
        "threads": args.threads,
        "steps_timed": args.steps,
        "cpu_s_per_step": round(min(cpu), 2),
        "wall_s_per_step": round(min(wall), 2),
        "cpu_s_all": [round(c, 2) for c in cpu],
        "wall_s_all": [round(w, 2) for w in wall],
        "rss_after_build_MiB": round(rss_model),
        "peak_rss_MiB": round(peak),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=1, help="timed steps (the minimum is reported)")
    p.add_argument("--mem-limit-gb", type=float, default=14.0,
                   help="address-space limit of each child (RLIMIT_AS); a model that needs more fails (0: none)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "train_step")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        cmd = module_command("bench_train_step", "--child", name, "--batch-size", str(args.batch_size), "--size",
                             str(args.size), "--threads", str(args.threads), "--warmup", str(args.warmup), "--steps",
                             str(args.steps), "--mem-limit-gb", str(args.mem_limit_gb))
        proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", env=child_env())
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            row = {"model": name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        else:
            row = json.loads(lines[-1][7:])
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "summary.json").write_text(
            json.dumps({"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()}, "rows": rows},
                       indent=1)
        )
    cols = ["model", "params_M", "cpu_s_per_step", "wall_s_per_step", "rss_after_build_MiB", "peak_rss_MiB"]
    md = [f"batch {args.batch_size}, {args.size} x {args.size}, {args.threads} thread(s), {args.warmup} warm-up step(s), "
          f"min of {args.steps} timed step(s)", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            err = "out of memory (limit)" if "allocate" in r["error"] else r["error"][:80]
            md.append(f"| {r['model']} | failed: {err} |" + " |" * (len(cols) - 2))
        else:
            md.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    (args.out / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

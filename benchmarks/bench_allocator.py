"""Page faults and forward time of the Patcher forward in fresh processes, glibc's default malloc against
:func:`monai_patcher.allocator.keep_freed_memory`.

Every process builds the model (seed 0), runs one warm-up forward and ``--forwards`` timed ones on a
``1 x 2 x S x S`` image under ``torch.inference_mode``, and reports the minor page faults and wall time of each.
The two settings alternate process by process (default, keep, default, ...), so a busy moment of a shared machine
hits both; how many page faults the default allocator takes depends on the heap's history, so it varies between
processes of the same code, and that variation is what this measures.

Usage::

    python -m benchmarks.bench_allocator --preset paper --processes 6 --forwards 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess

from . import child_env, module_command, peak_rss_mib


def child(preset: str, size: int, forwards: int, keep: bool) -> dict:
    """One process's measurements (run in the child)."""
    import resource
    import time

    from monai_patcher.allocator import keep_freed_memory

    if keep and not keep_freed_memory():
        raise SystemExit("this platform has no glibc mallopt")
    import torch

    from .models import build_patcher

    torch.manual_seed(0)
    net = build_patcher(f"patcher_{preset}", in_channels=2).eval()
    x = torch.randn(1, 2, size, size)
    faults, times = [], []
    with torch.inference_mode():
        net(x)
        for _ in range(forwards):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    rss = int(peak_rss_mib())
    return {"keep": keep, "faults": faults, "times": times, "max_rss_mib": rss}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--processes", type=int, default=6, help="processes of each setting")
    p.add_argument("--forwards", type=int, default=5, help="timed forwards per process")
    p.add_argument("--child", choices=("default", "keep"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.preset, args.size, args.forwards, args.child == "keep")))
        return
    env = {k: v for k, v in child_env().items() if not k.startswith("MALLOC_")}
    print(f"preset {args.preset}, 1 x 2 x {args.size} x {args.size}, {args.forwards} forwards per process, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| process | allocator | page faults per forward | forward (s, median) | max RSS (MiB) |")
    print("|---|---|---|---|---|")
    rows: dict[str, list[dict]] = {"default": [], "keep": []}
    for i in range(2 * args.processes):
        mode = ("default", "keep")[i % 2]
        cmd = module_command("bench_allocator", "--child", mode, "--preset", args.preset, "--size", str(args.size),
                             "--forwards", str(args.forwards))
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows[mode].append(r)
        label = "glibc default" if mode == "default" else "keep_freed_memory()"
        print(f"| {i + 1} | {label} | {min(r['faults'])}-{max(r['faults'])} | {statistics.median(r['times']):.3f} "
              f"| {r['max_rss_mib']} |", flush=True)  # fmt: skip
    for mode, label in (("default", "glibc default"), ("keep", "keep_freed_memory()")):
        meds = [statistics.median(r["times"]) for r in rows[mode]]
        faults = [f for r in rows[mode] for f in r["faults"]]
        print(f"{label}: process medians {min(meds):.3f}-{max(meds):.3f} s (median {statistics.median(meds):.3f}); "
              f"page faults per forward {min(faults)}-{max(faults)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Forward-pass speed, FLOPs and memory of the Patcher presets next to MONAI's UNet, AttentionUnet and SwinUNETR.

For every model, in eval mode under ``torch.inference_mode`` on one ``1 x C x S x S`` image, the table gives:
parameters, the median forward time over ``--repeats`` runs after a warm-up, the FLOPs of one forward counted by
``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 FLOPs; attention counted too, see
:func:`count_flops`), the achieved GFLOP/s, the machine's fp32 matmul GFLOP/s (median of one ``2048^3`` product
timed just before every timed forward, see :class:`MatmulProbe`), their ratio (also without the attention FLOPs),
and the peak-RSS increase of the process while building and running it. The Patcher forward skips work that does
not change its outputs (a centre-only last block per stage, the gate's low-resolution taps), so its FLOPs as
executed are fewer than those of the architecture as defined (about 389 GFLOP for the paper preset, the issue's
and paper's count); two more columns give that count (:func:`as_defined`, attention not counted) and the ratio by
it.

Each model runs in its own child process, so the peak memory of one does not hide another's and every row starts
from the same state. Timings are wall-clock on a possibly shared machine: run it when the cores are idle, and
compare rows of the same run. ``--keep-freed-memory`` makes the children call
:func:`monai_patcher.allocator.keep_freed_memory` first (as the bundles do): glibc's malloc then keeps freed
memory, and large tensors are not page-faulted in again on every forward.

Usage::

    python -m benchmarks.bench_network                                  # paper/small/tiny + the MONAI models
    python -m benchmarks.bench_network --presets small tiny --models unet --repeats 10
    python -m benchmarks.bench_network --presets paper --models --keep-freed-memory
    python -m benchmarks.bench_network --profile paper                  # top ops of one forward, by self CPU time
    python -m benchmarks.bench_network --train-step --batch-size 8      # one training step per model (time, memory)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

from monai_patcher.allocator import keep_freed_memory

from . import child_env, models, module_command, peak_rss_mib
from .flops import as_defined, count_flops

PRESETS = ("paper", "small", "tiny")
MONAI_MODELS = ("unet", "attention_unet", "swin_unetr")
#: ``--models`` choices: the registry's networks other than the Patcher presets
OTHER_MODELS = tuple(n for n in models.MODEL_NAMES if not n.startswith("patcher_"))


def build_model(name: str, in_channels: int = 2, out_channels: int = 1) -> nn.Module:
    """A benchmarked network from the registry (:mod:`benchmarks.models`), in eval mode.

    Args:
        name: a Patcher preset (``"paper"``, ``"small"``, ``"tiny"``: the registry's ``patcher_<preset>``) or any
            other registry name (``"unet"``, ``"attention_unet"``, ``"swin_unetr"``, ...).
        in_channels: input channels.
        out_channels: output channels.

    Returns:
        The model in eval mode.
    """
    return models.build_model(f"patcher_{name}" if name in PRESETS else name, in_channels, out_channels).eval()


class MatmulProbe:
    """The machine's fp32 matmul rate, sampled between model forwards: one ``n x n @ n x n`` product per call.

    On a shared machine the speed changes from second to second; sampling the matmul rate right next to every
    timed forward and taking medians of both makes their ratio a property of the code, not of the moment.

    Args:
        n: matrix size.
    """

    def __init__(self, n: int = 2048) -> None:
        self.n = n
        self.a, self.b, self.out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(self.a, self.b, out=self.out)  # warm-up
        self.samples: list[float] = []

    def sample(self) -> float:
        """Time one product; returns (and records) its GFLOP/s (``2 n^3`` FLOPs)."""
        t0 = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        rate = 2 * self.n**3 / (time.perf_counter() - t0) / 1e9
        self.samples.append(rate)
        return rate

    def median(self) -> float:
        """Median of the recorded samples."""
        return statistics.median(self.samples)


def time_forward(
    model: nn.Module, x: torch.Tensor, repeats: int, time_budget: float, probe: MatmulProbe | None = None
) -> tuple[list[float], float]:
    """Forward times after one warm-up, in eval mode under ``torch.inference_mode``.

    Args:
        model: the network.
        x: its input.
        repeats: the number of timed forwards wanted.
        time_budget: seconds; slow models run fewer repeats (at least 3) to stay near this budget.
        probe: if given, one matmul-rate sample is taken before every timed forward.

    Returns:
        ``(times, warmup)``: the timed forward durations and the warm-up duration, in seconds.
    """
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        warmup = time.perf_counter() - t0
        n = max(3, min(repeats, int(time_budget / max(warmup, 1e-6))))
        times = []
        for _ in range(n):
            if probe is not None:
                probe.sample()
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return times, warmup


def measure(name: str, size: int, in_channels: int, repeats: int, time_budget: float) -> dict[str, Any]:
    """All the numbers of one table row (run this in a fresh process, see :func:`run_child`).

    Args:
        name: model name (see :func:`build_model`).
        size: image side ``S`` (the input is ``1 x in_channels x S x S``).
        in_channels: input channels.
        repeats: timed forwards.
        time_budget: seconds of timed forwards to aim for.

    Returns:
        A JSON-serialisable dict.
    """
    torch.manual_seed(0)
    x = torch.randn(1, in_channels, size, size)
    probe = MatmulProbe()
    rss0 = peak_rss_mib()
    model = build_model(name, in_channels)
    params = sum(p.numel() for p in model.parameters())
    times, warmup = time_forward(model, x, repeats, time_budget, probe)
    matmul = probe.median()
    rss1 = peak_rss_mib()
    flops, attention_flops = count_flops(model, x)
    with as_defined(model):
        defined_flops, defined_attention = count_flops(model, x)
    median = statistics.median(times)
    return {
        "model": name,
        "params_m": params / 1e6,
        "time_s": median,
        "time_min_s": min(times),
        "repeats": len(times),
        "warmup_s": warmup,
        "gflop": flops / 1e9,
        "gflop_attention": attention_flops / 1e9,
        "gflops": flops / 1e9 / median,
        "matmul_gflops": matmul,
        "ratio": flops / 1e9 / median / matmul,
        "ratio_without_attention": (flops - attention_flops) / 1e9 / median / matmul,
        "gflop_defined_without_attention": (defined_flops - defined_attention) / 1e9,
        "ratio_defined_without_attention": (defined_flops - defined_attention) / 1e9 / median / matmul,
        "peak_mib": rss1 - rss0,
        "threads": torch.get_num_threads(),
    }


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`measure` for one model in a new Python process and return its row.

    Args:
        name: model name.
        args: the parsed command line (size, channels, repeats, threads, time budget).

    Returns:
        The row, or ``{"model": name, "error": ...}`` when the child failed.
    """
    cmd = module_command("bench_network", "--child", name, "--size", str(args.size), "--in-channels",
                         str(args.in_channels), "--repeats", str(args.repeats), "--time-budget", str(args.time_budget))
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.keep_freed_memory:
        cmd.append("--keep-freed-memory")
    res = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", env=child_env())
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"model": name, "error": (res.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def format_table(rows: list[dict[str, Any]], size: int, in_channels: int) -> str:
    """Rows as a markdown table.

    Args:
        rows: outputs of :func:`measure`.
        size: image side.
        in_channels: input channels.

    Returns:
        The table text.
    """
    head = (
        f"| model (1 x {in_channels} x {size} x {size}) | params (M) | forward (s, median) | repeats | GFLOP "
        "| achieved GFLOP/s | fp32 matmul GFLOP/s | achieved / matmul | same, attention FLOPs not counted "
        "| GFLOP as defined, attention not counted | achieved / matmul by that count | peak RSS increase (MiB) |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |" + " |" * 10)
            continue
        lines.append(
            f"| {r['model']} | {r['params_m']:.2f} | {r['time_s']:.3f} | {r['repeats']} | {r['gflop']:.1f} "
            f"| {r['gflops']:.1f} | {r['matmul_gflops']:.1f} | {100 * r['ratio']:.0f} % "
            f"| {100 * r['ratio_without_attention']:.0f} % | {r['gflop_defined_without_attention']:.1f} "
            f"| {100 * r['ratio_defined_without_attention']:.0f} % | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def profile(name: str, size: int, in_channels: int, row_limit: int = 25) -> str:
    """``torch.profiler`` table of one forward (after a warm-up), top ops by self CPU time.

    Args:
        name: model name.
        size: image side.
        in_channels: input channels.
        row_limit: rows of the table.

    Returns:
        The profiler table.
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = build_model(name, in_channels)
    x = torch.randn(1, in_channels, size, size)
    with torch.inference_mode():
        model(x)
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            model(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", nargs="*", default=list(PRESETS), choices=PRESETS, help="Patcher presets")
    p.add_argument("--models", nargs="*", default=list(MONAI_MODELS), choices=OTHER_MODELS,
                   help="other networks of benchmarks.models (default: the MONAI ones)")
    p.add_argument("--size", type=int, default=256, help="image side (default 256)")
    p.add_argument("--in-channels", type=int, default=2, help="input channels (default 2)")
    p.add_argument("--repeats", type=int, default=10, help="timed forwards per model (default 10)")
    p.add_argument("--time-budget", type=float, default=20.0,
                   help="seconds of timed forwards per model; slow models run fewer repeats, at least 3")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="run the models with glibc malloc keeping freed memory (monai_patcher.allocator,\n"
                        "as the bundles do) instead of the default allocator")
    p.add_argument("--profile", metavar="MODEL", help="print torch.profiler top ops of one forward of MODEL")
    p.add_argument("--json", metavar="FILE", help="also write the rows to FILE")
    p.add_argument("--train-step", action="store_true",
                   help="instead: time one optimiser step (forward + backward + Adam) per model, in child processes,\n"
                        "with peak memory (benchmarks.bench_train_step; RGB input, --size, --batch-size)")
    p.add_argument("--batch-size", type=int, default=8, help="--train-step batch size (default 8)")
    p.add_argument("--train-models", default=None,
                   help="--train-step: comma-separated names from benchmarks.models (default: all compared models)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_step:
        from . import bench_train_step

        ts_args = ["--batch-size", str(args.batch_size), "--size", str(args.size), "--threads", str(args.threads or 1)]
        bench_train_step.main(ts_args + (["--models", args.train_models] if args.train_models else []))
        return
    if args.child:
        if args.keep_freed_memory and not keep_freed_memory():
            raise SystemExit("--keep-freed-memory: this platform has no glibc mallopt")
        print(json.dumps(measure(args.child, args.size, args.in_channels, args.repeats, args.time_budget)))
        return
    if args.profile:
        print(profile(args.profile, args.size, args.in_channels))
        return
    names = list(args.presets) + list(args.models)
    allocator = "glibc malloc keeping freed memory" if args.keep_freed_memory else "default allocator"
    print(f"torch {torch.__version__}, {torch.get_num_threads() if not args.threads else args.threads} threads, "
          f"{os.cpu_count()} CPUs, {allocator}, load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    rows = []
    for name in names:
        row = run_child(name, args)
        rows.append(row)
        print(f"  {name}: " + (row.get("error") or f"{row['time_s']:.3f} s"), file=sys.stderr, flush=True)
    print(format_table(rows, args.size, args.in_channels))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

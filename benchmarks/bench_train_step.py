"""Training-step speed, FLOPs and memory: one forward + backward + Adam step per model, timed in one process.

    python -m benchmarks.bench_train_step --models patcher_small,unet --batch-size 8 --threads 1
    python -m benchmarks.bench_train_step --models patcher_paper --batch-size 1 --eval-forward --precision fp32,bf16
    python -m benchmarks.bench_train_step --models patcher_small,unet --fresh        # also in fresh processes
    python -m benchmarks.bench_train_step --profile patcher_small --batch-size 8     # where the time goes

**In one process** (the default): every model is built (random init, seed 0), gets ``--warmup`` untimed steps
(the first Adam step allocates the optimiser state), and then ``--rounds`` rounds in which each model takes one
timed step, in alternating order (A B C, C B A, ...), each right after one timed ``2048^3`` matmul in fp32 (and
in bf16 for bf16 rows). A busy moment of a shared machine then hits every row and its matmul sample alike, and the
ratios (model to model, model to matmul rate) are properties of the code. Inputs are random ``B x 3 x size x
size`` images with random binary masks; the loss is ``BCEIoULoss`` in fp32; ``bf16`` rows run the model under
``torch.autocast("cpu", dtype=torch.bfloat16)``. ``--eval-forward`` adds, per model, a row timing the eval-mode
forward (``torch.inference_mode``) of the same batch in the same rounds. The process calls
:func:`monai_patcher.allocator.keep_freed_memory` first, as the bundles do; ``--huge-pages on`` also
:func:`monai_patcher.allocator.use_huge_pages` (PyTorch reads that switch once per process, so an A/B of it is two
runs, best side by side).

Reported per row (medians over the rounds): process CPU seconds (``time.process_time``: all threads, not counting
time the process waited for a core, the steady figure on a shared machine) and wall seconds per step, images per
wall second, the training FLOPs as defined, the achieved rate and the matmul rate of the same precision measured
the same way (CPU time and wall), and their ratio. **Training FLOPs as defined** are ``3 x`` the forward FLOPs of
the architecture as defined (``torch.utils.flop_counter`` on one image, times the batch; Patcher models on their
plain path, :func:`monai_patcher.networks.set_fast_paths` off): the backward of a matrix product or convolution
costs two of its forwards (the input and the weight gradient). Attention products are not in that count (the
counter has no CPU formula for ``scaled_dot_product_attention``; ``flops.count_flops`` adds them, and the
``+ attn`` column gives the count with them). Eval rows count the forward once.

**In fresh processes** (``--fresh``): each model also runs alone in a child process (``--warmup`` steps, then
``--rounds`` timed steps), which gives its peak resident memory (:func:`benchmarks.peak_rss_mib`), its page faults
per step and the times of a process that starts cold; ``--child-allocator default`` leaves glibc's allocator as it
is (the earlier benchmark's setting) instead of ``keep_freed_memory``. Each child runs under an address-space limit
(``--mem-limit-gb``) so that a model too large for the machine fails with an allocation error.

**Profile** (``--profile MODEL``): ``torch.profiler`` over ``--profile-steps`` training steps after the warm-up;
the tables give the median over those steps of the time by op (self CPU time, forward and backward apart) and by
module (forward: the ops run inside each module's call; backward: the autograd nodes created there, matched by
their sequence numbers), grouped by encoder stage and part for Patcher models.

Results go to ``--out`` (Markdown and JSON); the tables also go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Callable

from . import child_env, module_command, peak_rss_mib

HERE = Path(__file__).resolve().parent

DEFAULT_MODELS = "patcher_small,unet,segformer_b0"


def cpu_description() -> str:
    """The CPU model, its bf16 matrix support and torch's vector capability, in one line."""
    import torch

    from monai_patcher.utils.amp import cpu_bf16_support

    name = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    bf16 = cpu_bf16_support() or "none"
    return f"{name}, {os.cpu_count()} CPUs, native bf16: {bf16}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"


# ---------------------------------------------------------------------------------------------------------------
# the work being timed


class Workload:
    """One model with its optimiser, loss and data; ``step`` is one training step, ``eval_forward`` one forward.

    Args:
        name: a model name of ``benchmarks/models.py``.
        batch_size: images per step.
        size: image side.
    """

    def __init__(self, name: str, batch_size: int, size: int) -> None:
        import torch

        from monai_patcher.losses import BCEIoULoss

        from .models import build_model

        torch.manual_seed(0)
        self.name = name
        self.model = build_model(name, in_channels=3, out_channels=1).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4, fused=True)  # as the bundles' train.json
        self.loss_fn = BCEIoULoss()
        self.x = torch.randn(batch_size, 3, size, size)
        self.y = (torch.rand(batch_size, 1, size, size) > 0.8).float()

    def step(self, precision: str = "fp32") -> None:
        """Forward (under bf16 autocast for ``"bf16"``), fp32 loss, backward, Adam step."""
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = self.model(self.x)
        loss = self.loss_fn(logits.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def eval_forward(self, precision: str = "fp32") -> None:
        """The eval-mode forward of the same batch, without autograd."""
        import torch

        self.model.eval()
        try:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                self.model(self.x)
        finally:
            self.model.train()


def forward_gflop_as_defined(model, size: int) -> tuple[float, float]:
    """GFLOP of one ``1 x 3 x size x size`` forward as defined: ``(matmuls and convolutions, attention products)``."""
    import torch

    from .flops import as_defined, count_flops

    was_training = model.training
    model.eval()
    try:
        with as_defined(model):
            total, attention = count_flops(model, torch.randn(1, 3, size, size))
    finally:
        model.train(was_training)
    return (total - attention) / 1e9, attention / 1e9


class MatmulRate:
    """Times one ``n x n @ n x n`` product of a dtype per call: CPU and wall GFLOP/s."""

    def __init__(self, dtype, n: int = 2048) -> None:
        import torch

        self.n = n
        self.a, self.b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        self.out = torch.empty(n, n, dtype=dtype)
        torch.mm(self.a, self.b, out=self.out)

    def sample(self) -> tuple[float, float]:
        import torch

        c0, w0 = time.process_time(), time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        flop = 2 * self.n**3 / 1e9
        return flop / max(time.process_time() - c0, 1e-9), flop / max(time.perf_counter() - w0, 1e-9)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _set_allocator(args: argparse.Namespace, keep: bool = True) -> bool:
    """The host-allocator settings, before any large tensor exists: freed memory kept (as the bundles) unless
    ``keep`` is false, huge pages with ``--huge-pages on``; returns whether huge pages are on."""
    from monai_patcher.allocator import keep_freed_memory, use_huge_pages

    if args.huge_pages == "off":
        os.environ["THP_MEM_ALLOC_ENABLE"] = "0"  # PyTorch's switch, which a child inherits from its parent
    huge = args.huge_pages == "on" and use_huge_pages()
    if keep:
        keep_freed_memory()
    return huge


def run_in_process(args: argparse.Namespace) -> dict[str, Any]:
    """Time every row in one process, alternating; returns the header and the rows."""
    huge = _set_allocator(args)
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    work = {name: Workload(name, args.batch_size, args.size) for name in args.model_list}
    probes = {p: MatmulRate(torch.float32 if p == "fp32" else torch.bfloat16) for p in precisions}
    rows: list[dict[str, Any]] = []
    for name, w in work.items():
        gflop, attention = forward_gflop_as_defined(w.model, args.size)
        for p in precisions:
            kinds = ["train", "eval"] if args.eval_forward else ["train"]
            for kind in kinds:
                per_image = gflop * (3 if kind == "train" else 1)
                rows.append({"model": name, "precision": p, "kind": kind, "batch_size": args.batch_size,
                             "threads": args.threads, "gflop_per_image_fwd": gflop, "gflop_attention_fwd": attention,
                             "gflop_per_step": per_image * args.batch_size,
                             "gflop_per_step_with_attention": (gflop + attention) * args.batch_size
                             * (3 if kind == "train" else 1),
                             "cpu_s": [], "wall_s": [], "matmul_cpu": [], "matmul_wall": []})  # fmt: skip

    def run(row: dict[str, Any]) -> None:
        w = work[row["model"]]
        fn: Callable[[str], None] = w.step if row["kind"] == "train" else w.eval_forward
        mm_cpu, mm_wall = probes[row["precision"]].sample()
        c0, w0 = time.process_time(), time.perf_counter()
        fn(row["precision"])
        row["cpu_s"].append(time.process_time() - c0)
        row["wall_s"].append(time.perf_counter() - w0)
        row["matmul_cpu"].append(mm_cpu)
        row["matmul_wall"].append(mm_wall)

    for _ in range(args.warmup):
        for row in rows:
            (work[row["model"]].step if row["kind"] == "train" else work[row["model"]].eval_forward)(row["precision"])
    for r in range(args.rounds):
        for row in rows if r % 2 == 0 else rows[::-1]:
            run(row)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{row['model']} {row['precision']} {row['kind']} {row['cpu_s'][-1]:.2f} s" for row in rows), flush=True)  # fmt: skip
    for row in rows:
        cpu, wall = _median(row["cpu_s"]), _median(row["wall_s"])
        row.update(
            cpu_s_per_step=cpu, wall_s_per_step=wall, images_per_s=args.batch_size / wall,
            gflops_cpu=row["gflop_per_step"] / cpu, gflops_wall=row["gflop_per_step"] / wall,
            matmul_gflops_cpu=_median(row["matmul_cpu"]), matmul_gflops_wall=_median(row["matmul_wall"]),
        )  # fmt: skip
        row["ratio_cpu"] = row["gflops_cpu"] / row["matmul_gflops_cpu"]
        row["ratio_wall"] = row["gflops_wall"] / row["matmul_gflops_wall"]
    return {
        "cpu": cpu_description(),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "size": args.size,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "peak_rss_mib_all_models": peak_rss_mib(),
        "huge_pages": huge,
        "rows": rows,
    }


def format_in_process(result: dict[str, Any]) -> str:
    """The in-process rows as a Markdown table (with a header line saying what ran)."""
    la0, la1 = result["load_average_before"][0], result["load_average_after"][0]
    lines = [
        f"{result['cpu']}; {result['threads']} thread(s); batch {result['batch_size']}, {result['size']} x "
        f"{result['size']}; {result['warmup']} warm-up step(s), median of {result['rounds']} alternating rounds; "
        f"load average {la0:.1f} before, {la1:.1f} after; process peak RSS {result['peak_rss_mib_all_models']:.0f} "
        f"MiB (all models); huge pages: {'on' if result.get('huge_pages') else 'off'}",
        "",
        "| model | precision | step | CPU s | wall s | images / s | GFLOP as defined (+ attn) | achieved GFLOP/s "
        "(CPU) | matmul GFLOP/s (CPU) | achieved / matmul (CPU) | same by wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['kind']} | {r['cpu_s_per_step']:.2f} | {r['wall_s_per_step']:.2f} "
            f"| {r['images_per_s']:.2f} | {r['gflop_per_step']:.4g} ({r['gflop_per_step_with_attention']:.4g}) "
            f"| {r['gflops_cpu']:.0f} | {r['matmul_gflops_cpu']:.0f} | {100 * r['ratio_cpu']:.0f} % "
            f"| {100 * r['ratio_wall']:.0f} % |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# fresh processes


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One model alone in this (fresh) process: warm-up, timed steps, peak memory and page faults."""
    huge = _set_allocator(args, keep=args.child_allocator == "keep")
    import torch

    if args.mem_limit_gb > 0:  # fail with an allocation error instead of pushing a shared machine into swap/OOM
        lim = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    torch.set_num_threads(args.threads)
    w = Workload(args.child, args.batch_size, args.size)
    rss_model = peak_rss_mib()
    cpu, wall, faults = [], [], []
    for i in range(args.warmup + args.rounds):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c0, w0 = time.process_time(), time.perf_counter()
        w.step(args.precision.split(",")[0])
        if i >= args.warmup:
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {
        "model": args.child,
        "allocator": args.child_allocator,
        "huge_pages": huge,
        "cpu_s_all": cpu,
        "wall_s_all": wall,
        "page_faults_all": faults,
        "cpu_s_per_step": _median(cpu),
        "wall_s_per_step": _median(wall),
        "rss_after_build_mib": rss_model,
        "peak_rss_mib": peak_rss_mib(),
    }


def run_fresh(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every model in its own child process (one after another)."""
    rows = []
    for name in args.model_list:
        cmd = module_command("bench_train_step", "--child", name, "--batch-size", str(args.batch_size), "--size",
               str(args.size), "--threads", str(args.threads), "--warmup", str(args.warmup), "--rounds",
               str(args.rounds), "--mem-limit-gb", str(args.mem_limit_gb), "--child-allocator", args.child_allocator,
               "--precision", args.precision, "--huge-pages", args.huge_pages)  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", env=child_env())
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            rows.append({"model": name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(lines[-1][7:]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def format_fresh(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"fresh processes, one per model, run one after another: {args.threads} thread(s), batch {args.batch_size}, "
        f"{args.warmup} warm-up step(s), median of {args.rounds} timed steps, allocator: {args.child_allocator}, "
        f"huge pages: {args.huge_pages}",
        "",
        "| model | CPU s | wall s | page faults / step | RSS after build (MiB) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            err = "out of memory (limit)" if "alloc" in r["error"] else r["error"][:80]
            lines.append(f"| {r['model']} | failed: {err} | | | | |")
        else:
            lines.append(
                f"| {r['model']} | {r['cpu_s_per_step']:.2f} | {r['wall_s_per_step']:.2f} "
                f"| {_median(r['page_faults_all']):.0f} | {r['rss_after_build_mib']:.0f} | {r['peak_rss_mib']:.0f} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# profile


class _ModuleRanges:
    """Forward hooks on every module: a profiler range per call, the module being run, and the autograd sequence
    numbers of the nodes made inside each call (a backward node's sequence number names the module it came from)."""

    def __init__(self, model) -> None:
        import torch

        self._record = torch.autograd.profiler.record_function
        self._seq = torch._C._autograd._get_sequence_nr
        self.ranges: list[tuple[str, int, int]] = []
        self._stack: list[tuple[str, Any, int]] = []
        self._handles = []
        for path, module in model.named_modules():
            self._handles.append(module.register_forward_pre_hook(partial(self._enter, path)))
            self._handles.append(module.register_forward_hook(partial(self._exit, path)))

    def _enter(self, path: str, module, inputs) -> None:
        rf = self._record("## " + path)
        rf.__enter__()
        self._stack.append((path, rf, self._seq()))

    def _exit(self, path: str, module, inputs, output) -> None:
        _, rf, start = self._stack.pop()
        rf.__exit__(None, None, None)
        self.ranges.append((path, start, self._seq()))

    def current(self) -> str:
        """The innermost module being run (forward)."""
        return self._stack[-1][0] if self._stack else "other"

    def owner(self, sequence_nr: int) -> str:
        """The innermost module whose call created the autograd node with this sequence number."""
        best, width = "other", None
        for path, start, end in self.ranges:
            if start <= sequence_nr < end and (width is None or end - start < width):
                best, width = path, end - start
        return best

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


_GATE_OPS = ("conv", "mm", "bmm", "addmm", "upsampledconv3x3", "linear")


def module_group(path: str, op: str) -> str:
    """A readable group for a module path (and, for ops run in a module's own code, the op), Patcher-aware."""
    path = re.sub(r"^(model\.)?(net\.)?", "", path)
    op = op.lower()
    m = re.match(r"stages\.(\d+)(?:\.(.*))?$", path)
    if m:
        stage, rest = f"stage {int(m.group(1)) + 1}", m.group(2) or ""
        if rest.startswith("patch_embed"):
            return f"{stage}: patch embedding"
        if rest == "norm":
            return f"{stage}: LayerNorm"
        b = re.match(r"blocks\.\d+(?:\.(\w+))?(?:\.(\w+))?", rest)
        if not b:
            return f"{stage}: windows + reassembly"
        part, sub = b.group(1) or "", b.group(2) or ""
        if part == "attn":
            return f"{stage}: attention"
        if part in ("norm1", "norm2"):
            return f"{stage}: LayerNorm"
        if part == "ffn":
            if sub in ("fc1", "fc2"):
                return f"{stage}: Mix-FFN linear"
            if sub in ("dwconv", "act") or (not sub and "conv" in op):
                return f"{stage}: Mix-FFN dwconv + GELU"
            return f"{stage}: Mix-FFN other"
        return f"{stage}: residual + DropPath"
    if path.startswith("decoder"):
        if path.startswith("decoder.experts"):
            return "decoder: expert MLPs"
        if path.startswith("decoder.gate"):
            return "decoder: gate"
        if path.startswith("decoder.head"):
            return "decoder: head"
        if any(k in op for k in _GATE_OPS):
            return "decoder: gate"
        if "upsample" in op or "interpolate" in op:
            return "decoder: expert upsampling"
        if any(k in op for k in ("softmax", "mul", "addcmul")):
            return "decoder: mixing"
        return "decoder: other"
    if path in ("loss", "optimizer"):
        return path
    if path in ("", "model", "net", "other"):
        return "top level (final upsampling, crop, ...)"
    return ".".join(path.split(".")[:2])


def _profiler_step(w: Workload, precision: str, ranges: _ModuleRanges) -> tuple[Counter, Counter]:
    """One step under ``torch.profiler``: (time by (module group, phase), self time by (phase, op)), in ms."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        w.step(precision)
    by_module: Counter = Counter()
    by_op: Counter = Counter()
    for e in prof.events():
        phase, parent = "forward", e.cpu_parent
        while parent is not None:
            if parent.name.startswith("autograd::engine::evaluate_function"):
                phase = "backward"
            elif parent.name == "## optimizer":
                phase = "optimizer"
            parent = parent.cpu_parent
        if e.name.startswith("aten::"):
            by_op[(phase, e.name)] += e.self_cpu_time_total / 1e3
        if e.name.startswith("autograd::engine::evaluate_function: "):
            node = e.name.split(": ", 1)[1]
            by_module[(module_group(ranges.owner(e.sequence_nr), node), "backward")] += e.cpu_time_total / 1e3
        elif e.name == "## optimizer":
            by_module[("optimizer", "optimizer")] += e.cpu_time_total / 1e3
        elif phase == "forward" and e.name.startswith("aten::"):
            p = e.cpu_parent
            if p is None or p.name.startswith("## "):
                owner = p.name[3:] if p is not None else "other"
                by_module[(module_group(owner, e.name), "forward")] += e.cpu_time_total / 1e3
    return by_module, by_op


def _cpu_time_step(w: Workload, precision: str, ranges: _ModuleRanges) -> tuple[Counter, Counter]:
    """One step with every op timed by its thread's CPU time (a ``TorchDispatchMode``): time spent waiting for a
    core on a shared machine is not counted. The same tables as :func:`_profiler_step` (op names without
    ``aten::``'s composite ops, which this level does not see)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Timer(TorchDispatchMode):
        phase = "forward"
        by_module: Counter = Counter()
        by_op: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            t0 = time.thread_time()
            out = func(*args, **(kwargs or {}))
            ms = (time.thread_time() - t0) * 1e3
            op = "aten::" + func.overloadpacket.__name__
            if op.startswith("aten::_record_function"):  # the module ranges' own bookkeeping
                return out
            node = torch._C._current_autograd_node()
            if node is not None:
                phase, group = "backward", module_group(ranges.owner(node._sequence_nr()), node.name())
            elif self.phase == "optimizer":
                phase, group = "optimizer", "optimizer"
            else:
                phase, group = "forward", module_group(ranges.current(), op)
            self.by_op[(phase, op)] += ms
            self.by_module[(group, phase)] += ms
            return out

    timer = Timer()
    timer.by_module, timer.by_op = Counter(), Counter()
    step = w.opt.step

    def optimizer_step(*a, **k):
        timer.phase = "optimizer"
        return step(*a, **k)

    w.opt.step = optimizer_step
    try:
        with timer:
            w.step(precision)
    finally:
        w.opt.step = step
    return timer.by_module, timer.by_op


def _format_profile(title: str, steps: list[tuple[Counter, Counter]], rows: int) -> list[str]:
    """Median over the steps of each entry; the module table and the top ops of forward and backward."""
    n = len(steps)

    def med(counters: list[Counter], key) -> float:
        return statistics.median([c.get(key, 0.0) for c in counters])

    mods, ops = [m for m, _ in steps], [o for _, o in steps]
    phases = ("forward", "backward", "optimizer")
    totals = {p: statistics.median([sum(v for (ph, _), v in o.items() if ph == p) for o in ops]) for p in phases}
    total = sum(totals.values())
    groups = sorted({g for m in mods for g, _ in m}, key=lambda g: -sum(med(mods, (g, p)) for p in phases))
    lines = [
        "", f"### {title} (median of {n} steps)", "",
        f"Ops: forward {totals['forward']:.0f} ms, backward {totals['backward']:.0f} ms, optimizer "
        f"{totals['optimizer']:.0f} ms (total {total:.0f} ms).", "",
        "| module group | forward ms | backward ms (optimizer: step) | share |", "|---|---|---|---|",
    ]  # fmt: skip
    for g in groups:
        f, b = med(mods, (g, "forward")), med(mods, (g, "backward")) + med(mods, (g, "optimizer"))
        lines.append(f"| {g} | {f:.0f} | {b:.0f} | {100 * (f + b) / max(total, 1e-9):.1f} % |")
    for phase in ("forward", "backward"):
        keys = {k for o in ops for k in o if k[0] == phase}
        top = sorted(((k[1], med(ops, k)) for k in keys), key=lambda kv: -kv[1])[:rows]
        lines += ["", f"| {phase}: op | self ms |", "|---|---|"] + [f"| {op} | {ms:.0f} |" for op, ms in top]
    return lines


def profile_steps(name: str, args: argparse.Namespace) -> str:
    """Profile ``--profile-steps`` training steps of model ``name`` twice: with ``torch.profiler`` (wall time) and
    by thread CPU time; returns the Markdown tables."""
    _set_allocator(args)
    import torch

    torch.set_num_threads(args.threads)
    precision = args.precision.split(",")[0]
    w = Workload(name, args.batch_size, args.size)
    for _ in range(args.warmup):
        w.step(precision)
    ranges = _ModuleRanges(torch.nn.ModuleDict({"model": w.model, "loss": w.loss_fn}))  # the loss gets a path too
    step = w.opt.step

    def optimizer_step(*a, **k):
        with torch.autograd.profiler.record_function("## optimizer"):
            return step(*a, **k)

    w.opt.step = optimizer_step
    load = os.getloadavg()[0]
    profiled = [_profiler_step(w, precision, ranges) for _ in range(args.profile_steps)]
    w.opt.step = step
    cpu_timed = [_cpu_time_step(w, precision, ranges) for _ in range(args.profile_steps)]
    ranges.remove()
    lines = [
        f"## {name}: one training step, batch {args.batch_size}, {args.size} x {args.size}, {args.threads} thread(s), "
        f"{precision}, after {args.warmup} warm-up step(s)",
        f"{cpu_description()}; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after",
    ]
    lines += _format_profile("torch.profiler (wall time of each op)", profiled, args.profile_rows)
    lines += _format_profile("thread CPU time of each op (TorchDispatchMode)", cpu_timed, args.profile_rows)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated names (default {DEFAULT_MODELS})")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or fp32,bf16 (bf16: CPU autocast)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    p.add_argument("--rounds", type=int, default=3, help="timed steps per row (alternating rounds)")
    p.add_argument("--eval-forward", action="store_true", help="also time each model's eval-mode forward")
    p.add_argument("--fresh", action="store_true", help="also run each model alone in a fresh process")
    p.add_argument("--child-allocator", choices=("keep", "default"), default="keep",
                   help="--fresh: keep_freed_memory() (as the bundles) or glibc's default allocator")
    p.add_argument("--huge-pages", choices=("on", "off"), default="off",
                   help="transparent huge pages for tensors of 2 MiB and more (use_huge_pages(); off, as the bundles)")
    p.add_argument("--mem-limit-gb", type=float, default=20.0,
                   help="address-space limit of each fresh child (RLIMIT_AS); 0: none")
    p.add_argument("--profile", metavar="MODEL", help="profile MODEL's training step instead")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--out", type=Path, default=None, help="write summary.md and summary.json here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    if args.profile:
        text = profile_steps(args.profile, args)
        print(text)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"profile_{args.profile}.md").write_text(text + "\n")
        return 0
    result = run_in_process(args)
    text = format_in_process(result)
    if args.fresh:
        result["fresh"] = run_fresh(args)
        text += "\n\n" + format_fresh(result["fresh"], args)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.md").write_text(text + "\n")
        (args.out / "summary.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

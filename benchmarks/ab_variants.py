"""A/B timing of implementation variants of the Patcher forward, in one process (for docs/architecture.md).

Each variant patches one piece of the network for the duration of its forwards (the weights stay the same).
The variant and the current code alternate forward by forward (A B B A A B ...), so a slow moment of a shared
machine hits both; medians are printed with the largest output difference, which must be at rounding level.

Variants (``--variants``, default all):

- ``nchw_decoder``: the decoder in NCHW (contiguous) layout instead of channels-last.
- ``no_groups``: no inference grouping of large patches (``PatcherBlock.inference_chunk_bytes = 0``).
- ``fused_dwconv_gelu``: oneDNN's fused depthwise conv + GELU (``torch.ops.mkldnn._convolution_pointwise``).
- ``matmul_attention``: ``matmul`` / ``softmax`` / ``matmul`` instead of ``scaled_dot_product_attention``.
- ``contiguous_query``: a contiguous copy of the query before SDPA.
- ``sr_as_gemm``: the ``R x R`` strided spatial-reduction conv as one GEMM over the windows.
- ``linear_1x1``: the decoder's 1x1 convs as ``F.linear`` on the channels-last view.
- ``cat_gate``: the gating network's first convolution on the concatenated experts (one ``E * decoder_dim``
  channel buffer) instead of one convolution per expert, summed.
- ``full_res_gate``: that first convolution split by expert, but every part a 3x3 convolution on the upsampled
  expert, instead of the current code's per-tap GEMMs at the expert's own resolution
  (``MoEDecoder._add_upsampled_conv``; the variant sets ``low_res_gate_min_channels`` out of reach).

``--gate-conv`` instead times the gating network's first convolution alone at the paper preset's shapes (four
256-channel experts at 128 x 128): on the concatenation, split by expert and summed (the current code), and on
row bands of the concatenation.

``--compile`` instead compares the eager model with ``torch.compile(model, dynamic=False)`` under TorchInductor's
``freezing`` (weights folded in as constants, linear layers on MKL's prepacked GEMM, convolutions fused with
their pointwise neighbours: the inference setting PyTorch's CPU docs recommend), alternating the same way, and
prints the compile time (first call) as well; ``--no-freezing`` compiles without it.

``--breakdown`` instead times the stages, the decoder and the pieces of every transformer block (forward hooks,
so a little slower than a plain forward) and counts the page faults of each forward.

Usage::

    python -m benchmarks.ab_variants --preset paper --rounds 8
    python -m benchmarks.ab_variants --preset paper --breakdown
    python -m benchmarks.ab_variants --gate-conv --rounds 7
    python -m benchmarks.ab_variants --preset paper --compile --rounds 8
    python -m benchmarks.ab_variants --preset small --variants no_groups nchw_decoder
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from monai_patcher.networks import blocks
from monai_patcher.networks.blocks import _grid_to_tokens, _tokens_to_grid
from monai_patcher.networks.moe import MoEDecoder

from .models import build_patcher


@contextlib.contextmanager
def _patched(obj: object, name: str, value: object) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _attention(mode: str) -> Callable:
    """An ``EfficientSelfAttention.forward`` with one piece swapped (``mode``)."""

    def forward(self, x, h, w, query=None):
        q_in = x if query is None else query
        b, n, d = q_in.shape
        q = self.q(q_in).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv_in = x
        if self.sr_ratio > 1:
            if mode == "sr_as_gemm":
                r = self.sr_ratio
                # r x r windows as rows of (kh, kw, c), the memory order of the channels-last weight
                win = x.view(b, h // r, r, w // r, r, d).transpose(2, 3).reshape(b, (h // r) * (w // r), r * r * d)
                weight = self.sr.weight.permute(0, 2, 3, 1).reshape(d, r * r * d)
                kv_in = self.norm(F.linear(win, weight, self.sr.bias))
            else:
                kv_in = self.norm(_grid_to_tokens(self.sr(_tokens_to_grid(x, h, w))))
        kv = self.kv(kv_in).view(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if mode == "matmul_attention":
            scores = torch.matmul(q, kv[0].transpose(-1, -2)).mul_(self.head_dim**-0.5)
            out = torch.matmul(scores.softmax(-1), kv[1])
        else:
            out = F.scaled_dot_product_attention(q.contiguous() if mode == "contiguous_query" else q, kv[0], kv[1])
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))

    return forward


def _fused_ffn(self, x, h, w, crop=0):
    pad = 1 - crop
    grid = torch.ops.mkldnn._convolution_pointwise(
        _tokens_to_grid(self.fc1(x), h, w), self.dwconv.weight, self.dwconv.bias, [pad, pad], [1, 1], [1, 1],
        self.dwconv.groups, "gelu", [], "none",
    )  # fmt: skip
    return self.fc2(_grid_to_tokens(grid))


def _linear_1x1(conv_forward: Callable) -> Callable:
    def forward(self, x):
        if self.kernel_size == (1, 1) and self.groups == 1:
            return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        return conv_forward(self, x)

    return forward


def _cat_gate_logits(self, low, experts):
    return self.gate(torch.cat(experts, dim=1))


@contextlib.contextmanager
def variant(name: str, net: torch.nn.Module) -> Iterator[None]:
    """Run the code inside with variant ``name`` in place."""
    with contextlib.ExitStack() as stack:
        if name == "nchw_decoder":
            net.decoder.to(memory_format=torch.contiguous_format)
            stack.callback(lambda: net.decoder.to(memory_format=torch.channels_last))
            stack.enter_context(_patched(torch.Tensor, "contiguous", _nchw_contiguous))
        elif name == "no_groups":
            for stage in net.stages:
                stack.enter_context(_patched(stage, "inference_chunk_bytes", 0))
        elif name == "fused_dwconv_gelu":
            stack.enter_context(_patched(blocks.MixFFN, "forward", _fused_ffn))
        elif name in ("matmul_attention", "contiguous_query", "sr_as_gemm"):
            stack.enter_context(_patched(blocks.EfficientSelfAttention, "forward", _attention(name)))
        elif name == "cat_gate":
            stack.enter_context(_patched(MoEDecoder, "_gate_logits", _cat_gate_logits))
        elif name == "full_res_gate":
            stack.enter_context(_patched(net.decoder, "low_res_gate_min_channels", 2**62))
        elif name == "linear_1x1":
            stack.enter_context(_patched(torch.nn.Conv2d, "forward", _linear_1x1(torch.nn.Conv2d.forward)))
        else:
            raise ValueError(f"unknown variant {name!r}")
        yield


_TENSOR_CONTIGUOUS = torch.Tensor.contiguous


def _nchw_contiguous(self, memory_format=torch.contiguous_format):
    """``Tensor.contiguous`` that ignores requests for channels-last (keeps the decoder in NCHW)."""
    return _TENSOR_CONTIGUOUS(self)


VARIANTS = ("nchw_decoder", "no_groups", "fused_dwconv_gelu", "matmul_attention", "contiguous_query",
            "sr_as_gemm", "linear_1x1", "cat_gate", "full_res_gate")  # fmt: skip


def compare(net: torch.nn.Module, x: torch.Tensor, name: str, rounds: int) -> dict[str, float]:
    """Alternate forwards of the current code (A) and variant ``name`` (B); medians in seconds and max |A - B|."""
    times: dict[str, list[float]] = {"A": [], "B": []}
    with torch.inference_mode():
        ref = net(x)
        with variant(name, net):
            diff = (net(x) - ref).abs().max().item()
        for r in range(rounds):
            for which in ("A", "B") if r % 2 == 0 else ("B", "A"):
                ctx = variant(name, net) if which == "B" else contextlib.nullcontext()
                with ctx:
                    t0 = time.perf_counter()
                    net(x)
                    times[which].append(time.perf_counter() - t0)
    return {"current_s": statistics.median(times["A"]), "variant_s": statistics.median(times["B"]), "max_diff": diff}


def compare_compiled(net: torch.nn.Module, x: torch.Tensor, rounds: int, freezing: bool = True) -> dict[str, float]:
    """Alternate forwards of the eager model (A) and ``torch.compile`` of it (B); medians and compile time."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(net, dynamic=False)
    times: dict[str, list[float]] = {"A": [], "B": []}
    # freezing folds the weights in as constants: only without autograd, and the weights must not change after
    with inductor_config.patch(freezing=freezing), torch.no_grad():
        ref = net(x)
        t0 = time.perf_counter()
        out = compiled(x)
        compile_s = time.perf_counter() - t0
        diff = (out - ref).abs().max().item()
        for r in range(rounds):
            for which in ("A", "B") if r % 2 == 0 else ("B", "A"):
                t0 = time.perf_counter()
                (net if which == "A" else compiled)(x)
                times[which].append(time.perf_counter() - t0)
    return {"current_s": statistics.median(times["A"]), "variant_s": statistics.median(times["B"]), "max_diff": diff,
            "compile_s": compile_s}  # fmt: skip


def breakdown(net: torch.nn.Module, x: torch.Tensor, rounds: int) -> str:
    """Median wall time of each stage, the decoder and the block pieces (summed over a stage), and page faults."""
    import resource
    from collections import defaultdict

    acc: dict[str, float] = defaultdict(float)
    start: dict[str, float] = {}

    def timed(module: torch.nn.Module, name: str) -> None:
        module.register_forward_pre_hook(lambda m, a: start.__setitem__(name, time.perf_counter()))
        module.register_forward_hook(lambda m, a, o: acc.__setitem__(name, acc[name] + time.perf_counter() - start[name]))

    for i, stage in enumerate(net.stages):
        timed(stage, f"stage {i + 1}")
        for blk in stage.blocks:
            for piece in ("norm1", "attn", "norm2"):
                timed(getattr(blk, piece), f"stage {i + 1} {piece}")
            for piece in ("fc1", "dwconv", "act", "fc2"):
                timed(getattr(blk.ffn, piece), f"stage {i + 1} ffn.{piece}")
    timed(net.decoder, "decoder")
    runs: dict[str, list[float]] = defaultdict(list)
    faults, totals = [], []
    with torch.inference_mode():
        net(x)
        for _ in range(rounds):
            acc.clear()
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            net(x)
            totals.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            for k, v in acc.items():
                runs[k].append(v)
    lines = [f"forward with hooks: median {statistics.median(totals):.3f} s; page faults per forward: {faults}",
             "| part | median ms |", "|---|---|"]  # fmt: skip
    lines += [f"| {k} | {1e3 * statistics.median(v):.0f} |" for k, v in runs.items()]
    return "\n".join(lines)


def gate_conv(rounds: int, dim: int = 256, experts: int = 4, size: int = 128, bands: int = 4) -> str:
    """Time the gate's first 3x3 convolution (``experts * dim -> dim`` channels) three ways, alternating."""
    conv = torch.nn.Conv2d(experts * dim, dim, 3, padding=1).to(memory_format=torch.channels_last)
    feats = [torch.randn(1, dim, size, size).contiguous(memory_format=torch.channels_last) for _ in range(experts)]

    def concatenated():
        return conv(torch.cat(feats, 1))

    def split():
        out = F.conv2d(feats[0], conv.weight[:, :dim], conv.bias, padding=1)
        for i in range(1, experts):
            out += F.conv2d(feats[i], conv.weight[:, i * dim : (i + 1) * dim], None, padding=1)
        return out

    def banded():  # rows [r0, r1) with a one-row halo, zero rows at the image border
        step, outs = size // bands, []
        for r0 in range(0, size, step):
            r1 = r0 + step
            band = torch.cat([f[:, :, max(r0 - 1, 0) : min(r1 + 1, size)] for f in feats], 1)
            band = F.pad(band, (0, 0, int(r0 == 0), int(r1 == size)))
            outs.append(F.conv2d(band, conv.weight, conv.bias, padding=(0, 1)))
        return torch.cat(outs, 2)

    fns = {"concatenated": concatenated, "split by expert": split, f"{bands} row bands": banded}
    gflop = 2 * experts * dim * 9 * dim * size * size / 1e9
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        ref = concatenated()
        diffs = {k: (f() - ref).abs().max().item() for k, f in fns.items()}
        for r in range(rounds):
            for k in fns if r % 2 == 0 else reversed(list(fns)):
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
    lines = [f"gate conv {experts} x {dim} -> {dim} channels, 3x3, {size} x {size}, {gflop:.1f} GFLOP",
             "| way | median ms | GFLOP/s | max abs diff |", "|---|---|---|---|"]  # fmt: skip
    for k in fns:
        t = statistics.median(times[k])
        lines.append(f"| {k} | {1e3 * t:.1f} | {gflop / t:.0f} | {diffs[k]:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=6, help="forwards of each side")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--breakdown", action="store_true", help="time the parts of the forward instead")
    p.add_argument("--gate-conv", action="store_true", help="time the gate's first convolution three ways instead")
    p.add_argument("--compile", action="store_true", help="compare eager with torch.compile (freezing) instead")
    p.add_argument("--no-freezing", action="store_true", help="with --compile: compile without inductor freezing")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gate_conv:
        print(gate_conv(args.rounds))
        return
    torch.manual_seed(0)
    net = build_patcher(f"patcher_{args.preset}", in_channels=2).eval()
    x = torch.randn(1, 2, args.size, args.size)
    print(f"preset {args.preset}, 1 x 2 x {args.size} x {args.size}, {torch.get_num_threads()} threads")
    if args.breakdown:
        print(breakdown(net, x, args.rounds))
        return
    if args.compile:
        r = compare_compiled(net, x, args.rounds, freezing=not args.no_freezing)
        print(f"torch.compile (dynamic=False, freezing={not args.no_freezing}): first call {r['compile_s']:.1f} s")
        print("| eager (s, median) | compiled (s, median) | compiled / eager | max abs diff |\n|---|---|---|---|")
        print(f"| {r['current_s']:.3f} | {r['variant_s']:.3f} | {r['variant_s'] / r['current_s']:.3f} "
              f"| {r['max_diff']:.1e} |")  # fmt: skip
        return
    print("| variant | current code (s, median) | variant (s, median) | variant / current | max abs diff |")
    print("|---|---|---|---|---|")
    for name in args.variants:
        r = compare(net, x, name, args.rounds)
        print(f"| {name} | {r['current_s']:.3f} | {r['variant_s']:.3f} | {r['variant_s'] / r['current_s']:.3f} "
              f"| {r['max_diff']:.1e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

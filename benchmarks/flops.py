"""Forward GFLOP and parameters of the benchmark models (one 1 x 3 x 256 x 256 image).

    python -m benchmarks.flops patcher_small unet segformer_b0   # also writes benchmarks/results/flops/summary.md

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 FLOPs; on CPU the
fused attention kernel may not be counted, so attention-heavy models are slightly under-counted), for Patcher
models as the architecture defines them (:func:`as_defined`: without the forward's work-saving paths, which give
the same outputs with fewer FLOPs). :func:`count_flops` (which also counts the CPU attention kernel) and
:func:`as_defined` are the FLOP counting of every benchmark (``bench_network``, ``bench_train_step``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import build_model, count_parameters

OUT = Path(__file__).resolve().parent / "results" / "flops"


def _register_cpu_attention_flops() -> None:
    """Count ``scaled_dot_product_attention`` on CPU (its CPU kernel has no formula in torch's FLOP counter)."""
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


@contextlib.contextmanager
def as_defined(model: nn.Module) -> Iterator[None]:
    """Inside, every Patcher part in ``model`` (the model itself or a wrapped one) runs on its plain path
    (:func:`monai_patcher.networks.set_fast_paths` off), so its FLOPs are those of the architecture as defined (the
    same outputs up to float rounding): every transformer block computes all its tokens (no centre-only last block),
    and the decoder's gate convolves the upsampled experts at full resolution. Each part's setting is restored
    afterwards. Other models are unchanged."""
    from monai_patcher.networks import set_fast_paths

    saved = [(m, m.fast_paths) for m in model.modules() if hasattr(m, "fast_paths")]
    set_fast_paths(model, False)
    try:
        yield
    finally:
        for m, enabled in saved:
            m.fast_paths = enabled


def count_flops(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """FLOPs of one forward (``FlopCounterMode``: matmuls, convolutions and attention; 2 FLOPs per multiply-add).

    Args:
        model: the network (run as it is; wrap the call in :func:`as_defined` for the architecture's count).
        x: its input.

    Returns:
        ``(total, attention)``: all FLOPs, and the part in ``scaled_dot_product_attention`` (which torch's counter
        alone misses on CPU, like the module-based counters papers quote).
    """
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    attention = sum(
        n for op, n in counter.get_flop_counts()["Global"].items() if "scaled_dot_product" in str(op)
    )
    return int(counter.get_total_flops()), int(attention)


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    rows = ["| model | params (M) | forward GFLOP at 256 x 256 |", "|---|---|---|"]
    for name in sys.argv[1:] if argv is None else argv:
        model = build_model(name).eval()
        with torch.no_grad(), as_defined(model), FlopCounterMode(display=False) as fc:
            model(torch.randn(1, 3, 256, 256))
        rows.append(f"| {name} | {count_parameters(model) / 1e6:.2f} | {fc.get_total_flops() / 1e9:.1f} |")
        print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

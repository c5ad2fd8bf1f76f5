"""Forward GFLOP and parameters of the benchmark models (one 1 x 3 x 256 x 256 image).

    python -m benchmarks.flops patcher_small unet segformer_b0   # also writes benchmarks/results/flops/summary.md

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2 FLOPs; on CPU the
fused attention kernel may not be counted, so attention-heavy models are slightly under-counted), for Patcher
models as the architecture defines them (``bench_network.as_defined``: without the forward's work-saving paths,
which give the same outputs with fewer FLOPs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .bench_network import as_defined
from .models import build_model, count_parameters

OUT = Path(__file__).resolve().parent / "results" / "flops"


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

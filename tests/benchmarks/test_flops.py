"""benchmarks/flops.py: the FLOP counting of every benchmark (the CPU attention kernel counted; Patcher "as
defined", without its work-saving paths)."""

from __future__ import annotations

import torch

from monai_patcher.networks import EfficientSelfAttention

from benchmarks import flops
from benchmarks.models import build_model


class _Attn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = EfficientSelfAttention(64, num_heads=2, sr_ratio=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, 12, 12)


def test_count_flops_adds_the_attention_matmuls_torch_misses_on_cpu():
    b, n, d, heads, r = 3, 144, 64, 2, 2
    nk = n // r**2
    linears = 2 * b * n * d * d * 2 + 2 * b * nk * d * 2 * d  # q and proj on all tokens; kv on the reduced grid
    sr_conv = 2 * b * nk * d * d * r * r
    attention = 2 * (2 * b * heads * n * nk * (d // heads))  # scores and weighted sum
    total, attn = flops.count_flops(_Attn().eval(), torch.randn(b, n, d))
    assert attn == attention
    assert total == linears + sr_conv + attention


def test_as_defined_counts_the_work_the_forward_skips():
    """Small preset at 64 x 64: with the decoder on its plain path the count grows by exactly the three upsampled
    experts' full-resolution 3x3 convolutions minus the products of the gate's CPU kernel (its taps and its
    horizontal and vertical interpolation matrices, less than half of the convolution); ``as_defined`` also drops the centre-only last blocks (more
    again), and restores every part's setting afterwards. A model that is not a Patcher is counted as it is."""
    from torch.utils.flop_counter import FlopCounterMode

    from monai_patcher.networks import patcher_preset
    from monai_patcher.networks.cpu_kernels import add_upsampled_conv3x3_

    net = patcher_preset("small", in_channels=2, out_channels=1).eval()
    x = torch.randn(1, 2, 64, 64)
    executed, _ = flops.count_flops(net, x)
    net.decoder.fast_paths = False
    full_res_gate, _ = flops.count_flops(net, x)
    net.decoder.fast_paths = True
    c, out, h0 = 128, 128, 32  # decoder_dim, gate_channels[0], the gate's resolution (64 / 2)
    saved = 0
    for s in (2, 4, 8):  # each upsampled expert: its full-resolution convolution minus the kernel's products
        with FlopCounterMode(display=False) as kernel:
            add_upsampled_conv3x3_(torch.zeros(1, out, h0, h0), torch.zeros(1, c, h0 // s, h0 // s),
                                   torch.zeros(out, c, 3, 3), s)  # fmt: skip
        assert 0 < kernel.get_total_flops() < 2 * 9 * c * out * h0 * h0 / 2
        saved += 2 * 9 * c * out * h0 * h0 - kernel.get_total_flops()
    assert full_res_gate - executed == saved
    with flops.as_defined(net):
        defined, _ = flops.count_flops(net, x)
        assert not any(getattr(m, "fast_paths", False) for m in net.modules())
    assert defined > full_res_gate
    assert all(m.fast_paths for m in net.modules() if hasattr(m, "fast_paths"))
    assert flops.count_flops(net, x)[0] == executed
    wrapped = torch.nn.Sequential(net)  # a Patcher inside another module (benchmarks/models.py wraps them)
    with flops.as_defined(wrapped):
        assert flops.count_flops(wrapped, x)[0] == defined
    unet = build_model("unet", in_channels=2, out_channels=1).eval()
    plain = flops.count_flops(unet, x)
    with flops.as_defined(unet):
        assert flops.count_flops(unet, x) == plain

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.models import GemmStack, build_model, describe_model


def test_gemm_stack_maps_images_to_logits_with_matrix_products_only():
    """The control of the speed ratios: image-sized logits, and (almost) every FLOP in a matrix product."""
    net = build_model("gemm_stack", in_channels=3, out_channels=1)
    assert isinstance(net, GemmStack) and "matrix products" in describe_model("gemm_stack")
    x = torch.randn(2, 3, 64, 48)
    with FlopCounterMode(display=False) as counter:
        y = net(x)
    assert y.shape == (2, 1, 64, 48)
    counts = counter.get_flop_counts()["Global"]
    gemm = sum(v for k, v in counts.items() if str(k).split(".")[-1] in ("addmm", "mm", "bmm"))
    # 2 images x (48 * 64 / 64 tokens) x (192*320 + 8 * 2 * 320*1280 + 320*64) multiply-adds, x 2
    tokens = 2 * 48
    assert gemm == sum(counts.values()) == 2 * tokens * (192 * 320 + 8 * 2 * 320 * 1280 + 320 * 64)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

"""Tests of monai_patcher/networks/cpu_kernels.py: every kernel against its plain PyTorch expression, in float64,
outputs and all gradients, at odd sizes too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_patcher.networks.cpu_kernels import add_upsampled_conv3x3_, use_cpu_kernels


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _plain_upsampled_conv(out, low, weight, stride):
    h0, w0 = out.shape[2], out.shape[3]
    up = F.interpolate(low, size=[low.shape[2] * stride, low.shape[3] * stride], mode="bilinear", align_corners=False)
    return out + F.conv2d(up[:, :, :h0, :w0], weight, padding=1)


@pytest.mark.parametrize(
    "batch,stride,low_size,out_size",
    [(2, 2, (5, 7), (10, 14)), (2, 2, (5, 7), (9, 13)), (1, 4, (3, 4), (10, 14)), (3, 8, (2, 2), (10, 14)),
     (2, 3, (4, 3), (12, 7)), (2, 2, (1, 1), (1, 2)), (1, 2, (6, 1), (11, 1))],
)  # fmt: skip
def test_upsampled_conv3x3_equals_the_convolution_on_the_upsampled_map(batch, stride, low_size, out_size):
    """Output and the gradients w.r.t. ``out``, ``low`` and the weight, in float64: crops that cut inside a low pixel,
    zero padding at every border, single-pixel maps, strides that are not powers of two."""
    low = torch.randn(batch, 6, *low_size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, 6, 3, 3, dtype=torch.float64)
    start = torch.randn(batch, 5, *out_size, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (start, low, weight)]
    ref = _plain_upsampled_conv(*leaves, stride)
    fast_leaves = [t.clone().requires_grad_() for t in (start, low, weight)]
    out = add_upsampled_conv3x3_(fast_leaves[0] * 1, *fast_leaves[1:], stride)
    assert _max_rel(out, ref) < 1e-12
    grad = torch.randn_like(ref)
    for g, r in zip(torch.autograd.grad(out, fast_leaves, grad), torch.autograd.grad(ref, leaves, grad)):
        assert g.shape == r.shape and _max_rel(g, r) < 1e-12


def test_upsampled_conv3x3_is_in_place_and_takes_any_layout():
    """A channels-last ``out`` is updated in place; a contiguous (NCHW) ``low`` and ``out`` give the same values."""
    low = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    out = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    ref = _plain_upsampled_conv(out, low, weight, 2)
    cl = out.contiguous(memory_format=torch.channels_last)
    assert add_upsampled_conv3x3_(cl, low, weight, 2) is cl
    assert _max_rel(cl, ref) < 1e-12
    assert _max_rel(add_upsampled_conv3x3_(out.clone(), low, weight, 2), ref) < 1e-12


def test_upsampled_conv3x3_only_the_gradients_asked_for():
    low = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    out = add_upsampled_conv3x3_(torch.zeros(1, 2, 6, 6, dtype=torch.float64), low, weight, 2)
    (g,) = torch.autograd.grad(out.sum(), [low])
    (r,) = torch.autograd.grad(_plain_upsampled_conv(torch.zeros(1, 2, 6, 6, dtype=torch.float64), low, weight, 2).sum(), [low])
    assert _max_rel(g, r) < 1e-12


def test_upsampled_conv3x3_under_bf16_autocast():
    """Under CPU bfloat16 autocast (bf16 activations, a float32 weight) the result is bf16, close to float32, and the
    gradients have the inputs' dtypes."""
    torch.manual_seed(0)
    low = torch.randn(2, 16, 6, 5)
    weight = (torch.randn(8, 16, 3, 3) / 12).requires_grad_()
    out = torch.randn(2, 8, 12, 9)
    ref = _plain_upsampled_conv(out, low, weight, 2)
    low_bf16 = low.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = add_upsampled_conv3x3_(out.bfloat16(), low_bf16, weight, 2)
    assert res.dtype == torch.bfloat16
    assert _max_rel(res.float(), ref) < 2e-2
    res.float().sum().backward()
    assert low_bf16.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32


def test_upsampled_conv3x3_rejects_maps_that_do_not_cover_out():
    with pytest.raises(ValueError, match="does not cover"):
        add_upsampled_conv3x3_(torch.zeros(1, 2, 9, 8), torch.zeros(1, 3, 4, 4), torch.zeros(2, 3, 3, 3), 2)


def test_use_cpu_kernels_only_in_eager_mode_on_cpu():
    x = torch.zeros(1)
    assert use_cpu_kernels(x)
    seen = []

    def f(t):
        seen.append(use_cpu_kernels(t))
        return t + 1

    torch.jit.trace(f, (x,), check_trace=False)
    assert seen == [False]
    if torch.cuda.is_available():
        assert not use_cpu_kernels(x.cuda())


def test_upsampled_conv3x3_takes_monai_metatensors():
    """MONAI's engines feed ``MetaTensor`` batches, so the decoder's tensors are MetaTensors in a bundle's training:
    the kernel gives the values and gradients it gives on plain tensors (it once failed on ``MetaTensor.new_empty``)."""
    from monai.data import MetaTensor

    torch.manual_seed(0)
    low = torch.randn(2, 6, 5, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, 6, 3, 3, dtype=torch.float64)
    start = torch.randn(2, 5, 9, 13, dtype=torch.float64)
    results = []
    for wrap in (lambda t: t, MetaTensor):
        leaves = [wrap(t.clone()).requires_grad_() for t in (start, low, weight)]
        out = add_upsampled_conv3x3_(leaves[0] * 1, *leaves[1:], 2)
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
        results.append([out.as_subclass(torch.Tensor).detach()] + [g.as_subclass(torch.Tensor) for g in grads])
    for meta, plain in zip(*results):
        assert _max_rel(meta, plain) < 1e-12


@pytest.mark.parametrize("channels_last", [True, False])
def test_mix_experts_equals_the_gated_sum(channels_last):
    """Output and the gradients w.r.t. the gating maps and every expert, in float64, against the plain expression
    (autograd through the products), from channels-last and NCHW maps."""
    from monai_patcher.networks.cpu_kernels import mix_experts

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    weights = torch.softmax(torch.randn(2, 3, 5, 7, dtype=torch.float64), dim=1).contiguous(memory_format=fmt)
    experts = [torch.randn(2, 4, 5, 7, dtype=torch.float64).contiguous(memory_format=fmt) for _ in range(3)]
    fast_in = [t.clone().requires_grad_() for t in (weights, *experts)]
    plain_in = [t.clone().requires_grad_() for t in (weights, *experts)]
    fast = mix_experts(fast_in[0], fast_in[1:])
    plain = sum(plain_in[0][:, i : i + 1] * e for i, e in enumerate(plain_in[1:]))
    assert _max_rel(fast, plain) < 1e-12
    grad = torch.randn_like(plain)
    for f, p in zip(torch.autograd.grad(fast, fast_in, grad), torch.autograd.grad(plain, plain_in, grad)):
        assert f.shape == p.shape and _max_rel(f, p) < 1e-12
    with pytest.raises(ValueError, match="2 experts for 3 gating maps"):
        mix_experts(weights, experts[:2])


def test_mix_experts_under_bf16_autocast():
    """bf16 experts and float32 gating maps (as under CPU autocast): the gradients come back in each input's dtype."""
    from monai_patcher.networks.cpu_kernels import mix_experts

    weights = torch.softmax(torch.randn(1, 2, 4, 4), dim=1).requires_grad_()
    experts = [torch.randn(1, 3, 4, 4).bfloat16().requires_grad_() for _ in range(2)]
    out = mix_experts(weights, experts)
    ref = sum(weights[:, i : i + 1].detach() * e.detach().float() for i, e in enumerate(experts))
    assert out.dtype == torch.float32 and _max_rel(out.detach(), ref) < 1e-6
    out.sum().backward()
    assert weights.grad.dtype == torch.float32 and all(e.grad.dtype == torch.bfloat16 for e in experts)

"""Tests of monai_patcher/networks/moe.py (the mixture-of-experts decoder)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from monai_patcher.networks import MoEDecoder

CHANNELS = (8, 16, 24, 32)


def _features(b: int, h: int, w: int, channels=CHANNELS) -> list[torch.Tensor]:
    """Encoder-like pyramid, finest first, halving with ceil (as the encoder does for odd sizes)."""
    feats = []
    for c in channels:
        feats.append(torch.randn(b, c, h, w))
        h, w = -(-h // 2), -(-w // 2)
    return feats


def _decoder(low_res_gate: bool = False, **kw) -> MoEDecoder:
    """A small decoder; ``low_res_gate``: its 8-channel experts take the gate's low-resolution path
    (``MoEDecoder._add_upsampled_conv``, by default for 128 channels or more)."""
    args = {"in_channels": CHANNELS, "out_channels": 3, "decoder_dim": 8, "gate_channels": (8, 8), "dropout_rate": 0.0}
    dec = MoEDecoder(**{**args, **kw})
    if low_res_gate:
        dec.low_res_gate_min_channels = 1
    return dec


@pytest.mark.parametrize("h,w", [(16, 16), (15, 21), (1, 3)])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_shapes(h, w, out_channels):
    dec = _decoder(out_channels=out_channels).eval()
    logits, gating = dec(_features(2, h, w))
    assert logits.shape == (2, out_channels, h, w)
    assert gating.shape == (2, 4, h, w)


@pytest.mark.parametrize("gate_channels,gate_norm", [((8, 8, 8), False), ((8,), True), ((), False)])
def test_gating_is_a_partition_of_unity(gate_channels, gate_norm):
    dec = _decoder(gate_channels=gate_channels, gate_norm=gate_norm).eval()
    _, gating = dec(_features(3, 12, 10))
    assert (gating >= 0).all()
    torch.testing.assert_close(gating.sum(dim=1), torch.ones(3, 12, 10), atol=1e-6, rtol=0)
    # the weights vary over the image (a constant map would mean the gate ignores its input)
    assert gating.std(dim=(2, 3)).max() > 1e-4
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in dec.gate) == (len(gate_channels) + 1 if gate_norm else 0)
    convs = [m for m in dec.gate if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [*gate_channels, 4]
    assert all(c.kernel_size == (3, 3) for c in convs)


@pytest.mark.parametrize("gate_channels", [(8, 8), (8,), ()])
def test_gate_layers(gate_channels):
    """Paper: conv-ReLU ... conv (with biases). ``gate_norm=True``, the reference's ConvModule layers: every conv,
    the last one to the 4 experts included, is conv (no bias) + BatchNorm + ReLU, and the softmax comes after."""
    Conv, BN, ReLU = torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU
    widths = [*gate_channels, 4]
    plain = _decoder(gate_channels=gate_channels).gate
    assert [type(m) for m in plain] == [Conv, ReLU] * len(gate_channels) + [Conv]
    assert all(m.bias is not None for m in plain if isinstance(m, Conv))
    normed = _decoder(gate_channels=gate_channels, gate_norm=True).gate
    assert [type(m) for m in normed] == [Conv, BN, ReLU] * len(widths)
    assert [m.out_channels for m in normed if isinstance(m, Conv)] == widths
    assert [m.num_features for m in normed if isinstance(m, BN)] == widths
    assert all(m.bias is None for m in normed if isinstance(m, Conv))


@pytest.mark.parametrize("gate_norm", [False, True])
def test_gating_weights_sum_to_one_in_training(gate_norm):
    """With batch statistics too (training mode), the gating maps are softmax weights."""
    dec = _decoder(gate_channels=(8,), gate_norm=gate_norm).train()
    _, gating = dec(_features(2, 9, 7))
    assert (gating >= 0).all()
    torch.testing.assert_close(gating.sum(dim=1), torch.ones(2, 9, 7), atol=1e-6, rtol=0)


@pytest.mark.parametrize("low_res_gate", [False, True])
@pytest.mark.parametrize("gate_channels,gate_norm", [((8, 8), False), ((8,), True), ((), False), ((), True)])
def test_output_is_the_gated_sum_of_experts(gate_channels, gate_norm, low_res_gate):
    """Recompute O = sum_i W_i F_i by hand from the decoder's own sub-modules and compare the logits.

    The reference runs the gate on the concatenated experts; the decoder splits its first convolution by expert,
    and with ``low_res_gate`` runs the upsampled experts' parts at their own resolution.
    """
    dec = _decoder(low_res_gate, gate_channels=gate_channels, gate_norm=gate_norm).eval()
    for m in dec.gate.modules():  # non-trivial running statistics, so BatchNorm is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    feats = _features(2, 10, 14)
    with torch.no_grad():
        logits, gating = dec(feats)
        # expert i upsampled by its stride 2**i and cropped to the finest map (10 x 14 from 5 x 7, 3 x 4, 2 x 2)
        experts = [dec.experts[0](feats[0])] + [
            F.interpolate(mlp(f), scale_factor=float(2**i), mode="bilinear", align_corners=False)[:, :, :10, :14]
            for i, (mlp, f) in enumerate(zip(dec.experts, feats))
            if i > 0
        ]
        ref_gating = torch.softmax(dec.gate(torch.cat(experts, dim=1)), dim=1)
        mixed = sum(ref_gating[:, i : i + 1] * e for i, e in enumerate(experts))
        torch.testing.assert_close(gating, ref_gating)
        torch.testing.assert_close(logits, dec.head(mixed), atol=1e-5, rtol=1e-4)


def _size_based_forward(dec: MoEDecoder, features: list[torch.Tensor]):
    """The decoder before ``feature_strides``: every expert interpolated to the finest map's size."""
    h0, w0 = features[0].shape[2:]
    low, experts = [], []
    for i, mlp in enumerate(dec.experts):
        e = mlp(features[i].contiguous(memory_format=torch.channels_last))
        low.append(e)
        if i > 0:
            e = F.interpolate(e, size=[h0, w0], mode="bilinear", align_corners=False)
        experts.append(e)
    gating = torch.softmax(dec._gate_logits(low, experts), dim=1)
    mixed = gating[:, :1] * experts[0]
    for i in range(1, dec.num_experts):
        mixed.addcmul_(gating[:, i : i + 1], experts[i])
    return dec.head(mixed).contiguous(), gating.contiguous()


@pytest.mark.parametrize("h,w", [(128, 128), (32, 48), (8, 8)])
def test_exact_sizes_are_bit_identical_to_size_based_upsampling(h, w):
    """When every map is exactly ``2**i`` times smaller (a 256 x 256 input), stride upsampling + crop is the old
    interpolation to the finest size, bit for bit."""
    dec = _decoder().eval()
    feats = [torch.randn(2, c, h // 2**i, w // 2**i) for i, c in enumerate(CHANNELS)]
    with torch.no_grad():
        new, ref = dec(feats), _size_based_forward(dec, feats)
    assert torch.equal(new[0], ref[0]) and torch.equal(new[1], ref[1])


@pytest.mark.parametrize("h,w", [(250, 190), (100, 128), (70, 50)])
def test_crop_consistency_odd_sizes(h, w):
    """Decode a pyramid, and the same pyramid cropped as the encoder crops its stages for an odd ``h x w`` input
    (``ceil`` halving: 250 -> 125/63/32/16). The kept features are identical, so the logits and gating must be
    too, away from the cropped bottom/right border (the bilinear edge and the gate's 3x3 convs reach a few pixels
    in). Interpolating every expert to the finest size stretches expert i by ``H_0 / H_i != 2**i`` and shifts it
    everywhere (by up to 11 input pixels for expert 4)."""
    torch.manual_seed(0)
    dec = _decoder(gate_channels=(8,)).eval()
    full_h, full_w = 2 ** math.ceil(math.log2(h)), 2 ** math.ceil(math.log2(w))  # sizes that halve exactly
    full = [torch.randn(1, c, full_h // 2 ** (i + 1), full_w // 2 ** (i + 1)) for i, c in enumerate(CHANNELS)]
    sizes, hh, ww = [], h, w
    for _ in CHANNELS:
        hh, ww = -(-hh // 2), -(-ww // 2)
        sizes.append((hh, ww))
    cropped = [f[:, :, :sh, :sw] for f, (sh, sw) in zip(full, sizes)]
    h0, w0 = sizes[0]
    keep_h, keep_w = h0 - 12, w0 - 12  # coarsest stride 8: bilinear reaches 1 token (8 px), + 2 gate convs
    assert keep_h > 0 and keep_w > 0
    with torch.no_grad():
        lf, gf = dec(full)
        lc, gc = dec(cropped)
    assert lc.shape[2:] == (h0, w0) and gc.shape[2:] == (h0, w0)
    torch.testing.assert_close(lc[..., :keep_h, :keep_w], lf[..., :keep_h, :keep_w], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gc[..., :keep_h, :keep_w], gf[..., :keep_h, :keep_w], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("low_res_gate", [False, True])
def test_feature_strides_other_than_powers_of_two(low_res_gate):
    """Strides (1, 4, 8, 16) (an encoder with small_patch (2, 4, 2, 2)): expert i is upsampled by its stride."""
    dec = _decoder(low_res_gate, feature_strides=(1, 4, 8, 16)).eval()
    assert dec.feature_strides == [1, 4, 8, 16]
    feats = [torch.randn(1, c, s, s) for c, s in zip(CHANNELS, (30, 8, 4, 2))]  # 8 * 4 = 32 covers 30
    with torch.no_grad():
        logits, gating = dec(feats)
        experts = [dec.experts[0](feats[0])] + [
            F.interpolate(dec.experts[i](feats[i]), scale_factor=float(s), mode="bilinear", align_corners=False)[
                :, :, :30, :30
            ]
            for i, s in ((1, 4), (2, 8), (3, 16))
        ]
        ref_gating = torch.softmax(dec.gate(torch.cat(experts, dim=1)), dim=1)
    assert logits.shape == (1, 3, 30, 30) and gating.shape == (1, 4, 30, 30)
    torch.testing.assert_close(gating, ref_gating)
    with pytest.raises(ValueError, match="does not cover"):  # the default strides (1, 2, 4, 8): 8 * 2 < 30
        _decoder().eval()(feats)


def test_expert_mlps_have_two_hidden_layers_of_decoder_dim():
    dec = _decoder(decoder_dim=12)
    for mlp, c in zip(dec.experts, CHANNELS):
        convs = [m for m in mlp if isinstance(m, torch.nn.Conv2d)]
        assert [(m.in_channels, m.out_channels, m.kernel_size) for m in convs] == [(c, 12, (1, 1)), (12, 12, (1, 1))]


def test_gradient_reaches_every_parameter():
    dec = _decoder(gate_norm=True).train()
    feats = [f.requires_grad_() for f in _features(2, 8, 12)]
    logits, gating = dec(feats)
    (logits.square().mean() + (gating * torch.randn_like(gating)).sum()).backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for f in feats:  # every expert's input is used
        assert f.grad is not None and f.grad.abs().sum() > 0


def test_three_experts():
    dec = _decoder(in_channels=(8, 16, 24)).eval()
    logits, gating = dec(_features(1, 8, 8, channels=(8, 16, 24)))
    assert gating.shape == (1, 3, 8, 8) and logits.shape == (1, 3, 8, 8)


@pytest.mark.parametrize("n", [3, 5])
def test_wrong_number_of_features_raises(n):
    dec = _decoder()
    feats = _features(1, 8, 8, channels=(8, 16, 24, 32, 32)[:n])
    with pytest.raises(ValueError, match="expected 4 feature maps"):
        dec(feats)


def _assert_normal(w: torch.Tensor, std: float, name: str, rel: float = 0.06) -> None:
    assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel()), name
    assert abs(w.std().item() / std - 1) < rel, (name, w.std().item(), std)


def _assert_pytorch_default(conv: torch.nn.Conv2d, name: str) -> None:
    """PyTorch's default conv init: weight and bias uniform within +-1/sqrt(fan_in) (weight std 1/sqrt(3 fan_in))."""
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    bound = 1 / math.sqrt(fan_in)
    assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound, name
    assert conv.bias.abs().max() > 0, name
    if conv.weight.numel() >= 1000:
        _assert_normal(conv.weight, bound / math.sqrt(3), name, rel=0.1)


@pytest.mark.parametrize("gate_norm", [False, True])
def test_init_follows_the_reference(gate_norm):
    """The head's 1x1 conv before BatchNorm and, with ``gate_norm``, the gating convs (the reference's mmcv
    ConvModules): kaiming normal, fan_out, relu gain (std sqrt(2 / (out * kh * kw))), bias 0, BatchNorm 1 / 0. The
    expert MLPs, the classifier and gating convs without BatchNorm: PyTorch's defaults."""
    dec = _decoder(decoder_dim=64, gate_channels=(64,), gate_norm=gate_norm)
    gate_convs = [m for m in dec.gate if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in gate_convs] == [64, 4]
    if gate_norm:
        _assert_normal(gate_convs[0].weight, math.sqrt(2 / (64 * 9)), "gate.0")  # 256 -> 64: fan_in std 0.012
        _assert_normal(gate_convs[1].weight, math.sqrt(2 / (4 * 9)), "gate last")  # 64 -> 4: 0.024 by default
    else:
        for j, conv in enumerate(gate_convs):
            _assert_pytorch_default(conv, f"gate conv {j}")
    fuse = dec.head[1]
    assert isinstance(fuse, torch.nn.Conv2d) and fuse.kernel_size == (1, 1)
    assert isinstance(dec.head[2], torch.nn.BatchNorm2d)
    _assert_normal(fuse.weight, math.sqrt(2 / 64), "head fuse")
    for conv in [*(gate_convs if gate_norm else []), fuse]:
        assert conv.bias is None or torch.equal(conv.bias, torch.zeros_like(conv.bias))
    for bn in [m for m in dec.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    for i, mlp in enumerate(dec.experts):
        for j, conv in enumerate(m for m in mlp if isinstance(m, torch.nn.Conv2d)):
            _assert_pytorch_default(conv, f"expert {i} layer {j}")
    for j, conv in enumerate(m for m in dec.head[0] if isinstance(m, torch.nn.Conv2d)):
        _assert_pytorch_default(conv, f"head MLP layer {j}")
    _assert_pytorch_default(dec.head[-1], "classifier")


@pytest.mark.parametrize("gate_channels", [(256, 256, 256), (128,), ()])
def test_gating_starts_near_uniform(gate_channels):
    """At initialisation every expert gets a fair share (about 1/4 at every pixel), so that all of them receive
    gradients: a ConvModule init without BatchNorm saturated the softmax (mean top weight 0.7-0.8, some experts
    at 0.1-1 %), and after 31 Kvasir steps the small preset's gating was stuck at W1 = 1."""
    torch.manual_seed(0)
    dec = MoEDecoder((64, 128, 320, 512), 1, decoder_dim=min(256, max(gate_channels, default=128)),
                     gate_channels=gate_channels).eval()  # fmt: skip
    feats = [torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate((64, 128, 320, 512))]  # LayerNorm'd scale
    with torch.no_grad():
        _, gating = dec(feats)
    assert gating.max(1).values.mean() < 0.35, gating.max(1).values.mean()
    assert gating.mean((0, 2, 3)).min() > 0.15, gating.mean((0, 2, 3))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"in_channels": ()}, "in_channels"),
        ({"gate_channels": (8, 0)}, "gate_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"decoder_dim": 0}, "decoder_dim"),
        ({"dropout_rate": 1.5}, "dropout_rate"),
        ({"feature_strides": (1, 2, 4)}, "feature_strides has 3 values"),
        ({"feature_strides": (2, 4, 8, 16)}, "feature_strides"),
        ({"feature_strides": (1, 2, 0, 8)}, "feature_strides"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _decoder(**kwargs)


@pytest.mark.parametrize(
    "stride,low_size,out_size",
    [(2, (5, 7), (10, 14)), (2, (5, 7), (9, 13)), (4, (3, 4), (10, 14)), (8, (2, 2), (10, 14)), (3, (4, 3), (12, 7)),
     (2, (1, 1), (1, 2))],
)  # fmt: skip
def test_upsampled_conv_at_low_resolution_equals_the_full_resolution_conv(stride, low_size, out_size):
    """``_add_upsampled_conv`` adds exactly ``conv2d(crop(upsample(low)), weight, padding=1)``, border rows and
    columns (zero padding, bilinear edge clamping) and crops that cut inside a low-resolution pixel included,
    and so do the gradients it passes back to ``low`` and the weight."""
    torch.manual_seed(0)
    low = torch.randn(2, 6, *low_size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    start = torch.randn(2, 5, *out_size, dtype=torch.float64)
    up = F.interpolate(low, scale_factor=float(stride), mode="bilinear", align_corners=False)
    ref = start + F.conv2d(up[:, :, : out_size[0], : out_size[1]], weight, padding=1)
    out = start.clone()
    MoEDecoder._add_upsampled_conv(out, low, weight, stride)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (low, weight), grad)
    for g, r in zip(torch.autograd.grad(out, (low, weight), grad), ref_grads):
        torch.testing.assert_close(g, r, atol=1e-12, rtol=1e-12)


def test_low_resolution_gate_paths():
    """Which path computes the upsampled experts' parts of the gate's first convolution.

    Eager on CPU, on the fast path: the CPU kernel, with and without autograd, at any width. In traced (and so
    exported) graphs: ``_add_upsampled_conv`` without autograd for the paper and small presets' experts (256 and 128
    channels), the full-resolution convolution for the tiny preset's (32) and with autograd. Every path gives the
    plain path's outputs up to float rounding; ``set_fast_paths(..., False)`` takes no low-resolution path at all."""
    from monai_patcher.networks import cpu_kernels, moe, set_fast_paths

    taps, kernel = [], []
    original_taps, original_kernel = MoEDecoder._add_upsampled_conv, cpu_kernels.add_upsampled_conv3x3_

    def counting_taps(out, low, weight, stride):
        taps.append(int(low.shape[1]))
        original_taps(out, low, weight, stride)

    def counting_kernel(out, low, weight, stride):
        kernel.append(int(low.shape[1]))
        return original_kernel(out, low, weight, stride)

    feats = _features(1, 12, 10)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MoEDecoder, "_add_upsampled_conv", staticmethod(counting_taps))
        mp.setattr(moe, "add_upsampled_conv3x3_", counting_kernel)
        for dim, traced_taps in ((128, [128] * 3), (32, [])):
            dec = _decoder(decoder_dim=dim, gate_channels=(16,)).eval()
            with torch.no_grad():
                plain_logits, plain_gating = set_fast_paths(dec, False)(feats)
                assert taps == [] and kernel == []
                logits, gating = set_fast_paths(dec)(feats)
            assert kernel == [dim] * 3 and taps == []
            torch.testing.assert_close(gating, plain_gating, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(logits, plain_logits, atol=1e-6, rtol=1e-5)
            kernel.clear()
            dec(feats)[0].sum().backward()  # with autograd
            assert kernel == [dim] * 3 and taps == []
            kernel.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.no_grad():
                    traced = torch.jit.trace(dec, (feats,), check_trace=False)
                assert taps == traced_taps and kernel == []
                taps.clear()
                torch.jit.trace(dec, (feats,), check_trace=False)  # with autograd: the convolution
            assert taps == [] and kernel == []
            with torch.no_grad():
                traced_logits, traced_gating = traced(feats)
            torch.testing.assert_close(traced_gating, plain_gating, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(traced_logits, plain_logits, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False])
def test_pixelwise_conv_equals_the_1x1_convolution(channels_last):
    """Its CPU fast path (a matrix product over the pixels) gives the 1x1 convolution's output and gradients in
    float64, from channels-last and NCHW inputs, and returns a channels-last map; ``fast_paths = False`` is the
    convolution itself. Same parameters and state_dict keys as ``nn.Conv2d``."""
    from monai_patcher.networks.moe import PixelwiseConv

    torch.manual_seed(0)
    conv = PixelwiseConv(6, 5).double()
    ref = torch.nn.Conv2d(6, 5, kernel_size=1).double()
    assert conv.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(3, 6, 7, 4, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    out, expected = conv(xs[0]), ref(xs[1])
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(expected)
    got = torch.autograd.grad(out, [xs[0], conv.weight, conv.bias], grad)
    want = torch.autograd.grad(expected, [xs[1], ref.weight, ref.bias], grad)
    for g, w in zip(got, want):
        assert g.shape == w.shape and torch.allclose(g, w, rtol=1e-12, atol=1e-12)
    conv.fast_paths = False  # the plain path: the convolution, which keeps its input's layout
    plain = conv(x.contiguous())
    assert plain.is_contiguous() and not plain.is_contiguous(memory_format=torch.channels_last)

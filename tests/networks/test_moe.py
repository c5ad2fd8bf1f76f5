"""Tests of monai_patcher/networks/moe.py (the mixture-of-experts decoder)."""

from __future__ import annotations

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


def _decoder(**kw) -> MoEDecoder:
    args = {"in_channels": CHANNELS, "out_channels": 3, "decoder_dim": 8, "gate_channels": (8, 8), "dropout_rate": 0.0}
    return MoEDecoder(**{**args, **kw})


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
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in dec.gate) == (len(gate_channels) if gate_norm else 0)
    convs = [m for m in dec.gate if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [*gate_channels, 4]
    assert all(c.kernel_size == (3, 3) for c in convs)


@pytest.mark.parametrize("gate_channels,gate_norm", [((8, 8), False), ((8,), True), ((), False)])
def test_output_is_the_gated_sum_of_experts(gate_channels, gate_norm):
    """Recompute O = sum_i W_i F_i by hand from the decoder's own sub-modules and compare the logits.

    The reference runs the gate on the concatenated experts; the decoder splits its first convolution by expert.
    """
    dec = _decoder(gate_channels=gate_channels, gate_norm=gate_norm).eval()
    for m in dec.gate.modules():  # non-trivial running statistics, so BatchNorm is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    feats = _features(2, 10, 14)
    with torch.no_grad():
        logits, gating = dec(feats)
        experts = [
            F.interpolate(mlp(f), size=(10, 14), mode="bilinear", align_corners=False)
            for mlp, f in zip(dec.experts, feats)
        ]
        ref_gating = torch.softmax(dec.gate(torch.cat(experts, dim=1)), dim=1)
        mixed = sum(ref_gating[:, i : i + 1] * e for i, e in enumerate(experts))
        torch.testing.assert_close(gating, ref_gating)
        torch.testing.assert_close(logits, dec.head(mixed), atol=1e-5, rtol=1e-4)


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


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"in_channels": ()}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"decoder_dim": 0}, "decoder_dim"),
        ({"dropout_rate": 1.5}, "dropout_rate"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _decoder(**kwargs)

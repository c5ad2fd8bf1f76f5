"""Tests of monai_patcher/networks/patcher.py: the whole network, its presets, validation and bundle resolution."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import monai_patcher
from monai_patcher.networks import PATCHER_PRESETS, Patcher, PatcherBlock, patcher_preset


def tiny(in_channels: int = 2, out_channels: int = 1, **kw) -> Patcher:
    return patcher_preset("tiny", in_channels=in_channels, out_channels=out_channels, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# shapes and gating
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_channels", [2, 3])
@pytest.mark.parametrize("out_channels", [1, 4])
@pytest.mark.parametrize("hw", [(64, 64), (250, 190), (33, 47), (17, 5)])
def test_output_shape(in_channels, out_channels, hw):
    net = tiny(in_channels, out_channels).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, *hw))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, out_channels, *hw)
    assert out.is_contiguous()  # not a strided view of the padded logits (odd sizes)
    assert torch.isfinite(out).all()


def test_encoder_feature_shapes():
    """Stage i downsamples by 2**i (ceil for odd sizes) and has embed_dims[i] channels."""
    net = tiny().eval()
    with torch.no_grad():
        feats = net.forward_features(torch.randn(1, 2, 250, 190))
    h, w = 250, 190
    for f, d in zip(feats, PATCHER_PRESETS["tiny"]["embed_dims"]):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert f.shape == (1, d, h, w)


@pytest.mark.parametrize("hw", [(64, 64), (250, 190), (31, 9)])
def test_return_gating(hw):
    net = tiny(3, 2, return_gating=True).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        out = net(x)
        _, maps = net.decoder(net.forward_features(x))
    assert isinstance(out, tuple) and len(out) == 2
    logits, gating = out
    gh, gw = math.ceil(hw[0] / 2), math.ceil(hw[1] / 2)
    assert logits.shape == (2, 2, *hw)
    assert logits.is_contiguous() and gating.is_contiguous()
    assert maps.shape == (2, 4, gh, gw) and gating.shape == (2, 4, *hw)  # the decoder's maps, at the input's size
    assert (gating >= 0).all()
    torch.testing.assert_close(gating.sum(dim=1), torch.ones(2, *hw), atol=1e-5, rtol=0)
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(2, gh, gw), atol=1e-5, rtol=0)


def test_return_gating_does_not_change_logits():
    net = tiny().eval()
    x = torch.randn(1, 2, 40, 56)
    with torch.no_grad():
        plain = net(x)
        per_call, _ = net(x, return_gating=True)
        net.return_gating = True
        logits, _ = net(x)
        assert isinstance(net(x, return_gating=False), torch.Tensor)  # the call's flag wins over the default
    torch.testing.assert_close(logits, plain, atol=0, rtol=0)
    torch.testing.assert_close(per_call, plain, atol=0, rtol=0)


def _upsampled_gating(gating, stride: int, h: int, w: int):
    """The documented mapping, built here on its own: every gating pixel covers a ``stride x stride`` block of the
    input, so upsample (bilinear, ``align_corners=False``) to ``stride * size`` and crop to ``h x w``."""
    gh, gw = gating.shape[-2:]
    up = torch.nn.functional.interpolate(gating, size=(stride * gh, stride * gw), mode="bilinear", align_corners=False)
    return up[..., :h, :w]


@pytest.mark.parametrize("size", [(33, 47), (31, 64), (64, 48)])
def test_gating_maps_are_the_decoder_maps_upsampled(size):
    """At odd (and even) sizes the gating is the decoder's own ``ceil(H/S) x ceil(W/S)`` maps, upsampled bilinearly
    by the first stride ``S`` and cropped to ``H x W``: same place, same orientation (a mirrored map fails); the
    per-call flag leaves the network's default alone."""
    torch.manual_seed(0)
    net = tiny().eval()
    h, w = size
    x = torch.randn(1, 2, h, w, generator=torch.Generator().manual_seed(2))
    stride = net.first_stride
    with torch.no_grad():
        _, maps = net.decoder(net.forward_features(x))
        gating = net(x, return_gating=True)[1]
    assert maps.shape[-2:] == (-(-h // stride), -(-w // stride))
    assert gating.shape == (1, maps.shape[1], h, w) and net.return_gating is False
    torch.testing.assert_close(gating, _upsampled_gating(maps, stride, h, w), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gating.sum(1), torch.ones(1, h, w), rtol=0, atol=1e-5)  # still a mixture


class _KnownGating(torch.nn.Module):
    """A stand-in decoder: logits and gating maps at the first stage's resolution (``ceil(H/2) x ceil(W/2)``) that
    are known and far from left-right (or up-down) symmetric, whatever any initialisation."""

    def forward(self, features):
        b, _, gh, gw = features[0].shape
        yy, xx = torch.meshgrid(torch.linspace(0, 3, gh), torch.linspace(0, 5, gw), indexing="ij")
        scores = torch.stack([xx, -xx, yy, xx * yy / 5]).expand(b, 4, gh, gw)
        return xx.expand(b, 1, gh, gw), scores.softmax(1)


def test_gating_maps_known_gating_at_odd_size():
    """The same with gating maps that are known and asymmetric by construction (independent of any network's
    initialisation): a left-right or up-down mirrored map, or a shift of one pixel, is far off."""
    net = tiny().eval()
    net.decoder = _KnownGating()
    x = torch.rand(2, 2, 21, 35)
    with torch.no_grad():
        logits, gating = net(x, return_gating=True)
        _, maps = net.decoder(net.forward_features(x))
    expected = _upsampled_gating(maps, 2, 21, 35)
    torch.testing.assert_close(logits, _upsampled_gating(net.decoder(net.forward_features(x))[0], 2, 21, 35))
    torch.testing.assert_close(gating, expected, rtol=1e-6, atol=1e-6)
    for wrong in (expected.flip(-1), expected.flip(-2), expected.roll(1, -1)):
        assert (wrong - expected).abs().max() > 0.05  # the reference itself tells these apart


@pytest.mark.parametrize("previous", [False, True])
def test_return_gating_default_is_kept_after_an_error(previous):
    net = tiny(return_gating=previous).eval()
    with pytest.raises(ValueError, match="input channels"):
        net(torch.zeros(1, 3, 16, 16), return_gating=not previous)  # a 2-channel Patcher given 3 channels
    assert net.return_gating is previous


@pytest.mark.parametrize("h", [5, 9, 12])
def test_gating_is_upsampled_by_the_first_stride_at_small_sizes(h):
    """With a first-stage small patch of 4, a 9-pixel side has 3 gating rows; ceil(9 / 3) = 3 is not the stride.
    The maps must be upsampled by the network's own stride (4) and cropped, as at any other size."""
    torch.manual_seed(0)
    net = tiny(small_patch=(4, 2, 2, 2)).eval()
    assert net.first_stride == 4
    x = torch.randn(1, 2, h, 13, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, maps = net.decoder(net.forward_features(x))
        gating = net(x, return_gating=True)[1]
    torch.testing.assert_close(gating, _upsampled_gating(maps, 4, h, 13), rtol=1e-5, atol=1e-6)


def test_first_stage_locality():
    """Changing the input outside a large patch + its context leaves that patch's first-stage output alone;
    changing it inside the ring changes it (paper defaults for stage 1: L=32, P=8, S=2)."""
    net = tiny().eval()
    x = torch.randn(1, 2, 96, 96)
    with torch.no_grad():
        base = net.forward_features(x)[0][:, :, 16:32, 16:32]  # output of large patch (1, 1): pixels 32..63
        far = x.clone()
        far[:, :, :24] = torch.randn_like(far[:, :, :24])  # rows 0..23, outside rows 24..71 of the ring
        far[:, :, :, 72:] = torch.randn_like(far[:, :, :, 72:])
        assert torch.allclose(net.forward_features(far)[0][:, :, 16:32, 16:32], base, atol=1e-5, rtol=0)
        near = x.clone()
        near[:, :, 24, 24] += 3.0  # the ring's corner pixel
        assert not torch.allclose(net.forward_features(near)[0][:, :, 16:32, 16:32], base, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# training behaviour
# ---------------------------------------------------------------------------------------------------------------------


def test_gradients_reach_every_parameter():
    # no stochastic depth / dropout, or a dropped residual branch would legitimately get a zero gradient
    net = tiny(3, 2, drop_path_rate=0.0, dropout_rate=0.0, return_gating=True).train()
    logits, gating = net(torch.randn(2, 3, 48, 40))
    (logits.square().mean() + (gating * torch.randn_like(gating)).sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    zero = [n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0]
    assert not missing and not zero, (missing, zero)


def test_gradients_reach_every_parameter_from_logits_only():
    """The gating network is trained through the logits alone (the usual loss)."""
    net = tiny(drop_path_rate=0.0, dropout_rate=0.0).train()
    net(torch.randn(2, 2, 32, 32)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_stochastic_depth_schedule():
    net = patcher_preset("tiny", depths=(2, 2, 2, 2), drop_path_rate=0.1)
    rates = [getattr(blk.drop_path, "drop_prob", 0.0) for stage in net.stages for blk in stage.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 8))


def test_use_checkpoint_same_gradients():
    kw = {"drop_path_rate": 0.0, "dropout_rate": 0.0}
    torch.manual_seed(1)
    ref = tiny(**kw).train()
    torch.manual_seed(1)
    ck = tiny(use_checkpoint=True, **kw).train()
    assert all(s.use_checkpoint for s in ck.stages)
    x = torch.randn(2, 2, 40, 40)

    def run(net):
        saved = []

        def pack(t):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = net(x)
        out.square().mean().backward()
        return out, sum(saved)

    out_ref, saved_ref = run(ref)
    out_ck, saved_ck = run(ck)
    torch.testing.assert_close(out_ck, out_ref, atol=1e-6, rtol=1e-5)
    for (name, p), q in zip(ref.named_parameters(), ck.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-4, msg=name)
    # checkpointing really keeps fewer activations for the backward pass
    assert saved_ck < 0.7 * saved_ref, (saved_ck, saved_ref)


def test_eval_determinism_and_batch_independence():
    net = tiny().eval()
    x = torch.randn(3, 2, 50, 34)
    with torch.no_grad():
        a = net(x)
        b = net(x)
        single = net(x[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(single, a[1:2], atol=1e-5, rtol=1e-4)


def test_train_mode_is_stochastic():
    net = tiny(drop_path_rate=0.5).train()
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))


# ---------------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    ({"context_padding": 3}, "context_padding .*3.* divisible by small_patch"),
    ({"context_padding": (8, 8, 5, 8)}, "stage 3: context_padding"),
    ({"large_patch": 31}, "large_patch .*31.* divisible by small_patch"),
    ({"small_patch": 0}, "small_patch >= 1"),
    ({"context_padding": -2}, "context_padding >= 0"),
    ({"num_heads": (1, 1, 3, 2)}, "stage 3: embed_dims .*64.* divisible by num_heads .*3"),
    ({"num_heads": (1, 0, 2, 2)}, "stage 2: num_heads must be >= 1"),
    ({"num_heads": (1, 1, -2, 2)}, "stage 3: num_heads must be >= 1"),
    ({"embed_dims": (16, 0, 64, 64)}, "stage 2: embed_dims must be >= 1"),
    ({"embed_dims": (16, 32, 64, -64)}, "stage 4: embed_dims must be >= 1"),
    ({"mlp_ratio": 0.05}, r"stage 1: the Mix-FFN hidden layer int\(embed_dims \* mlp_ratio\)"),  # int(16 * 0.05) = 0
    ({"gate_channels": (32, 0)}, "gate_channels must all be >= 1"),
    ({"large_patch": 32.0}, "large_patch must be an int or a sequence"),
    ({"large_patch": "32"}, "large_patch must be an int or a sequence"),
    ({"context_padding": (8, 8, 8.0, 8)}, "context_padding must be an int or a sequence"),
    ({"small_patch": None}, "small_patch must be an int or a sequence"),
    ({"small_patch": True}, "small_patch must be an int or a sequence"),
    ({"depths": 1}, "depths must be a sequence of ints"),
    ({"embed_dims": "16"}, "embed_dims must be a sequence of ints"),
    ({"num_heads": (1, 1, 2.0, 2)}, "num_heads must be a sequence of ints"),
    ({"depths": (1, 1, 1)}, "depths has 3 values"),
    ({"num_heads": (1, 1, 2, 2, 2)}, "num_heads has 5 values"),
    ({"sr_ratios": (4, 2)}, "sr_ratios has 2 values"),
    ({"large_patch": (32, 32, 32)}, "large_patch has 3 values"),
    ({"context_padding": (8, 8)}, "context_padding has 2 values"),
    ({"small_patch": (2, 2, 2, 2, 2)}, "small_patch has 5 values"),
    ({"sr_ratios": (32, 2, 2, 1)}, "stage 1: sr_ratios .*32"),
    ({"sr_ratios": (5, 2, 2, 1)}, "sr_ratios .*5.* token grid"),
    ({"sr_ratios": (4, 0, 2, 1)}, "sr_ratios"),
    ({"depths": (1, 0, 1, 1)}, "stage 2: depths must be >= 1"),
    ({"embed_dims": ()}, "embed_dims"),
    ({"in_channels": 0}, "in_channels must be >= 1"),
    ({"out_channels": 0}, "out_channels must be >= 1"),
    ({"spatial_dims": 3}, "2D network"),
    ({"drop_path_rate": 1.5}, "drop_path_rate"),
    ({"dropout_rate": -0.1}, "dropout_rate"),
    ({"mlp_ratio": 0}, "mlp_ratio"),
    ({"decoder_dim": 0}, "decoder_dim"),
]


@pytest.mark.parametrize("overrides,match", BAD_CONFIGS, ids=[m.split(" ")[0] + str(i) for i, (_, m) in enumerate(BAD_CONFIGS)])
def test_bad_config_raises_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        patcher_preset("tiny", **overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown Patcher preset 'huge'"):
        patcher_preset("huge")


def test_bad_input_raises():
    net = tiny().eval()
    with pytest.raises(ValueError, match="3 input channels|built for 2 input channels"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="B x C x H x W"):
        net(torch.randn(2, 32, 32))


def test_empty_input_raises():
    """An empty batch or image is a clear ValueError, not a reshape error deep in the encoder."""
    net = tiny().eval()
    with torch.no_grad():
        with pytest.raises(ValueError, match="Patcher got an empty batch"):
            net(torch.randn(0, 2, 32, 32))
        with pytest.raises(ValueError, match="Patcher got an empty image"):
            net(torch.randn(1, 2, 0, 32))
        with pytest.raises(ValueError, match="Patcher got an empty image"):
            net(torch.randn(1, 2, 32, 0))


def test_integer_like_values_are_accepted():
    """NumPy integers and integer arrays count as ints and sequences of ints; the stored values are Python ints."""
    import numpy as np

    net = tiny(large_patch=np.int64(32), context_padding=[np.int64(8)] * 4, embed_dims=np.array([16, 32, 64, 64]))
    assert [(s.large_patch, s.context_padding) for s in net.stages] == [(32, 8)] * 4
    assert all(type(s.large_patch) is int for s in net.stages)
    assert [s.patch_embed.out_channels for s in net.stages] == [16, 32, 64, 64]


def test_paper_preset_matches_the_paper():
    """Construct only (a forward of the paper model takes seconds): ~78.5 M encoder parameters.

    Exactly 78,450,176 in the encoder and 82,723,333 in all (2 input channels, 1 output): the small-patch
    embedding is a bare conv as in the reference (a LayerNorm after it would add 2 * (64 + 128 + 320 + 512))."""
    net = patcher_preset("paper", in_channels=2, out_channels=1)
    encoder = sum(p.numel() for p in net.stages.parameters())
    assert abs(encoder - 78.5e6) / 78.5e6 < 0.01, encoder
    assert encoder == 78_450_176
    assert sum(p.numel() for p in net.parameters()) == 82_723_333
    assert [len(s.blocks) for s in net.stages] == [3, 6, 40, 3]
    assert [s.patch_embed.out_channels for s in net.stages] == [64, 128, 320, 512]
    assert [s.blocks[0].attn.num_heads for s in net.stages] == [1, 2, 5, 8]
    assert [s.blocks[0].attn.sr_ratio for s in net.stages] == [2, 2, 2, 1]
    assert all((s.large_patch, s.context_padding, s.small_patch) == (32, 8, 2) for s in net.stages)
    assert net.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    gate_convs = [m for m in net.decoder.gate if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in gate_convs] == [256, 256, 256, 4]


@pytest.mark.parametrize("name", ["small", "tiny"])
def test_small_presets_run(name):
    net = patcher_preset(name, in_channels=3, out_channels=1).eval()
    n = sum(p.numel() for p in net.parameters())
    assert n < 10e6
    with torch.no_grad():
        assert net(torch.randn(1, 3, 40, 72)).shape == (1, 1, 40, 72)


def test_preset_overrides():
    net = patcher_preset("tiny", in_channels=3, out_channels=2, decoder_dim=24, gate_norm=True)
    assert net.in_channels == 3 and net.out_channels == 2
    assert net.decoder.experts[0][0].out_channels == 24
    # the reference's gate: conv + BN + ReLU for the hidden layer and for the last one, to the 4 experts
    assert [type(m).__name__ for m in net.decoder.gate] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2


def test_encoder_init_follows_the_reference():
    """Every stage is initialised like the reference encoder (details in test_blocks): zero biases, LayerNorms at
    1 / 0, linear weights of std 0.02; the decoder's expert MLPs keep PyTorch's default (non-zero biases)."""
    net = patcher_preset("small")
    linear = torch.cat([m.weight.flatten() for m in net.stages.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(linear.std().item() - 0.02) < 0.001
    for name, p in net.stages.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
    for m in net.stages.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
    assert net.decoder.experts[0][0].bias.abs().max() > 0


@pytest.mark.parametrize(
    "large,context",
    [
        ((64, 64, 64, 32), 8),  # the paper's Table 4
        ((64, 64, 32, 32), 8),
        ((32, 32, 32, 32), 8),
        ((32, 16, 16, 16), 8),
        (32, 0),  # context ablation
        (32, 4),
        (32, 16),
        (32, (8, 4, 4, 0)),
    ],
)
def test_per_stage_patch_configs(large, context):
    net = tiny(large_patch=large, context_padding=context).eval()
    lp = large if isinstance(large, tuple) else (large,) * 4
    cp = context if isinstance(context, tuple) else (context,) * 4
    assert [(s.large_patch, s.context_padding) for s in net.stages] == list(zip(lp, cp))
    with torch.no_grad():
        logits = net(torch.randn(1, 2, 80, 48))
    assert logits.shape == (1, 1, 80, 48) and torch.isfinite(logits).all()


def test_cropped_input_gives_the_same_logits_away_from_the_crop():
    """A 512-row image and its first 500 rows: the encoder features of the top rows are the same (locality), so
    the logits and gating maps must be too. With 500 rows the stages round up (250/125/63/32); the decoder must
    upsample each expert by its stride, not stretch it to the finest map (which shifts it from the first row)."""
    net = tiny(return_gating=True).eval()
    x = torch.randn(1, 2, 512, 64)
    with torch.no_grad():
        logits_full, gating_full = net(x)
        logits_crop, gating_crop = net(x[:, :, :500])
        maps_full = net.decoder(net.forward_features(x))[1]
        maps_crop = net.decoder(net.forward_features(x[:, :, :500]))[1]
    assert logits_crop.shape == (1, 1, 500, 64) and gating_crop.shape == (1, 4, 500, 64)
    assert maps_crop.shape == (1, 4, 250, 32)
    torch.testing.assert_close(logits_crop[:, :, :192], logits_full[:, :, :192], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps_crop[:, :, :96], maps_full[:, :, :96], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gating_crop[:, :, :188], gating_full[:, :, :188], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "small_patch,strides", [(2, [1, 2, 4, 8]), ((2, 4, 2, 2), [1, 4, 8, 16]), ((4, 2, 2, 1), [1, 2, 4, 4])]
)
def test_decoder_gets_the_stage_strides(small_patch, strides):
    """The decoder upsamples expert i by the product of the later stages' small patches."""
    net = tiny(small_patch=small_patch, return_gating=True).eval()
    assert net.decoder.feature_strides == strides
    x = torch.randn(1, 2, 70, 50)
    with torch.no_grad():
        logits, gating = net(x)
        maps = net.decoder(net.forward_features(x))[1]
    s = net.first_stride
    assert logits.shape == (1, 1, 70, 50) and maps.shape == (1, 4, math.ceil(70 / s), math.ceil(50 / s))
    assert gating.shape == (1, 4, 70, 50)


def test_stage_blocks_are_patcher_blocks():
    net = tiny()
    assert len(net.stages) == 4 and all(isinstance(s, PatcherBlock) for s in net.stages)


# ---------------------------------------------------------------------------------------------------------------------
# bundle configs
# ---------------------------------------------------------------------------------------------------------------------

TINY_ARGS = {"in_channels": 2, "out_channels": 1, **{k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in PATCHER_PRESETS["tiny"].items()}}


def test_bundle_config_dotted_path():
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network_def": {"_target_": "monai_patcher.networks.Patcher", **TINY_ARGS},
                           "preset": {"_target_": "monai_patcher.networks.patcher_preset", "name": "tiny"}})
    net = parser.get_parsed_content("network_def")
    assert type(net) is Patcher
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in tiny().parameters())
    assert type(parser.get_parsed_content("preset")) is Patcher


def test_component_locator_short_names_are_unambiguous():
    """MONAI finds short names in loaded modules whose name starts with "monai" (monai_patcher qualifies)."""
    from monai.bundle.config_item import ComponentLocator

    locator = ComponentLocator()
    assert locator.get_component_module_name("Patcher") == "monai_patcher.networks.patcher"
    assert locator.get_component_module_name("patcher_preset") == "monai_patcher.networks.patcher"
    assert locator.get_component_module_name("MoEDecoder") == "monai_patcher.networks.moe"
    assert locator.get_component_module_name("PatcherBlock") == "monai_patcher.networks.blocks"


def test_bundle_config_short_name_after_import(tmp_path):
    """In a fresh interpreter, only the config's `"$import monai_patcher"` makes `"Patcher"` resolvable."""
    config = {
        "imports": ["$import monai_patcher"],
        "network_def": {"_target_": "Patcher", **TINY_ARGS},
        "preset": {"_target_": "patcher_preset", "name": "tiny", "in_channels": 3},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    script = textwrap.dedent(
        f"""
        import sys
        from monai.bundle import ConfigParser
        assert "monai_patcher" not in sys.modules
        parser = ConfigParser()
        parser.read_config({str(tmp_path / "config.json")!r})
        net = parser.get_parsed_content("network_def")
        pre = parser.get_parsed_content("preset")
        from monai_patcher.networks.patcher import Patcher
        assert type(net) is Patcher and type(pre) is Patcher, (type(net), type(pre))
        assert pre.in_channels == 3
        print("OK", type(net).__module__)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK monai_patcher.networks.patcher" in res.stdout


def test_package_exports_network_names():
    for name in ("Patcher", "patcher_preset", "PatcherBlock", "MoEDecoder"):
        assert getattr(monai_patcher, name) is getattr(monai_patcher.networks, name)
        assert name in monai_patcher.__all__


def test_config_holds_the_constructor_arguments_and_rebuilds_the_network():
    """``Patcher.config``: what a model record stores (monai_patcher.io.model_record), plain types only."""
    net = patcher_preset("tiny", in_channels=3, out_channels=2, large_patch=(32, 32, 16, 16), return_gating=True)
    cfg = net.config
    assert (cfg["in_channels"], cfg["out_channels"], cfg["return_gating"]) == (3, 2, True)
    assert cfg["large_patch"] == [32, 32, 16, 16] and cfg["embed_dims"] == [16, 32, 64, 64]  # tuples as lists
    assert "self" not in cfg and "__class__" not in cfg
    assert all(isinstance(v, (int, float, bool, list)) for v in cfg.values()), cfg
    again = Patcher(**cfg)
    assert again.config == cfg
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}

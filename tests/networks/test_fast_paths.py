"""Tests of monai_patcher/networks/fast_paths.py: the switch, and the fast paths against the plain path (the
architecture as defined) in float64, outputs and every parameter gradient."""

from __future__ import annotations

import pytest
import torch

from monai_patcher.networks import MoEDecoder, PatcherBlock, patcher_preset, set_fast_paths


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max()
    return 0.0 if scale == 0 else ((a - b).abs().max() / scale).item()


def _run(net: torch.nn.Module, x: torch.Tensor, fast: bool) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """Outputs and parameter gradients of one training-mode forward/backward (the same dropout masks each time)."""
    set_fast_paths(net, fast)
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    outs = net(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    weights = [torch.randn_like(o) for o in outs]  # a loss that reaches every output element
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    return tuple(o.detach() for o in outs), grads


@pytest.mark.parametrize(
    "preset,overrides,shape",
    [
        ("tiny", {}, (2, 2, 70, 50)),
        ("tiny", {"gate_norm": True, "gate_channels": ()}, (1, 2, 33, 17)),
        ("tiny", {"small_patch": (2, 2, 4, 2), "gate_channels": (8, 8)}, (2, 2, 64, 45)),
        ("small", {"depths": (1, 1, 1, 1), "decoder_dim": 16, "gate_channels": (16,)}, (1, 2, 65, 64)),
    ],
)
def test_fast_paths_give_the_plain_paths_outputs_and_gradients(preset, overrides, shape):
    """Training mode (dropout, stochastic depth and BatchNorm batch statistics active), float64, sizes that are not
    multiples of the large patch: the logits, the gating maps and the gradient of every parameter agree with the
    plain path to 1e-6 relative (float rounding is about 1e-15 here)."""
    torch.manual_seed(0)
    net = patcher_preset(preset, in_channels=2, out_channels=1, return_gating=True, **overrides).double().train()
    x = torch.randn(*shape, dtype=torch.float64)
    plain_outs, plain_grads = _run(net, x, fast=False)
    fast_outs, fast_grads = _run(net, x, fast=True)
    for f, p in zip(fast_outs, plain_outs):
        assert f.shape == p.shape and _max_rel(f, p) < 1e-6
    assert plain_grads.keys() == fast_grads.keys() and len(plain_grads) == len(list(net.parameters()))
    worst = max(_max_rel(fast_grads[n], plain_grads[n]) for n in plain_grads)
    assert worst < 1e-6
    assert all(plain_grads[n].abs().max() > 0 for n in plain_grads if "gate" not in n or not overrides.get("gate_norm"))


@pytest.mark.parametrize("shape", [(2, 2, 70, 50), (1, 2, 31, 64)])
def test_fast_paths_without_autograd(shape):
    """Eval mode without autograd (inference grouping of the large patches, the gate's CPU kernel), float64."""
    torch.manual_seed(0)
    net = patcher_preset("tiny", in_channels=2, out_channels=1, return_gating=True).double().eval()
    for stage in net.stages:
        stage.inference_chunk_bytes = 1  # one large patch per group
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        plain = set_fast_paths(net, False)(x)
        fast = set_fast_paths(net)(x)
    for f, p in zip(fast, plain):
        assert _max_rel(f, p) < 1e-6


def test_set_fast_paths_reaches_every_part_and_returns_the_module():
    net = patcher_preset("tiny", in_channels=2)
    wrapped = torch.nn.Sequential(net)
    parts = [m for m in net.modules() if isinstance(m, (PatcherBlock, MoEDecoder))]
    assert len(parts) == 5 and all(m.fast_paths for m in parts)  # on by default
    assert set_fast_paths(wrapped, False) is wrapped
    assert not any(m.fast_paths for m in parts)
    set_fast_paths(wrapped)
    assert all(m.fast_paths for m in parts)


def test_plain_path_runs_every_block_on_all_tokens():
    """The plain path is the architecture as defined: the last block of a stage sees the context tokens' queries too
    (the fast path computes the centre only), so it does more work for the same output."""
    block = PatcherBlock(2, 8, depth=2, num_heads=1, sr_ratio=2, large_patch=8, context_padding=2, small_patch=2)
    seen = []
    block.blocks[-1].register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
    x = torch.randn(1, 2, 16, 16)
    fast = block(x)
    block.fast_paths = False
    plain = block(x)
    assert seen == [4 * 4, 6 * 6]  # centre 4 x 4 tokens vs all (4 + 2) x (4 + 2)
    torch.testing.assert_close(fast, plain, atol=1e-6, rtol=1e-5)

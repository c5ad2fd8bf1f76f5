"""Tests of monai_patcher/networks/blocks.py against naive references written here from the paper's description."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_patcher.networks import EfficientSelfAttention, MixFFN, PatcherBlock, TransformerBlock

ATOL = 1e-4


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial values everywhere (LayerNorm starts at weight 1 / bias 0, which would hide a swapped norm)."""
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                centre = 1.0 if isinstance(mod, torch.nn.LayerNorm) and name == "weight" else 0.0
                p.copy_(torch.randn_like(p) * 0.3 + centre)
    return module


# ---------------------------------------------------------------------------------------------------------------------
# naive references
# ---------------------------------------------------------------------------------------------------------------------


def naive_attention(attn: EfficientSelfAttention, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Multi-head attention, one head and one sample at a time, with the module's weights."""
    b, n, d = x.shape
    heads, hd = attn.num_heads, d // attn.num_heads
    wk, wv = attn.kv.weight[:d], attn.kv.weight[d:]
    bk, bv = attn.kv.bias[:d], attn.kv.bias[d:]
    out = torch.empty_like(x)
    for i in range(b):
        tokens = x[i]  # n x d, row-major over the h x w grid
        if attn.sr_ratio > 1:
            grid = tokens.reshape(h, w, d).permute(2, 0, 1).unsqueeze(0).contiguous()  # 1 x d x h x w
            red = F.conv2d(grid, attn.sr.weight, attn.sr.bias, stride=attn.sr_ratio)[0]  # d x h/R x w/R
            kv_in = red.flatten(1).t()
            kv_in = F.layer_norm(kv_in, (d,), attn.norm.weight, attn.norm.bias, attn.norm.eps)
        else:
            kv_in = tokens
        q = tokens @ attn.q.weight.t() + attn.q.bias
        k = kv_in @ wk.t() + bk
        v = kv_in @ wv.t() + bv
        per_head = []
        for j in range(heads):
            sl = slice(j * hd, (j + 1) * hd)
            scores = q[:, sl] @ k[:, sl].t() / math.sqrt(hd)
            per_head.append(torch.softmax(scores, dim=-1) @ v[:, sl])
        out[i] = torch.cat(per_head, dim=1) @ attn.proj.weight.t() + attn.proj.bias
    return out


def naive_mixffn(ffn: MixFFN, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, n, d = x.shape
    y = x @ ffn.fc1.weight.t() + ffn.fc1.bias  # b x n x hidden
    hidden = y.shape[-1]
    grid = y.reshape(b, h, w, hidden).permute(0, 3, 1, 2).contiguous()
    grid = F.conv2d(grid, ffn.dwconv.weight, ffn.dwconv.bias, padding=1, groups=hidden)
    y = F.gelu(grid.flatten(2).transpose(1, 2))
    return y @ ffn.fc2.weight.t() + ffn.fc2.bias


def naive_patcher_block(block: PatcherBlock, x: torch.Tensor) -> torch.Tensor:
    """The paper's Patcher block, literally: pad (replicate), cut every (L+2P) patch, run it alone, crop, place.

    The small patches are embedded by the bare strided convolution (no normalisation after it, as in the reference).
    """
    b, _, h, w = x.shape
    L, P, S = block.large_patch, block.context_padding, block.small_patch
    nh, nw = math.ceil(h / L), math.ceil(w / L)
    xp = F.pad(x, (P, P + nw * L - w, P, P + nh * L - h), mode="replicate")
    k, c = L // S, P // S
    kc = k + 2 * c
    d = block.patch_embed.out_channels
    out = torch.zeros(b, d, nh * k, nw * k)
    for i in range(nh):
        for j in range(nw):
            patch = xp[:, :, i * L : i * L + L + 2 * P, j * L : j * L + L + 2 * P]
            assert patch.shape[-2:] == (L + 2 * P, L + 2 * P)
            tokens = block.patch_embed(patch).permute(0, 2, 3, 1).reshape(b, kc * kc, d)
            for blk in block.blocks:
                tokens = blk(tokens, kc, kc)
            centre = tokens.reshape(b, kc, kc, d)[:, c : c + k, c : c + k]
            out[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k] = block.norm(centre).permute(0, 3, 1, 2)
    return out[:, :, : math.ceil(h / S), : math.ceil(w / S)]


# ---------------------------------------------------------------------------------------------------------------------
# EfficientSelfAttention
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dim,heads,sr,h,w",
    [(16, 1, 1, 6, 10), (16, 2, 1, 5, 7), (16, 1, 2, 8, 12), (24, 3, 2, 6, 6), (16, 2, 4, 8, 16), (32, 4, 3, 9, 6)],
)
def test_attention_matches_naive_reference(dim, heads, sr, h, w):
    attn = _randomise(EfficientSelfAttention(dim, heads, sr_ratio=sr)).eval()
    x = torch.randn(3, h * w, dim)
    with torch.no_grad():
        out = attn(x, h, w)
        ref = naive_attention(attn, x, h, w)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-4)


def test_attention_spatial_reduction_shrinks_keys():
    """With R > 1 the key/value projection sees the h/R x w/R grid (R x R strided conv + LayerNorm)."""
    attn = EfficientSelfAttention(8, 1, sr_ratio=2).eval()
    assert isinstance(attn.sr, torch.nn.Conv2d) and attn.sr.stride == (2, 2)
    assert isinstance(attn.norm, torch.nn.LayerNorm)
    calls = []
    attn.kv.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    attn(torch.randn(2, 6 * 8, 8), 6, 8)
    assert calls == [torch.Size([2, 3 * 4, 8])]


def test_attention_without_reduction_has_no_reduction_layers():
    attn = EfficientSelfAttention(8, 2, sr_ratio=1)
    assert not any(isinstance(m, (torch.nn.Conv2d, torch.nn.LayerNorm)) for m in attn.modules())


def test_attention_qkv_bias_flag():
    assert EfficientSelfAttention(8, 1).q.bias is not None
    no_bias = EfficientSelfAttention(8, 1, qkv_bias=False)
    assert no_bias.q.bias is None and no_bias.kv.bias is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 10, "num_heads": 3}, "divisible"),
        ({"sr_ratio": 0}, "sr_ratio"),
        ({"num_heads": 0}, "num_heads must be >= 1"),  # was a ZeroDivisionError
        ({"num_heads": -2}, "num_heads must be >= 1"),
        ({"hidden_size": 0}, "hidden_size must be >= 1"),
    ],
)
def test_attention_bad_config(kwargs, match):
    args = {"hidden_size": 8, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        EfficientSelfAttention(**args)
    if "hidden_size" not in kwargs:  # the block builds the same attention
        with pytest.raises(ValueError, match=match):
            TransformerBlock(**args)


# ---------------------------------------------------------------------------------------------------------------------
# MixFFN and TransformerBlock
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,ratio", [(4, 4, 4.0), (5, 9, 2.0), (1, 7, 4.0)])
def test_mixffn_matches_naive_reference(h, w, ratio):
    ffn = _randomise(MixFFN(12, mlp_ratio=ratio)).eval()
    assert ffn.fc1.out_features == int(12 * ratio)
    x = torch.randn(2, h * w, 12)
    with torch.no_grad():
        torch.testing.assert_close(ffn(x, h, w), naive_mixffn(ffn, x, h, w), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("hidden_size,ratio", [(8, 0.1), (0, 4.0), (8, 0.0)])
def test_mixffn_bad_config(hidden_size, ratio):
    with pytest.raises(ValueError, match="hidden"):
        MixFFN(hidden_size, mlp_ratio=ratio)


def test_mixffn_mixes_only_3x3_neighbours():
    """The depthwise 3x3 conv is the only token mixing: a token change reaches its 8 neighbours and no further."""
    h, w = 7, 9
    ffn = _randomise(MixFFN(8)).eval()
    x = torch.randn(1, h * w, 8)
    x2 = x.clone()
    x2[0, 3 * w + 4] += 1.0  # token (3, 4)
    with torch.no_grad():
        diff = (ffn(x2, h, w) - ffn(x, h, w)).abs().amax(-1).reshape(h, w)
    changed = diff > 1e-6
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[2:5, 3:6] = True
    assert torch.equal(changed, expected)


def test_transformer_block_is_prenorm_residual():
    blk = _randomise(TransformerBlock(16, num_heads=2, sr_ratio=2, mlp_ratio=2.0)).eval()
    x = torch.randn(2, 8 * 6, 16)
    with torch.no_grad():
        y = x + naive_attention(blk.attn, blk.norm1(x), 8, 6)
        ref = y + naive_mixffn(blk.ffn, blk.norm2(y), 8, 6)
        torch.testing.assert_close(blk(x, 8, 6), ref, atol=ATOL, rtol=1e-4)


def test_transformer_block_drop_path_only_in_training():
    blk = TransformerBlock(8, num_heads=1, drop_path_rate=0.5)
    x = torch.randn(16, 4 * 4, 8)
    blk.train()
    with torch.no_grad():
        a, b = blk(x, 4, 4), blk(x, 4, 4)
    assert not torch.allclose(a, b), "DropPath must be stochastic in training"
    blk.eval()
    with torch.no_grad():
        assert torch.equal(blk(x, 4, 4), blk(x, 4, 4))
    assert isinstance(TransformerBlock(8, 1, drop_path_rate=0.0).drop_path, torch.nn.Identity)


# ---------------------------------------------------------------------------------------------------------------------
# PatcherBlock
# ---------------------------------------------------------------------------------------------------------------------


def _small_block(L=8, P=2, S=2, sr=2, in_ch=2, dim=8, depth=2, **kw) -> PatcherBlock:
    return _randomise(
        PatcherBlock(in_ch, dim, depth=depth, num_heads=2, sr_ratio=sr, mlp_ratio=2.0, large_patch=L,
                     context_padding=P, small_patch=S, **kw)
    ).eval()


@pytest.mark.parametrize("h,w", [(16, 16), (17, 9), (25, 31), (1, 1), (8, 3), (33, 40)])
@pytest.mark.parametrize("S", [2, 4])
def test_patcher_block_output_shape(h, w, S):
    block = _small_block(L=8, P=4, S=S, sr=1)
    out = block(torch.randn(2, 2, h, w))
    assert out.shape == (2, 8, math.ceil(h / S), math.ceil(w / S))


@pytest.mark.parametrize(
    "L,P,S,sr,h,w",
    [
        (8, 2, 2, 2, 16, 24),  # whole number of patches
        (8, 2, 2, 2, 21, 13),  # ragged bottom / right
        (8, 0, 2, 2, 19, 10),  # no context
        (12, 4, 4, 5, 30, 25),  # S = 4, (12 + 8) / 4 = 5 tokens per side, R = 5
        (6, 6, 2, 3, 7, 20),  # context as large as the patch
        (16, 8, 2, 2, 10, 9),  # image smaller than one patch
    ],
)
def test_patcher_block_matches_per_patch_loop(L, P, S, sr, h, w):
    block = _small_block(L=L, P=P, S=S, sr=sr)
    x = torch.randn(2, 2, h, w)
    with torch.no_grad():
        out = block(x)
        ref = naive_patcher_block(block, x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-4)


def _dependency_masks(L: int, P: int, S: int, h: int, w: int) -> torch.Tensor:
    """expected[y, x, i, j]: output patch (i, j) may depend on input pixel (y, x) (own patch + P ring)."""
    nh, nw = math.ceil(h / L), math.ceil(w / L)
    ys = torch.arange(h).view(h, 1, 1, 1)
    xs = torch.arange(w).view(1, w, 1, 1)
    i = torch.arange(nh).view(1, 1, nh, 1)
    j = torch.arange(nw).view(1, 1, 1, nw)
    in_rows = (ys >= i * L - P) & (ys < (i + 1) * L + P)
    in_cols = (xs >= j * L - P) & (xs < (j + 1) * L + P)
    return in_rows & in_cols


@pytest.mark.parametrize("L,P,S,sr,h,w", [(8, 2, 2, 2, 22, 26), (8, 0, 2, 1, 16, 12), (8, 4, 4, 2, 19, 17)])
def test_patcher_block_locality_every_pixel(L, P, S, sr, h, w):
    """Perturb each input pixel on its own (one batch entry per pixel, image borders included) and check that
    exactly the output patches whose large patch + context ring contain it change."""
    block = _small_block(L=L, P=P, S=S, sr=sr)
    x = torch.randn(1, 2, h, w)
    batch = x.repeat(h * w, 1, 1, 1)
    idx = torch.arange(h * w)
    batch[idx, :, idx // w, idx % w] += 3.0
    with torch.no_grad():
        base = block(x)
        out = block(batch)
    k = L // S
    nh, nw = math.ceil(h / L), math.ceil(w / L)
    diff = (out - base).abs().amax(dim=1)  # (h*w) x H/S x W/S
    diff = F.pad(diff, (0, nw * k - diff.shape[-1], 0, nh * k - diff.shape[-2]))
    per_patch = diff.reshape(h * w, nh, k, nw, k).amax(dim=(2, 4))  # (h*w) x nh x nw
    changed = (per_patch > 1e-4).reshape(h, w, nh, nw)
    expected = _dependency_masks(L, P, S, h, w)
    assert expected.any() and (~expected).any()
    mismatch = (changed != expected).nonzero().tolist()
    assert not mismatch, f"(y, x, i, j) where locality is violated or a dependency is missing: {mismatch[:10]}"
    # the largest change outside the allowed region is at rounding level
    outside = per_patch.reshape(h, w, nh, nw)[~expected]
    assert outside.max() < 1e-5


def test_patcher_block_locality_ring_edges():
    """The first pixel outside the ring leaves the patch alone; the last pixel inside the ring changes it."""
    L, P, S = 8, 4, 2
    block = _small_block(L=L, P=P, S=S, sr=1)
    x = torch.randn(1, 2, 32, 32)
    # patch (1, 1) covers pixels 8..15; its ring 4..19
    cases = {(3, 10): False, (20, 10): False, (10, 3): False, (10, 20): False,
             (4, 10): True, (19, 10): True, (10, 4): True, (10, 19): True, (4, 4): True, (19, 19): True}
    with torch.no_grad():
        base = block(x)[:, :, 4:8, 4:8]
        for (y, xx), should_change in cases.items():
            x2 = x.clone()
            x2[0, :, y, xx] -= 5.0
            changed = not torch.allclose(block(x2)[:, :, 4:8, 4:8], base, atol=1e-5, rtol=0)
            assert changed == should_change, (y, xx)


def test_patcher_block_checkpoint_same_forward_and_grads():
    ref = _small_block(depth=2)
    ck = _small_block(depth=2, use_checkpoint=True)
    ck.load_state_dict(ref.state_dict())
    ref.train(), ck.train()
    x = torch.randn(2, 2, 20, 18)
    ref(x).square().sum().backward()
    ck(x).square().sum().backward()
    for (name, p), q in zip(ref.named_parameters(), ck.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_patcher_block_inference_chunks_give_the_same_output():
    """Without autograd the patches run in groups (here 12 patches of 36 tokens, budget ~ 3 patches -> 4 groups);
    the output is that of one pass over all patches."""
    block = _small_block(L=8, P=2, S=2, sr=2, depth=2)
    x = torch.randn(2, 2, 24, 16)  # 2 images x 3 x 2 large patches
    hidden_per_patch = 6 * 6 * block._ffn_hidden * 4  # (L + 2P) / S = 6 tokens per side, float32
    with torch.no_grad():
        block.inference_chunk_bytes = 0
        assert block._num_chunks(12, 36, 4) == 1
        whole = block(x)
        block.inference_chunk_bytes = 3 * hidden_per_patch
        assert block._num_chunks(12, 36, 4) == 4
        grouped = block(x)
    torch.testing.assert_close(grouped, whole, atol=1e-6, rtol=1e-6)
    assert block._num_chunks(12, 36, 4) == 1  # autograd on: one pass (the groups would only add copies)


@pytest.mark.parametrize(
    "dtype,groups", [(torch.float32, [4, 4, 4]), (torch.float64, [2] * 6), (torch.bfloat16, [6, 6])]
)
def test_patcher_block_groups_are_sized_by_the_element_size(dtype, groups):
    """The groups fit the byte budget with the tokens' own element size: a budget that holds 4 float32 patches holds
    2 float64 patches and 8 bfloat16 ones (12 patches: groups of 4, 2 and 6)."""
    block = _small_block(L=8, P=2, S=2, sr=2, depth=1).to(dtype)
    block.inference_chunk_bytes = 4 * 6 * 6 * block._ffn_hidden * 4  # 4 patches of 36 tokens in float32
    sizes = []
    block.blocks[0].register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    x = torch.randn(2, 2, 24, 16, dtype=dtype)  # 2 images x 3 x 2 large patches
    with torch.no_grad():
        out = block(x)
    assert out.dtype == dtype
    assert sizes == groups
    element = torch.empty((), dtype=dtype).element_size()
    assert all(n * 36 * block._ffn_hidden * element <= block.inference_chunk_bytes for n in sizes)


def test_patcher_block_scripted_groups_match_eager():
    block = _small_block(L=8, P=2, S=2, sr=2, depth=1)
    block.inference_chunk_bytes = 1  # one patch per group
    scripted = torch.jit.script(block)
    x = torch.randn(3, 2, 16, 16)
    with torch.no_grad():
        assert block._num_chunks(12, 36, 4) == 12
        torch.testing.assert_close(scripted(x), block(x), atol=1e-6, rtol=1e-6)


def test_patcher_block_trace_does_not_bake_in_the_groups():
    """A trace must not record a group count for the batch it was traced with: trace at batch 1, run batch 3."""
    block = _small_block(L=8, P=2, S=2, sr=2, depth=1)
    block.inference_chunk_bytes = 1  # one patch per group whenever grouping is allowed
    with torch.no_grad():
        traced = torch.jit.trace(block, torch.randn(1, 2, 16, 16))
        x = torch.randn(3, 2, 16, 16)
        torch.testing.assert_close(traced(x), block(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"context_padding": 3}, "context_padding"),
        ({"large_patch": 7}, "large_patch"),
        ({"small_patch": 0}, "small_patch"),
        ({"context_padding": -2}, "context_padding"),
        ({"depth": 0}, "depth"),
        ({"drop_path_rates": [0.0, 0.1, 0.2]}, "drop_path_rates"),
        # (8 + 2 * 2) / 2 = 6 tokens per side: R = 4 would give keys/values from the top-left 4 x 4 tokens only
        ({"sr_ratio": 4}, "sr_ratio .*4.* token grid .* 6"),
        ({"sr_ratio": 12}, "sr_ratio .*12"),  # larger than the grid: the key/value conv would fail at run time
        ({"sr_ratio": 0}, "sr_ratio"),
        ({"in_channels": 0}, "in_channels"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_heads": 0}, "num_heads"),
    ],
)
def test_patcher_block_bad_config(kwargs, match):
    args = {"in_channels": 2, "hidden_size": 8, "depth": 2, "num_heads": 1, "large_patch": 8, "context_padding": 2,
            "small_patch": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        PatcherBlock(**args)


# ---------------------------------------------------------------------------------------------------------------------
# faithfulness to the reference code: the embedding and the initialisation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", [1, 2])
def test_patcher_block_embedding_is_a_bare_conv(sr):
    """The reference's PatchEmbed is a conv with kernel = stride = S and no norm: the only LayerNorms of a stage are
    the blocks' two pre-norms, the spatial reduction's norm (R > 1) and the final one."""
    block = PatcherBlock(2, 8, depth=3, num_heads=2, sr_ratio=sr, large_patch=8, context_padding=2)
    assert not hasattr(block, "embed_norm")
    norms = [n for n, m in block.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1 + 3 * (2 + (sr > 1)), norms
    assert "norm" in norms


def _assert_normal(w: torch.Tensor, std: float, name: str, rel: float = 0.05) -> None:
    assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel()), name
    assert abs(w.std().item() / std - 1) < rel, (name, w.std().item(), std)


def test_patcher_block_init_follows_the_reference():
    """``PatchTransformer._init_weights``: Linear ~ N(0, 0.02) truncated at +-2, bias 0; LayerNorm 1 / 0; Conv2d ~
    N(0, 2 / fan_out) with fan_out = kh * kw * out / groups, bias 0. PyTorch's defaults (uniform, bound
    1/sqrt(fan_in)) give stds of 0.032 for fc1 and 0.016 for fc2 here, and non-zero biases."""
    block = PatcherBlock(64, 320, depth=2, num_heads=5, sr_ratio=2, large_patch=32, context_padding=8)
    linears = [(n, m) for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
    convs = [(n, m) for n, m in block.named_modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [(n, m) for n, m in block.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(linears) == 2 * 5 and len(convs) == 1 + 2 * 2 and len(norms) == 1 + 2 * 3
    for name, m in linears:  # q 320x320 ... fc1 320x1280: at least 102,400 weights each
        _assert_normal(m.weight, 0.02, name)
        assert m.weight.abs().max() <= 2.0  # the truncation bounds (absolute, as in timm / torch)
        assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
    for name, m in norms:
        assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    expected = {
        "patch_embed": math.sqrt(2 / (2 * 2 * 320)),  # 64 -> 320, kernel 2
        "blocks.0.attn.sr": math.sqrt(2 / (2 * 2 * 320)),  # 320 -> 320, kernel 2
        "blocks.0.ffn.dwconv": math.sqrt(2 / 9),  # 3x3 depthwise, 1280 groups
    }
    for name, m in convs:
        key = name.replace("blocks.1", "blocks.0")
        _assert_normal(m.weight, expected[key], name)
        assert torch.equal(m.bias, torch.zeros_like(m.bias)), name

"""Building blocks of the Patcher encoder (Ou et al., MICCAI 2022).

One module per block, SegFormer style:

- :class:`EfficientSelfAttention`: multi-head attention whose keys/values come from a token grid reduced
  by an ``R x R`` strided convolution (``R = 1``: no reduction).
- :class:`MixFFN`: ``Linear(d, r*d) -> 3x3 depthwise conv -> GELU -> Linear(r*d, d)``.
- :class:`TransformerBlock`: pre-norm residual block ``x + DropPath(Attn(LN(x)))``, ``x + DropPath(FFN(LN(x)))``.
- :class:`PatcherBlock`: one encoder stage: overlapping large patches with a context ring, small-patch tokens,
  a stack of transformer blocks run on every large patch independently, and the patches put back in place.

Tokens are kept channels-last (``B x N x D``) through the transformer; the two convolutions (spatial
reduction and depthwise) view that buffer as ``B x D x h x w`` in channels-last memory format, so no
layout copies are made around them.

A :class:`PatcherBlock` initialises its weights like the reference encoder (``_init_encoder_weights``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["EfficientSelfAttention", "MixFFN", "TransformerBlock", "PatcherBlock"]


def _init_encoder_weights(module: nn.Module) -> None:
    """Initialise one module like the reference Patcher encoder (``PatchTransformer._init_weights``, SegFormer's rule).

    Meant for ``encoder.apply(_init_encoder_weights)``; every :class:`PatcherBlock` applies it to itself.

    - ``nn.Linear``: weight from a normal of std 0.02 truncated at +-2 (absolute bounds, as timm's and torch's
      ``trunc_normal_``; at std 0.02 the truncation hardly ever acts), bias 0.
    - ``nn.LayerNorm``: weight 1, bias 0.
    - ``nn.Conv2d``: weight from a normal of std ``sqrt(2 / fan_out)``, ``fan_out = kh * kw * out_channels //
      groups`` (so 9 for a 3x3 depthwise conv), bias 0.

    Other modules are left alone.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        with torch.no_grad():
            module.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _tokens_to_grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``B x (h*w) x D`` tokens -> ``B x D x h x w`` image, as a channels-last view (no copy)."""
    return x.view(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def _grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``B x D x h x w`` image -> ``B x (h*w) x D`` tokens (a view when ``x`` is channels-last)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


@torch.jit.unused
def _checkpointed(blk: nn.Module, x: torch.Tensor, kc: int, crop: int) -> torch.Tensor:
    """Run ``blk`` on a ``kc x kc`` token grid with activation checkpointing (eager only; TorchScript skips it)."""
    return checkpoint(blk, x, kc, kc, crop, use_reentrant=False)


def _crop_tokens(x: torch.Tensor, h: int, w: int, crop: int) -> torch.Tensor:
    """Keep the tokens at least ``crop`` tokens away from the border of an ``h x w`` grid of ``B x (h*w) x D``."""
    if crop == 0:
        return x
    b, _, d = x.shape
    return x.view(b, h, w, d)[:, crop : h - crop, crop : w - crop, :].reshape(b, -1, d)


def _window_index(nh: int, nw: int, k: int, kc: int, width: int, device: torch.device) -> torch.Tensor:
    """Flat indices into a row-major token grid of ``width`` columns of the ``nh x nw`` overlapping ``kc x kc``
    windows with stride ``k``: ``nh*nw*kc*kc`` indices, window by window, each window row-major.

    The windows are taken by this index gather rather than ``Tensor.unfold``, which the TorchScript-based ONNX
    exporter cannot export with dynamic sizes; the gather is traced with the size arithmetic, so an exported or
    traced graph also runs at other sizes.
    """
    rows = (torch.arange(nh, device=device) * k).view(nh, 1) + torch.arange(kc, device=device).view(1, kc)
    cols = (torch.arange(nw, device=device) * k).view(nw, 1) + torch.arange(kc, device=device).view(1, kc)
    return (rows.view(nh, 1, kc, 1) * width + cols.view(1, nw, 1, kc)).reshape(-1)


class EfficientSelfAttention(nn.Module):
    """SegFormer's efficient multi-head self-attention.

    Queries come from every token; keys and values from the token grid reduced by a ``sr_ratio x sr_ratio``
    convolution with the same stride followed by LayerNorm, which cuts the attention cost by ``sr_ratio**2``.

    Args:
        hidden_size: token dimension ``d``.
        num_heads: number of attention heads; must divide ``hidden_size``.
        sr_ratio: spatial reduction ``R`` of the key/value grid (1: none).
        qkv_bias: add a bias to the query, key and value projections.
        dropout_rate: dropout on the output projection.

    Example::

        >>> attn = EfficientSelfAttention(64, num_heads=2, sr_ratio=2)
        >>> attn(torch.randn(3, 24 * 24, 64), 24, 24).shape
        torch.Size([3, 576, 64])
    """

    def __init__(
        self, hidden_size: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True, dropout_rate: float = 0.0
    ) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}.")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}.")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        if sr_ratio < 1:
            raise ValueError(f"sr_ratio must be >= 1, got {sr_ratio}.")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.kv = nn.Linear(hidden_size, 2 * hidden_size, bias=qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.proj_drop = nn.Dropout(dropout_rate)
        if sr_ratio > 1:
            # channels-last weights, like its input: oneDNN skips a reorder, and the weight gradient has the
            # parameter's own layout (DistributedDataParallel's gradient layout contract)
            self.sr = nn.Conv2d(hidden_size, hidden_size, kernel_size=sr_ratio, stride=sr_ratio).to(
                memory_format=torch.channels_last
            )
            self.norm = nn.LayerNorm(hidden_size)
        else:
            self.sr = nn.Identity()
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int, query: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over a ``B x (h*w) x d`` token grid.

        Args:
            x: the tokens that give keys and values (and queries, unless ``query`` is given).
            h: grid height.
            w: grid width.
            query: optional ``B x Nq x d`` tokens to compute the output for (a subset of ``x``); default ``x``.

        Returns:
            ``B x Nq x d`` (``Nq = h*w`` without ``query``).
        """
        q_in = x if query is None else query
        b, n, d = q_in.shape
        q = self.q(q_in).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # B x heads x Nq x hd
        kv_in = x
        if self.sr_ratio > 1:
            kv_in = self.norm(_grid_to_tokens(self.sr(_tokens_to_grid(x, h, w))))  # B x N/R^2 x d
        # B x Nk x 2d -> 2 x B x heads x Nk x hd
        kv = self.kv(kv_in).view(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # its backward stacks the two gradients; indexing would zero-fill two full-size ones
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(out))


class MixFFN(nn.Module):
    """Mix-FFN: ``Linear(d, mlp_ratio*d) -> 3x3 depthwise conv -> GELU -> Linear(mlp_ratio*d, d)``.

    The depthwise convolution gives the tokens positional information, so no positional encoding is used.

    Args:
        hidden_size: token dimension ``d``.
        mlp_ratio: expansion ratio of the hidden layer.
        dropout_rate: dropout after the activation and after the output projection.

    Example::

        >>> ffn = MixFFN(64, mlp_ratio=4)
        >>> ffn(torch.randn(2, 16 * 16, 64), 16, 16).shape
        torch.Size([2, 256, 64])
    """

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0, dropout_rate: float = 0.0) -> None:
        super().__init__()
        hidden = int(hidden_size * mlp_ratio)
        if hidden_size < 1 or hidden < 1:
            raise ValueError(
                f"need hidden_size >= 1 and a hidden layer int(hidden_size * mlp_ratio) >= 1; got hidden_size="
                f"{hidden_size}, mlp_ratio={mlp_ratio} (hidden layer {hidden})."
            )
        self.fc1 = nn.Linear(hidden_size, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden).to(
            memory_format=torch.channels_last  # like its input (see EfficientSelfAttention.sr)
        )
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, hidden_size)
        self.drop = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, h: int, w: int, crop: int = 0) -> torch.Tensor:
        """Apply to a ``B x (h*w) x d`` token grid.

        With ``crop=1`` the outer ring of tokens only feeds the depthwise convolution of its neighbours and the
        output is the inner ``(h-2) x (w-2)`` grid; the default returns all ``h*w`` tokens.
        """
        grid = _tokens_to_grid(self.fc1(x), h, w)
        if crop == 0:
            grid = self.dwconv(grid)
        elif crop == 1:  # same weights, no zero padding: valid outputs for the inner grid only
            grid = F.conv2d(grid, self.dwconv.weight, self.dwconv.bias, groups=self.dwconv.groups)
        else:
            raise ValueError(f"MixFFN supports crop 0 or 1, got {crop}.")
        x = _grid_to_tokens(grid)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class TransformerBlock(nn.Module):
    """Pre-norm SegFormer block: efficient self-attention and Mix-FFN, each with a residual and DropPath.

    Args:
        hidden_size: token dimension.
        num_heads: attention heads.
        sr_ratio: spatial reduction of keys/values.
        mlp_ratio: Mix-FFN expansion ratio.
        drop_path_rate: stochastic-depth probability of this block.
        dropout_rate: dropout inside attention output and Mix-FFN.
        qkv_bias: bias on the query/key/value projections.

    Example::

        >>> blk = TransformerBlock(64, num_heads=1, sr_ratio=2)
        >>> blk(torch.randn(2, 24 * 24, 64), 24, 24).shape
        torch.Size([2, 576, 64])
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        sr_ratio: int = 1,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.attn = EfficientSelfAttention(hidden_size, num_heads, sr_ratio, qkv_bias, dropout_rate)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.ffn = MixFFN(hidden_size, mlp_ratio, dropout_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int, crop: int = 0) -> torch.Tensor:
        """Run the block on a ``B x (h*w) x d`` token grid.

        Args:
            x: tokens.
            h: grid height.
            w: grid width.
            crop: return only the inner ``(h - 2*crop) x (w - 2*crop)`` tokens. They are computed exactly, while
                the work for the discarded border is skipped: the border still gives keys/values, and its inner
                ring feeds the depthwise convolution, but it gets no query and no Mix-FFN output of its own.
        """
        if crop == 0:
            x = x + self.drop_path(self.attn(self.norm1(x), h, w))
            return x + self.drop_path(self.ffn(self.norm2(x), h, w))
        ring = min(crop, 1)  # tokens around the kept grid that the 3x3 depthwise conv reads
        gh, gw = h - 2 * (crop - ring), w - 2 * (crop - ring)
        xn = self.norm1(x)
        x = _crop_tokens(x, h, w, crop - ring)
        x = x + self.drop_path(self.attn(xn, h, w, query=_crop_tokens(xn, h, w, crop - ring)))
        return _crop_tokens(x, gh, gw, ring) + self.drop_path(self.ffn(self.norm2(x), gh, gw, crop=ring))


class PatcherBlock(nn.Module):
    """One Patcher encoder stage (the paper's "Patcher block").

    The input is padded by ``context_padding`` pixels on every side (edge pixels replicated) and cut into a
    grid of ``large_patch x large_patch`` patches, each carrying its context ring. Every ``small_patch x
    small_patch`` pixel block becomes one token (a bare convolution with kernel = stride = ``small_patch``, no
    normalisation after it, as in the reference); the transformer blocks run on each large patch on its own
    (patches are stacked along the batch axis and never see each other); after a LayerNorm the context
    tokens are dropped and the patches are put back in their grid places.

    The weights are initialised like the reference encoder (``_init_encoder_weights``: truncated normal of std
    0.02 for the linear layers, ``sqrt(2 / fan_out)`` normal for the convolutions, zero biases).

    Inputs whose size is not a multiple of ``large_patch`` are padded (replicating the edge) and the output
    cropped, so any ``H x W`` gives a ``ceil(H / small_patch) x ceil(W / small_patch)`` output. An output pixel
    depends only on the input inside its own large patch plus the context ring.

    The context tokens are dropped at the end of the stage, so the last transformer block computes outputs for
    the centre tokens only (exactly the same values; see ``TransformerBlock``'s ``crop``). This and the other
    work-saving paths below are the block's *fast paths*, on by default; the attribute ``fast_paths`` (set it with
    :func:`~monai_patcher.networks.set_fast_paths`) turns them off, for the plain path of the architecture as
    defined, which gives the same values up to float rounding.

    Small patches are embedded once on the padded image and the token grid is then cut into overlapping
    patches; this is exactly the per-patch embedding of the paper (a convolution with kernel = stride =
    ``small_patch`` on a grid aligned with the patches) without embedding the overlap twice.

    Without autograd, the large patches go through the blocks in groups whose Mix-FFN hidden activations fit in
    about ``inference_chunk_bytes`` (an attribute, 12 MiB; 0 turns grouping off; sized with the tokens' element
    size, so float64 gets twice the groups of float32): the same values, with the activations of a group staying
    in the CPU cache. A fast path too.

    Args:
        in_channels: channels of the stage input.
        hidden_size: token dimension ``D`` of this stage (and its output channels).
        depth: number of transformer blocks ``Nv``.
        num_heads: attention heads.
        sr_ratio: spatial reduction of keys/values inside a large patch; must divide the token grid of a large
            patch with its context, ``(large_patch + 2 * context_padding) / small_patch``.
        mlp_ratio: Mix-FFN expansion ratio.
        large_patch: ``L``, the large patch size (receptive field of the stage), in input pixels.
        context_padding: ``P``, the context ring around each large patch, in input pixels.
        small_patch: ``S``, the token size in input pixels (also the stage's downsampling factor).
        drop_path_rates: stochastic-depth probability of each block (a float: the same for all).
        dropout_rate: dropout inside the transformer blocks.
        use_checkpoint: recompute the transformer blocks in the backward pass to save training memory.

    Example::

        >>> stage = PatcherBlock(2, 64, depth=1, num_heads=1, sr_ratio=2)
        >>> stage(torch.randn(1, 2, 70, 50)).shape
        torch.Size([1, 64, 35, 25])
    """

    def __init__(
        self,
        in_channels: int,
        hidden_size: int,
        depth: int,
        num_heads: int,
        sr_ratio: int = 1,
        mlp_ratio: float = 4.0,
        large_patch: int = 32,
        context_padding: int = 8,
        small_patch: int = 2,
        drop_path_rates: float | Sequence[float] = 0.0,
        dropout_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_size < 1:
            raise ValueError(f"need in_channels >= 1 and hidden_size >= 1; got {in_channels} and {hidden_size}.")
        if small_patch < 1 or large_patch < 1 or context_padding < 0:
            raise ValueError(
                f"need small_patch >= 1, large_patch >= 1, context_padding >= 0; got small_patch={small_patch}, "
                f"large_patch={large_patch}, context_padding={context_padding}."
            )
        if large_patch % small_patch != 0:
            raise ValueError(f"large_patch ({large_patch}) must be divisible by small_patch ({small_patch}).")
        if context_padding % small_patch != 0:
            raise ValueError(
                f"context_padding ({context_padding}) must be divisible by small_patch ({small_patch}), "
                "so that the context ring is made of whole tokens."
            )
        grid = (large_patch + 2 * context_padding) // small_patch
        if sr_ratio < 1 or grid % sr_ratio != 0:  # else the key/value conv fails (R > grid) or silently drops tokens
            raise ValueError(
                f"sr_ratio ({sr_ratio}) must be >= 1 and divide the token grid of a large patch with its context, "
                f"(large_patch + 2 * context_padding) / small_patch = {grid}."
            )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        if isinstance(drop_path_rates, (int, float)):
            drop_path_rates = [float(drop_path_rates)] * depth
        if len(drop_path_rates) != depth:
            raise ValueError(f"drop_path_rates has {len(drop_path_rates)} values for {depth} blocks.")
        self.large_patch = large_patch
        self.context_padding = context_padding
        self.small_patch = small_patch
        self.use_checkpoint = use_checkpoint
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, kernel_size=small_patch, stride=small_patch)
        self.blocks = nn.ModuleList(
            [
                TransformerBlock(hidden_size, num_heads, sr_ratio, mlp_ratio, drop_path_rates[i], dropout_rate)
                for i in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(hidden_size)
        # without autograd the large patches go through the blocks in groups whose Mix-FFN hidden activations
        # fit in about this many bytes (see forward); 0 turns the grouping off
        self.inference_chunk_bytes = 12 * 2**20
        self.fast_paths = True  # see monai_patcher.networks.set_fast_paths
        self._ffn_hidden = self.blocks[0].ffn.fc1.out_features
        self.apply(_init_encoder_weights)

    def _num_chunks(self, num_patches: int, tokens: int, element_size: int) -> int:
        """How many groups to run ``num_patches`` large patches of ``tokens`` tokens in (1: all at once).

        ``element_size``: bytes per element of the tokens (4 for float32, 2 for bfloat16), which sizes the groups.

        Only without autograd (inference): the patches are independent, so running them group by group gives the
        same values and keeps each block's activations in the CPU cache instead of main memory. Not while
        tracing or compiling, where the group count would be baked in.
        """
        if torch.is_grad_enabled() or self.inference_chunk_bytes <= 0 or not self.fast_paths:
            return 1
        if not torch.jit.is_scripting():
            if torch.jit.is_tracing() or torch.compiler.is_compiling():
                return 1
        hidden_bytes = num_patches * tokens * self._ffn_hidden * element_size
        return max(1, min(num_patches, (hidden_bytes + self.inference_chunk_bytes - 1) // self.inference_chunk_bytes))

    def _run_blocks(self, patches: torch.Tensor, kc: int, c: int) -> torch.Tensor:
        """The transformer blocks on ``N x (kc*kc) x D`` patches; returns the ``N x (k*k) x D`` centre tokens."""
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            # the context ring is dropped after the stage: on the fast paths the last block computes the centre
            # tokens only
            crop = c if i == last and self.fast_paths else 0
            if self.use_checkpoint and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
                patches = _checkpointed(blk, patches, kc, crop)
            else:
                patches = blk(patches, kc, kc, crop)
        if not self.fast_paths:
            patches = _crop_tokens(patches, kc, kc, c)
        return patches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> ``B x D x ceil(H/S) x ceil(W/S)``."""
        b, _, h, w = x.shape
        L, P, S = self.large_patch, self.context_padding, self.small_patch
        # ceil as (h + L - 1) // L, not -(-h // L): the legacy ONNX exporter turns a floor division of a
        # negative size into a truncating Div (wrong patch counts at sizes that are not multiples of L)
        nh, nw = (h + L - 1) // L, (w + L - 1) // L  # grid of large patches
        # context ring on every side, plus the ragged bottom/right up to a whole number of large patches
        x = F.pad(x, (P, P + nw * L - w, P, P + nh * L - h), mode="replicate")
        tokens = self.patch_embed(x).permute(0, 2, 3, 1)  # B x Ht x Wt x D, Ht = (nh*L + 2P)/S
        k, c = L // S, P // S  # tokens per patch side (without context), context tokens per side
        kc = k + 2 * c
        d = tokens.shape[3]
        # overlapping windows -> (B*nh*nw) x (kc*kc) x D, in one gather of token rows (row-major flat indices)
        index = _window_index(nh, nw, k, kc, tokens.shape[2], x.device)
        patches = torch.index_select(tokens.reshape(b, -1, d), 1, index).view(b * nh * nw, kc * kc, d)
        chunks = self._num_chunks(patches.shape[0], kc * kc, patches.element_size())
        if chunks == 1:
            patches = self._run_blocks(patches, kc, c)
        else:
            patches = torch.cat([self._run_blocks(p, kc, c) for p in patches.chunk(chunks)])
        # normalise the centre tokens and put the patches back in place
        centre = self.norm(patches).view(b, nh, nw, k, k, d)
        out = centre.permute(0, 5, 1, 3, 2, 4).reshape(b, d, nh * k, nw * k)
        return out[:, :, : (h + S - 1) // S, : (w + S - 1) // S].contiguous()

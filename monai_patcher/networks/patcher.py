"""Patcher: patch transformers with a mixture-of-experts decoder (Ou et al., MICCAI 2022).

Y. Ou, Y. Yuan, X. Huang, S. T. C. Wong, J. Volpi, J. Z. Wang, K. Wong. "Patcher: Patch Transformers with
Mixture of Experts for Precise Medical Image Segmentation." MICCAI 2022, LNCS 13431, pp. 475-484.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set, Sized
from numbers import Integral
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PatcherBlock
from .moe import MoEDecoder

__all__ = ["Patcher", "patcher_preset", "PATCHER_PRESETS"]


def _is_int(value: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_int_sequence(value: Any) -> bool:
    """An ordered collection of ints (list, tuple, 1-D NumPy integer array...); not a string, set or mapping."""
    if isinstance(value, (str, bytes, Set, Mapping)) or not isinstance(value, Iterable) or not isinstance(value, Sized):
        return False
    return all(_is_int(v) for v in value)


def _int_sequence(name: str, value: Any) -> tuple[int, ...]:
    """``value`` as a tuple of ints; a ``ValueError`` naming ``name`` if it is not a sequence of ints."""
    if not _is_int_sequence(value):
        raise ValueError(f"{name} must be a sequence of ints, got {value!r}.")
    return tuple(int(v) for v in value)


def _per_stage(name: str, value: int | Sequence[int], num_stages: int) -> tuple[int, ...]:
    """``value`` for each of ``num_stages`` stages: an int repeated, or a sequence of one int per stage."""
    if _is_int(value):
        return (int(value),) * num_stages
    if not _is_int_sequence(value):
        raise ValueError(f"{name} must be an int or a sequence of one int per stage, got {value!r}.")
    if len(value) != num_stages:
        raise ValueError(f"{name} has {len(value)} values but the encoder has {num_stages} stages (len(embed_dims)).")
    return tuple(int(v) for v in value)


class Patcher(nn.Module):
    """Patcher: a 4-stage encoder of Patcher blocks and a mixture-of-experts decoder (2D).

    Each encoder stage cuts its input into large patches (``large_patch``) that carry a context ring
    (``context_padding``), tokenises them into small patches (``small_patch``, also the stage's downsampling
    factor) and runs SegFormer-style transformer blocks (efficient attention with spatial reduction ``sr_ratios``,
    Mix-FFN) on every large patch independently. The decoder turns each stage output into an expert and mixes
    them pixel-wise with a gating network; the gating maps can be returned (``forward(x, return_gating=True)``),
    at the input's size like the logits, to see which scale the model trusts where (the paper's Fig. 4).

    The defaults are the paper's / reference configuration (82.7 M parameters, 78.45 M of them in the encoder;
    its FLOP counts are in docs/architecture.md). Any input size works: the network pads inside and returns
    contiguous logits of exactly ``H x W``; an empty batch or image is a ``ValueError``. The encoder's weights are
    initialised like the reference's (see ``PatcherBlock``), the decoder's fuse convolution (and, with
    ``gate_norm``, its gating convolutions) like its mmcv ``ConvModule`` layers (see ``MoEDecoder``).

    Args:
        in_channels: input channels (2 for eADC + DWI stroke MRI, 3 for RGB polyp images).
        out_channels: output logit channels (1 for a binary mask with a sigmoid).
        spatial_dims: spatial dimensions; only 2 is supported (3D volumes are segmented slice by slice).
        embed_dims: token dimension of each stage.
        depths: transformer blocks per stage.
        num_heads: attention heads per stage.
        sr_ratios: key/value spatial reduction per stage.
        mlp_ratio: Mix-FFN expansion ratio.
        large_patch: large patch size ``L`` (an int, or one value per stage as in the paper's Table 4).
        context_padding: context ring ``P`` (an int, or one value per stage).
        small_patch: token size ``S`` (an int, or one value per stage); stage ``i`` downsamples by ``S``.
        decoder_dim: channels of the decoder's experts and head.
        gate_channels: hidden channels of the gating network's 3x3 convolutions.
        gate_norm: the reference config's gating variant: BatchNorm + ReLU after every gating convolution, the
            last one (to ``num_stages`` channels, before the softmax) included.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over all encoder blocks.
        dropout_rate: dropout before the decoder's classifier.
        return_gating: the default of ``forward``'s ``return_gating`` (for configs whose network should always
            return its gating maps, e.g. a bundle's ``"return_gating": "@save_gating"``); default False.
        use_checkpoint: activation checkpointing in the transformer blocks (less training memory, more compute).

    The constructor's arguments are kept in ``config`` (plain types, tuples as lists), as Hugging Face models keep
    theirs: a checkpoint's model record stores them (:mod:`monai_patcher.io.model_record`) so inference can rebuild
    this network without repeating them.

    Example::

        >>> net = patcher_preset("tiny", in_channels=2, out_channels=1)
        >>> net(torch.randn(1, 2, 250, 190)).shape
        torch.Size([1, 1, 250, 190])
        >>> logits, gating = net(torch.randn(1, 2, 250, 190), return_gating=True)
        >>> gating.shape  # one weight map per stage, summing to 1 at every pixel
        torch.Size([1, 4, 250, 190])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 2,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (3, 6, 40, 3),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        sr_ratios: Sequence[int] = (2, 2, 2, 1),
        mlp_ratio: float = 4.0,
        large_patch: int | Sequence[int] = 32,
        context_padding: int | Sequence[int] = 8,
        small_patch: int | Sequence[int] = 2,
        decoder_dim: int = 256,
        gate_channels: Sequence[int] = (256, 256, 256),
        gate_norm: bool = False,
        drop_path_rate: float = 0.1,
        dropout_rate: float = 0.1,
        return_gating: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        args = {k: list(v) if isinstance(v, tuple) else v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        #: the constructor's arguments as given (plain types): what a model record stores to rebuild this network
        self.config: dict[str, Any] = args
        if spatial_dims != 2:
            raise ValueError(
                f"Patcher is a 2D network (spatial_dims=2), got spatial_dims={spatial_dims}; segment volumes "
                "slice by slice (e.g. monai.inferers.SliceInferer)."
            )
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
        embed_dims = _int_sequence("embed_dims", embed_dims)
        num_stages = len(embed_dims)
        if num_stages < 1:
            raise ValueError("embed_dims must give at least one stage.")
        depths = _int_sequence("depths", depths)
        num_heads = _int_sequence("num_heads", num_heads)
        sr_ratios = _int_sequence("sr_ratios", sr_ratios)
        gate_channels = _int_sequence("gate_channels", gate_channels)
        for name, value in (("depths", depths), ("num_heads", num_heads), ("sr_ratios", sr_ratios)):
            if len(value) != num_stages:
                raise ValueError(
                    f"{name} has {len(value)} values but the encoder has {num_stages} stages (len(embed_dims))."
                )
        large = _per_stage("large_patch", large_patch, num_stages)
        context = _per_stage("context_padding", context_padding, num_stages)
        small = _per_stage("small_patch", small_patch, num_stages)
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}.")
        for i, (d, n, nh) in enumerate(zip(embed_dims, depths, num_heads)):
            if d < 1:
                raise ValueError(f"stage {i + 1}: embed_dims must be >= 1, got {d}.")
            if n < 1:
                raise ValueError(f"stage {i + 1}: depths must be >= 1, got {n}.")
            if nh < 1:
                raise ValueError(f"stage {i + 1}: num_heads must be >= 1, got {nh}.")
            if d % nh != 0:
                raise ValueError(f"stage {i + 1}: embed_dims ({d}) must be divisible by num_heads ({nh}).")
            if int(d * mlp_ratio) < 1:
                raise ValueError(
                    f"stage {i + 1}: the Mix-FFN hidden layer int(embed_dims * mlp_ratio) = int({d} * {mlp_ratio}) "
                    "must be >= 1."
                )
        for i, (l, p, s) in enumerate(zip(large, context, small)):
            if s < 1 or l < 1 or p < 0:
                raise ValueError(f"stage {i + 1}: need large_patch >= 1, small_patch >= 1, context_padding >= 0.")
            if p % s != 0:
                raise ValueError(
                    f"stage {i + 1}: context_padding ({p}) must be divisible by small_patch ({s})."
                )
            if l % s != 0:
                raise ValueError(f"stage {i + 1}: large_patch ({l}) must be divisible by small_patch ({s}).")
            grid, r = (l + 2 * p) // s, sr_ratios[i]
            if r < 1 or grid % r != 0:  # else the key/value conv fails (r > grid) or silently drops tokens
                raise ValueError(
                    f"stage {i + 1}: sr_ratios ({r}) must be >= 1 and divide the token grid of a large patch with "
                    f"its context, (large_patch + 2 * context_padding) / small_patch = {grid}."
                )
        if not 0.0 <= drop_path_rate <= 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1], got {drop_path_rate}.")
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate}.")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.return_gating = return_gating
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # stochastic depth over all blocks (device: also under a meta-device context)
        self.stages = nn.ModuleList()
        ch, start = in_channels, 0
        for i in range(num_stages):
            self.stages.append(
                PatcherBlock(
                    ch,
                    embed_dims[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    sr_ratio=sr_ratios[i],
                    mlp_ratio=mlp_ratio,
                    large_patch=large[i],
                    context_padding=context[i],
                    small_patch=small[i],
                    drop_path_rates=rates[start : start + depths[i]],
                    use_checkpoint=use_checkpoint,
                )
            )
            ch, start = embed_dims[i], start + depths[i]
        self.first_stride = small[0]
        # stride of each stage output relative to the first: the product of the later stages' small patches
        strides = [1]
        for i in range(1, num_stages):
            strides.append(strides[-1] * small[i])
        self.decoder = MoEDecoder(
            embed_dims, out_channels, decoder_dim, gate_channels, gate_norm, dropout_rate, feature_strides=strides
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder outputs, finest first: stage ``i`` is ``B x embed_dims[i] x H_i x W_i``."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward(
        self, x: torch.Tensor, return_gating: Optional[bool] = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``B x in_channels x H x W`` -> logits ``B x out_channels x H x W``, or ``(logits, gating)``.

        Args:
            x: the images.
            return_gating: also return the mixture-of-experts gating maps, ``B x num_stages x H x W`` (the
                decoder's maps at the first stage's resolution, upsampled and cropped like the logits: they sum to
                1 at every pixel). None: the constructor's ``return_gating``.
        """
        if x.ndim != 4:
            raise ValueError(f"Patcher expects a B x C x H x W tensor, got shape {list(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Patcher was built for {self.in_channels} input channels, got {x.shape[1]}.")
        if x.shape[0] == 0:
            raise ValueError(f"Patcher got an empty batch (shape {list(x.shape)}).")
        h, w = x.shape[2], x.shape[3]
        if h == 0 or w == 0:
            raise ValueError(f"Patcher got an empty image (shape {list(x.shape)}).")
        logits, gating = self.decoder(self.forward_features(x))
        if return_gating is None:
            return_gating = self.return_gating
        if return_gating:
            return self._to_input_size(logits, h, w), self._to_input_size(gating, h, w)
        return self._to_input_size(logits, h, w)

    def _to_input_size(self, maps: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """First-stage maps -> ``h x w``: each first-stage pixel covers an ``s x s`` input block (``s`` the first
        stage's small patch), so upsample by ``s`` (bilinear) and crop the padding."""
        s = self.first_stride
        if s > 1:
            maps = F.interpolate(maps, scale_factor=float(s), mode="bilinear", align_corners=False)
        return maps[:, :, :h, :w].contiguous()  # the crop is a strided view when H or W is odd


PATCHER_PRESETS: dict[str, dict[str, Any]] = {
    # the paper / reference configuration (about 80 M parameters)
    "paper": {},
    # a few M parameters, trainable on a CPU
    "small": {
        "embed_dims": (32, 64, 160, 256),
        "depths": (2, 2, 2, 2),
        "num_heads": (1, 2, 5, 8),
        "decoder_dim": 128,
        "gate_channels": (128,),
    },
    # for tests and smoke runs
    "tiny": {
        "embed_dims": (16, 32, 64, 64),
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 1, 2, 2),
        "sr_ratios": (4, 2, 2, 1),
        "decoder_dim": 32,
        "gate_channels": (32,),
        "mlp_ratio": 2.0,
    },
}


def patcher_preset(name: str, in_channels: int = 2, out_channels: int = 1, **overrides: Any) -> Patcher:
    """Build a :class:`Patcher` from a named configuration.

    Args:
        name: ``"paper"`` (the paper's configuration, the constructor defaults), ``"small"`` (a few M
            parameters, trainable on CPU) or ``"tiny"`` (for tests).
        in_channels: input channels.
        out_channels: output channels.
        overrides: any other :class:`Patcher` argument, replacing the preset's value.

    Example::

        >>> net = patcher_preset("small", in_channels=3, out_channels=1, return_gating=True)
    """
    if name not in PATCHER_PRESETS:
        raise ValueError(f"unknown Patcher preset {name!r}; choose one of {sorted(PATCHER_PRESETS)}.")
    kwargs = {**PATCHER_PRESETS[name], **overrides}
    return Patcher(in_channels=in_channels, out_channels=out_channels, **kwargs)

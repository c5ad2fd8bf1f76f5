"""The segmentation networks compared in the benchmarks: the one registry every benchmark builds its models from.

Every model maps ``B x C x H x W`` to binary logits ``B x 1 x H x W`` (``build_model``). Nothing is downloaded:
SegFormer is built from a ``transformers.SegformerConfig`` with random initialisation (the MiT-b0 / MiT-b5
encoder sizes) and its ``H/4`` logits are upsampled (bilinear) to the input size.

Names: ``patcher_small``, ``patcher_paper``, ``patcher_tiny`` (Patcher presets; ``patcher_small_bn`` etc. add
overrides, see ``PATCHER_VARIANTS``), ``unet``, ``attention_unet``, ``swin_unetr`` (MONAI, ``spatial_dims=2``),
``segformer_b0``, ``segformer_b5``; ``gemm_stack``, a control made of nothing but matrix products (see
:class:`GemmStack`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_patcher.networks import patcher_preset

__all__ = ["CONTROL_MODELS", "MODEL_NAMES", "PATCHER_VARIANTS", "build_model", "build_patcher", "count_parameters", "describe_model"]

MODEL_NAMES = (
    "patcher_small",
    "unet",
    "attention_unet",
    "swin_unetr",
    "segformer_b0",
    "segformer_b5",
    "patcher_paper",
)

#: controls for speed ratios, not segmentation models (built by ``build_model``, not trained on real data)
CONTROL_MODELS = ("gemm_stack",)

#: extra Patcher configurations tried on val/ (name -> (preset, overrides))
PATCHER_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "patcher_small": ("small", {}),
    "patcher_paper": ("paper", {}),
    "patcher_tiny": ("tiny", {}),
    # the paper preset with activation checkpointing (training memory; more compute)
    "patcher_paper_ckpt": ("paper", {"use_checkpoint": True}),
    # the reference's best polyp/stroke gating network: one hidden 3x3 conv with BatchNorm
    "patcher_small_bn": ("small", {"gate_norm": True}),
    # the paper's gating network: three hidden 3x3 convs
    "patcher_small_gate3": ("small", {"gate_channels": (128, 128, 128)}),
    # a deeper small preset (stage 3 gets more blocks, as in the paper's 3/6/40/3 shape)
    "patcher_small_deep": ("small", {"depths": (2, 2, 6, 2)}),
    # 4 x 4 tokens in stage 1 (SegFormer's first-stage stride): about 4x fewer stage-1 tokens, H/4 gating maps
    "patcher_small_s4": ("small", {"small_patch": (4, 2, 2, 2)}),
    # gating network = one 3x3 conv straight to the 4 weights (no hidden conv): the hidden 3x3 conv over the
    # concatenated experts at H/2 is most of the small preset's compute
    "patcher_small_gate0": ("small", {"gate_channels": ()}),
    "patcher_small_s4_gate0": ("small", {"small_patch": (4, 2, 2, 2), "gate_channels": ()}),
}

_SEGFORMER = {
    "segformer_b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256),
    "segformer_b5": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3], decoder_hidden_size=768),
}


class SegFormerLogits(nn.Module):
    """Hugging Face ``SegformerForSemanticSegmentation`` (random init) -> logits upsampled to the input size."""

    def __init__(self, in_channels: int, out_channels: int, variant: str) -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        cfg = SegformerConfig(
            num_channels=in_channels,
            num_labels=out_channels,
            num_attention_heads=[1, 2, 5, 8],
            sr_ratios=[8, 4, 2, 1],
            drop_path_rate=0.1,
            **_SEGFORMER[variant],
        )
        self.net = SegformerForSemanticSegmentation(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(pixel_values=x).logits  # B x C x H/4 x W/4
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class GemmStack(nn.Module):
    """A control for speed ratios: a network that is almost only matrix products, shaped like the paper preset's
    stage 3 Mix-FFN (320 -> 1280 -> 320 tokens).

    ``8 x 8`` pixel blocks become tokens (``pixel_unshuffle``, a copy), a linear layer embeds them, ``depth``
    residual blocks ``x + fc2(gelu(fc1(x)))`` follow, and a linear layer and ``pixel_shuffle`` give the logits.
    Its training step against its eval forward is what the GEMMs of this machine's library give (a linear layer's
    backward is two products the size of its forward), the floor below which a network made of the same products
    cannot go.
    """

    def __init__(self, in_channels: int, out_channels: int, dim: int = 320, hidden: int = 1280, depth: int = 8) -> None:
        super().__init__()
        self.block = 8
        self.embed = nn.Linear(in_channels * self.block**2, dim)
        self.fc1 = nn.ModuleList([nn.Linear(dim, hidden) for _ in range(depth)])
        self.fc2 = nn.ModuleList([nn.Linear(hidden, dim) for _ in range(depth)])
        self.out = nn.Linear(dim, out_channels * self.block**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        t = self.embed(F.pixel_unshuffle(x, self.block).permute(0, 2, 3, 1))  # B x h/8 x w/8 x dim
        for fc1, fc2 in zip(self.fc1, self.fc2):
            t = t + fc2(F.gelu(fc1(t)))
        return F.pixel_shuffle(self.out(t).permute(0, 3, 1, 2), self.block)


class PatcherLogits(nn.Module):
    """A Patcher that returns logits only in ``forward`` and ``(logits, gating)`` from ``with_gating``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, return_gating=False)

    def with_gating(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x, return_gating=True)


def build_patcher(name: str, in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """The ``Patcher`` of a ``PATCHER_VARIANTS`` name itself, without :class:`PatcherLogits` (for benchmarks that
    reach into its modules); random initialisation."""
    if name not in PATCHER_VARIANTS:
        raise ValueError(f"unknown Patcher variant {name!r}; choose from {sorted(PATCHER_VARIANTS)}")
    preset, overrides = PATCHER_VARIANTS[name]
    return patcher_preset(preset, in_channels=in_channels, out_channels=out_channels, **overrides)


def build_model(name: str, in_channels: int = 3, out_channels: int = 1) -> nn.Module:
    """Build a benchmark network by name (see the module docstring); random initialisation."""
    if name in PATCHER_VARIANTS:
        return PatcherLogits(build_patcher(name, in_channels, out_channels))
    if name == "unet":
        from monai.networks.nets import UNet

        return UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=(32, 64, 128, 256, 512),
            strides=(2, 2, 2, 2),
            num_res_units=2,
            norm="batch",
        )
    if name == "attention_unet":
        from monai.networks.nets import AttentionUnet

        return AttentionUnet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=(32, 64, 128, 256, 512),
            strides=(2, 2, 2, 2),
        )
    if name == "swin_unetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(
            in_channels=in_channels,
            out_channels=out_channels,
            spatial_dims=2,
            feature_size=24,
            window_size=8,
            dropout_path_rate=0.1,
        )
    if name in _SEGFORMER:
        return SegFormerLogits(in_channels, out_channels, name)
    if name == "gemm_stack":
        return GemmStack(in_channels, out_channels)
    raise ValueError(
        f"unknown model {name!r}; choose from {list(MODEL_NAMES) + sorted(PATCHER_VARIANTS) + list(CONTROL_MODELS)}"
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_model(name: str) -> str:
    """A one-line description of the configuration used (for the docs)."""
    if name in PATCHER_VARIANTS:
        preset, overrides = PATCHER_VARIANTS[name]
        return f"Patcher preset '{preset}'" + (f" with {overrides}" if overrides else "")
    return {
        "unet": "MONAI UNet, channels (32,64,128,256,512), strides 2, 2 residual units, BatchNorm",
        "gemm_stack": "control: 8 residual MLP blocks 320 -> 1280 -> 320 on 8 x 8 pixel tokens (matrix products only)",
        "attention_unet": "MONAI AttentionUnet, channels (32,64,128,256,512), strides 2",
        "swin_unetr": "MONAI SwinUNETR 2D, feature_size 24, window 8, depths (2,2,2,2)",
        "segformer_b0": "transformers SegFormer, MiT-b0 config, random init, decoder 256",
        "segformer_b5": "transformers SegFormer, MiT-b5 config, random init, decoder 768",
    }.get(name, name)

"""Patcher network and its building blocks."""

from .blocks import EfficientSelfAttention, MixFFN, PatcherBlock, TransformerBlock
from .moe import MoEDecoder
from .patcher import PATCHER_PRESETS, Patcher, patcher_preset

__all__ = [
    "Patcher",
    "patcher_preset",
    "PATCHER_PRESETS",
    "PatcherBlock",
    "TransformerBlock",
    "EfficientSelfAttention",
    "MixFFN",
    "MoEDecoder",
]

"""Patcher network and its building blocks."""

from .blocks import EfficientSelfAttention, MixFFN, PatcherBlock, TransformerBlock
from .fast_paths import set_fast_paths
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
    "set_fast_paths",
]

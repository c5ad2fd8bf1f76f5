"""Small utilities shared by the package and its bundles."""

from .amp import AutocastInferer, amp_dtype, autocast, cpu_bf16_support, default_amp

__all__ = ["AutocastInferer", "amp_dtype", "autocast", "cpu_bf16_support", "default_amp"]

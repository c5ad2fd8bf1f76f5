"""The switch between the Patcher network's exact fast paths and its plain path (the architecture as defined)."""

from __future__ import annotations

from torch import nn

from .blocks import PatcherBlock
from .moe import MoEDecoder, PixelwiseConv

__all__ = ["set_fast_paths"]


def set_fast_paths(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn the fast paths of every Patcher part inside ``module`` on (the default) or off.

    The fast paths give the same outputs and gradients as the architecture as defined, up to float rounding, with
    less work or faster kernels; the plain path runs every operation as the architecture defines it. Use the plain
    path to count the architecture's FLOPs, or as the reference the fast paths are checked against. The fast
    paths (docs/architecture.md has the measurements):

    - :class:`PatcherBlock`: the last transformer block computes the centre tokens only (the context ring is
      dropped after the stage); without autograd, the large patches go through the blocks in cache-sized groups.
    - :class:`MoEDecoder`: the gate's first convolution over the upsampled experts runs at the experts' own
      resolution (:func:`~monai_patcher.networks.cpu_kernels.add_upsampled_conv3x3_` in eager mode on CPU), and
      the gated sum of the experts takes its gating maps' gradient as batched dot products
      (:func:`~monai_patcher.networks.cpu_kernels.mix_experts`, eager mode on CPU).
    - :class:`~monai_patcher.networks.moe.PixelwiseConv` (the decoder's 1x1 convolutions): one matrix product over
      the pixels, in eager mode on CPU.

    Each part keeps its setting in its ``fast_paths`` attribute, so TorchScript, tracing and ONNX export follow it;
    the CPU kernels themselves run in eager mode on CPU only.

    Args:
        module: a :class:`~monai_patcher.networks.Patcher`, one of its parts, or any module containing them
            (a wrapper, a bundle's network).
        enabled: ``True`` for the fast paths, ``False`` for the plain path.

    Returns:
        ``module``, for chaining.

    Example::

        >>> net = set_fast_paths(patcher_preset("tiny"), False)  # the architecture as defined
        >>> set_fast_paths(net)  # back to the fast paths
    """
    for m in module.modules():
        if isinstance(m, (PatcherBlock, MoEDecoder, PixelwiseConv)):
            m.fast_paths = bool(enabled)
    return module

"""Automatic mixed precision on CPUs too: bfloat16 autocast where the CPU multiplies bf16 matrices natively.

On CUDA, AMP is ``torch.autocast("cuda")`` (float16, with a gradient scaler). On a CPU with native bfloat16 matrix
instructions (Intel AMX ``amx_bf16``, or ``avx512_bf16``) ``torch.autocast("cpu", dtype=torch.bfloat16)`` runs the
matrix products and convolutions in bf16 at several times the fp32 rate (docs/results.md); on other CPUs bf16 is
emulated and slower than fp32, so AMP stays off there. bf16 has fp32's exponent range, so no gradient scaler is
needed. Losses and metrics should be computed in fp32 (cast the logits with ``.float()``).

Example::

    >>> from monai_patcher.utils import autocast, default_amp
    >>> device = torch.device("cpu")
    >>> with autocast(device, enabled=default_amp(device)):
    ...     logits = net(images)
    >>> loss = loss_fn(logits.float(), labels)
"""

from __future__ import annotations

import contextlib
import logging

import torch

__all__ = ["cpu_bf16_support", "default_amp", "amp_dtype", "autocast"]

logger = logging.getLogger(__name__)

_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # best first, as /proc/cpuinfo names them
_logged: set[str] = set()


def _cpuinfo_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_support() -> str | None:
    """The CPU's native bfloat16 matrix support: ``"amx_bf16"``, ``"avx512_bf16"``, or ``None``.

    Read from the flags of /proc/cpuinfo; where there is none, from PyTorch's own CPU feature detection.
    """
    flags = _cpuinfo_flags()
    if not flags:
        with contextlib.suppress(AttributeError, RuntimeError):  # private PyTorch helpers; absent: no bf16
            if torch.cpu._is_amx_tile_supported():
                flags.add("amx_bf16")
            if torch.cpu._is_avx512_bf16_supported():
                flags.add("avx512_bf16")
    return next((f for f in _BF16_FLAGS if f in flags), None)


def default_amp(device: str | torch.device) -> bool:
    """Whether AMP should be on by default on ``device``: always on CUDA; on CPU where bf16 is native.

    The CPU decision is logged once per process (at INFO level), with the reason.

    Args:
        device: the training or inference device.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    support = cpu_bf16_support()
    if "cpu" not in _logged:
        _logged.add("cpu")
        if support:
            logger.info("AMP on CPU: bfloat16 autocast (native bf16 matrix support: %s).", support)
        else:
            logger.info("AMP on CPU: off (no native bf16 matrix support: neither amx_bf16 nor avx512_bf16).")
    return support is not None


def amp_dtype(device: str | torch.device) -> torch.dtype:
    """The autocast dtype of ``device``: float16 on CUDA (PyTorch's default there), bfloat16 on CPU."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def autocast(device: str | torch.device, enabled: bool = True) -> torch.autocast:
    """``torch.autocast`` for ``device`` with its AMP dtype (:func:`amp_dtype`).

    Args:
        device: the device the model runs on.
        enabled: ``False`` gives a context that changes nothing.
    """
    device = torch.device(device)
    return torch.autocast(device.type, dtype=amp_dtype(device), enabled=enabled)

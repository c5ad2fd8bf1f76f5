"""Automatic mixed precision on CPUs too: bfloat16 autocast where the CPU multiplies bf16 matrices natively.

On CUDA, AMP is ``torch.autocast("cuda")`` (float16, with a gradient scaler), as MONAI's engines run it with
``amp=True``. On a CPU with native bfloat16 matrix instructions (Intel AMX ``amx_bf16``, or ``avx512_bf16``)
``torch.autocast("cpu", dtype=torch.bfloat16)`` runs the matrix products and convolutions in bf16 at several times
the fp32 rate (docs/architecture.md); on other CPUs bf16 is emulated and slower than fp32. On CPU it is opt-in
(:func:`default_amp` is ``False`` there and says whether the CPU would profit). bf16 has fp32's exponent range, so
no gradient scaler is needed. Losses and metrics stay in fp32: :class:`AutocastInferer` casts the network's outputs
back, and MONAI's engines compute the loss and the metrics from what their inferer returns.

Example::

    >>> from monai_patcher.utils import autocast
    >>> with autocast("cpu"):
    ...     logits = net(images)
    >>> loss = loss_fn(logits.float(), labels)
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable

import torch
from monai.inferers import Inferer

__all__ = ["AutocastInferer", "amp_dtype", "autocast", "cpu_bf16_support", "default_amp"]

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
    """Whether AMP is on by default on ``device``: on CUDA; off on CPU, where bf16 autocast is opt-in.

    On CPU the advice is logged once per process (at INFO level): whether the CPU has native bf16 matrix support
    (then ``amp=True`` speeds training up) or not (then bf16 would be emulated, slower than fp32).

    Args:
        device: the training or inference device.

    Example::

        >>> default_amp("cuda"), default_amp("cpu")
        (True, False)
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type == "cpu" and "cpu" not in _logged:
        _logged.add("cpu")
        support = cpu_bf16_support()
        if support:
            logger.info("AMP on CPU is opt-in (amp=True): bf16 autocast, native bf16 matrix support: %s.", support)
        else:
            logger.info("AMP on CPU: keep it off (no native bf16 matrix support: neither amx_bf16 nor avx512_bf16).")
    return False


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


class AutocastInferer(Inferer):
    """Run another inferer under CPU bf16 autocast and return float32 outputs, so losses and metrics stay in fp32.

    MONAI's ``SupervisedTrainer`` and ``SupervisedEvaluator`` run AMP (``amp=True``) on CUDA only; the bundles give
    CPU training and evaluation their AMP with this wrapper around the inferer (``enabled`` only on CPU, and only
    when the bundle's ``amp`` is on). Inputs on another device run as the wrapped inferer runs them.
    Enabling it on a CPU without native bf16 matrix support logs a warning once: bf16 is emulated there and slower.

    Args:
        inferer: the inferer to wrap (``SimpleInferer``, ``SliceInferer``, ...).
        enabled: ``False`` runs ``inferer`` unchanged.

    Example::

        >>> from monai.inferers import SimpleInferer
        >>> inferer = AutocastInferer(SimpleInferer(), enabled=True)
        >>> inferer(torch.randn(1, 4), torch.nn.Linear(4, 2)).dtype
        torch.float32
    """

    def __init__(self, inferer: Inferer, enabled: bool = True) -> None:
        if not callable(inferer):
            raise ValueError(f"inferer must be a MONAI Inferer (callable), got {type(inferer).__name__}.")
        self.inferer = inferer
        self.enabled = bool(enabled)
        if self.enabled and cpu_bf16_support() is None and "cpu-emulated" not in _logged:
            _logged.add("cpu-emulated")
            logger.warning("AMP on CPU without native bf16 matrix support: bf16 is emulated and slower than fp32.")

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled or inputs.device.type != "cpu":
            return self.inferer(inputs, network, *args, **kwargs)
        with autocast("cpu"):
            outputs = self.inferer(inputs, network, *args, **kwargs)
        return _to_float32(outputs)


def _to_float32(outputs: Any) -> Any:
    """Reduced-precision floating tensors (also inside tuples, lists and dicts) cast to float32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() and outputs.dtype != torch.float64 else outputs
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_to_float32(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: _to_float32(v) for k, v in outputs.items()}
    return outputs

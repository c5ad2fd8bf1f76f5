"""``SliceInferer`` that runs the network once for all windows that hold only background.

Stroke volumes are skull-stripped: after ``NormalizeIntensityd(nonzero=True)`` the background is exactly 0, and the
slices above and below the head (and the padding of slices smaller than the window) give windows with nothing but
zeros. Every such window gets the same network output, so it is computed once per call (with the first batch that
holds one) and copied to the others: the stitched result is the one of running every window, for a fraction of the
network's work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.inferers import SliceInferer
from monai.utils import convert_to_tensor

__all__ = ["SkipEmptySliceInferer"]


def _items(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return list(out.values())
    return list(out)


def _rebuild(like: Any, items: list[torch.Tensor]) -> Any:
    if isinstance(like, torch.Tensor):
        return items[0]
    if isinstance(like, Mapping):
        return dict(zip(like.keys(), items))
    return type(like)(items) if isinstance(like, tuple) else list(items)


class _SkipEmptyWindows:
    """``network`` on a batch of windows, the all-background windows answered by one shared output."""

    def __init__(self, network: Callable, background: float) -> None:
        self.network = network
        self.background = background
        self.empty_output: list[torch.Tensor] | None = None  # per output: the network's answer to an empty window
        self.output_like: Any = None  # the network's output structure (a tensor, tuple or dict)
        self.windows = 0
        self.skipped = 0

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        n = x.shape[0]
        self.windows += n
        if args or kwargs:  # a condition or extra inputs go with each window: nothing to share
            return self.network(x, *args, **kwargs)
        plain = convert_to_tensor(x, track_meta=False)
        empty = (plain == self.background).flatten(1).all(dim=1)
        if not bool(empty.any()):
            return self.network(x)
        full = torch.nonzero(~empty).flatten()
        first_empty = torch.nonzero(empty).flatten()[:1]
        run = full if self.empty_output is not None else torch.cat([full, first_empty])
        self.skipped += n - len(run)
        if len(run) == 0:  # only empty windows, answered already
            return _rebuild(self.output_like, [e.expand(n, *e.shape[1:]).clone() for e in self.empty_output])
        out = self.network(plain[run])
        items = _items(out)
        if self.empty_output is None:
            self.empty_output = [t[-1:].detach().clone() for t in items]
            self.output_like = out
        merged = []
        for t, e in zip(items, self.empty_output):
            whole = e.expand(n, *e.shape[1:]).clone()
            whole[full] = t[: len(full)].to(whole.dtype)
            merged.append(whole)
        return _rebuild(out, merged)


class SkipEmptySliceInferer(SliceInferer):
    """MONAI's ``SliceInferer`` (2D windows over the slices of a 3D volume, Gaussian or constant blending) with every
    window that holds only ``background`` answered by one network output, computed once per call.

    The result is the ``SliceInferer`` result: an all-background window's output depends on nothing but the network,
    so the output computed for one such window (in the same batch as other windows, as ``SliceInferer`` would have
    computed it) is the output of every other. Windows are checked one by one (``x == background`` everywhere, the
    padding of slices smaller than the window included), so partly empty windows run as usual.

    After a call with ``skip_empty``, ``num_windows`` and ``num_skipped`` say how many windows there were and how many
    were not run (both 0 without ``skip_empty``).

    Args:
        spatial_dim: the slice axis of the 3D input (0, 1, 2), as in ``SliceInferer``.
        args: ``SlidingWindowInferer`` arguments (``roi_size``, ``sw_batch_size``, ``overlap``, ``mode``, ...).
        skip_empty: share the output of all-background windows (default True); False is ``SliceInferer``.
        background: the value of an empty window's voxels (0: the background of ``NormalizeIntensityd(nonzero=True)``
            and the inferer's default padding ``cval``).
        kwargs: ``SlidingWindowInferer`` keyword arguments.

    Example:
        >>> import torch
        >>> inferer = SkipEmptySliceInferer(spatial_dim=2, roi_size=(64, 64), sw_batch_size=4, mode="gaussian")
        >>> vol = torch.zeros(1, 2, 64, 64, 10)
        >>> vol[..., 3:6] = 1.0  # three slices with content
        >>> out = inferer(vol, torch.nn.Conv2d(2, 1, 3, padding=1))
        >>> tuple(out.shape), inferer.num_windows, inferer.num_skipped
        ((1, 1, 64, 64, 10), 10, 6)
    """

    def __init__(self, spatial_dim: int = 0, *args: Any, skip_empty: bool = True, background: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(spatial_dim, *args, **kwargs)
        self.skip_empty = bool(skip_empty)
        self.background = float(background)
        self.num_windows = 0
        self.num_skipped = 0

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``network`` on the windows of ``inputs`` (``B x C x H x W x D``), as ``SliceInferer`` does."""
        if not self.skip_empty:
            return super().__call__(inputs, network, *args, **kwargs)
        skipper = _SkipEmptyWindows(network, self.background)
        try:
            return super().__call__(inputs, skipper, *args, **kwargs)
        finally:
            self.num_windows, self.num_skipped = skipper.windows, skipper.skipped

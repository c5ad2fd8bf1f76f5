"""Slice-wise segmentation metrics: Dice and IoU of every 2D slice of 3D predictions (MONAI metric classes).

The paper scores stroke segmentation per slice and per case; MONAI's ``DiceMetric`` gives the per-case value,
:class:`SliceDiceMetric` / :class:`SliceIoUMetric` the per-slice ones. Their Ignite handlers are
:class:`~monai_patcher.handlers.SliceMeanDice` / :class:`~monai_patcher.handlers.SliceMeanIoU`.
"""

from __future__ import annotations

import torch
from monai.data import MetaTensor
from monai.metrics import CumulativeIterationMetric
from monai.metrics.meandice import compute_dice
from monai.metrics.meaniou import compute_iou
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from ..transforms.slices import PLANES, plane_axis

__all__ = ["SliceDiceMetric", "SliceIoUMetric"]


class SliceDiceMetric(CumulativeIterationMetric):
    """Dice of every 2D slice of ``B x C x X x Y x Z`` predictions (slices along ``slice_axis``).

    Each slice of each case is one row of the buffer, so the reduced value is the mean Dice over slices.
    Slices whose ground truth is empty give NaN (ignored by the ``mean`` reduction) when
    ``ignore_empty=True`` (MONAI's convention), else 1 if the prediction is empty too and 0 otherwise.

    Args:
        include_background: keep channel 0 (True for a single sigmoid channel).
        reduction: MONAI reduction over slices and channels (default ``"mean"``).
        get_not_nans: also return the number of non-NaN values.
        ignore_empty: see above.
        slice_axis: spatial axis of the slices (2 = the last of X, Y, Z; axial after RAS orientation), or an
            anatomical plane, ``"sagittal"``, ``"coronal"`` or ``"axial"``: the array axis closest to the
            left-right, anterior-posterior or inferior-superior direction of each prediction's affine (a
            ``MetaTensor``), whatever the orientation of its grid, e.g. predictions inverted to the scan's own grid.

    Example::

        >>> pred = MetaTensor(torch.zeros(1, 1, 8, 8, 4), affine=torch.eye(4))
        >>> SliceDiceMetric(slice_axis="axial")(pred, pred).shape  # 4 slices, 1 channel: NaN (empty truth)
        torch.Size([4, 1])
    """

    def __init__(
        self,
        include_background: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        ignore_empty: bool = True,
        slice_axis: int | str = 2,
    ) -> None:
        super().__init__()
        if isinstance(slice_axis, str):
            if slice_axis not in PLANES:
                raise ValueError(f"slice_axis must be 0, 1, 2 or one of {list(PLANES)}, got {slice_axis!r}.")
        elif slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1, 2 or one of {list(PLANES)}, got {slice_axis!r}.")
        else:
            slice_axis = int(slice_axis)  # e.g. a numpy integer
        self.include_background = include_background
        self.reduction = reduction
        self.get_not_nans = get_not_nans
        self.ignore_empty = ignore_empty
        self.slice_axis = slice_axis

    def _axis(self, x: torch.Tensor) -> int:
        """The spatial axis to cut ``x`` along (``slice_axis`` itself, or the one of its anatomical plane)."""
        if isinstance(self.slice_axis, int):
            return self.slice_axis
        affine = getattr(x, "affine", None)
        if not isinstance(x, MetaTensor) or affine is None:
            raise ValueError(
                f"slice_axis={self.slice_axis!r} needs predictions with an affine (MetaTensor), got {type(x).__name__}."
            )
        affine = torch.as_tensor(affine, dtype=torch.float64)
        if affine.ndim == 3:  # a batch: every item must be cut along the same axis
            axes = {plane_axis(a, self.slice_axis) for a in affine}
            if len(axes) != 1:
                raise ValueError(f"the {self.slice_axis} axis differs within the batch ({sorted(axes)}).")
            return axes.pop()
        return plane_axis(affine, self.slice_axis)

    def _to_slices(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        if x.ndim == 4:  # already B x C x H x W
            return torch.as_tensor(x)
        if x.ndim != 5:
            raise ValueError(f"SliceDiceMetric expects B x C x X x Y x Z (or B x C x H x W), got {tuple(x.shape)}")
        x = torch.movedim(torch.as_tensor(x), 2 + axis, 1)  # B x Z x C x X x Y
        return x.reshape(-1, *x.shape[2:])

    def _slices(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if y_pred.shape != y.shape:
            raise ValueError(f"y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)} must have the same shape")
        axis = self._axis(y_pred) if y_pred.ndim == 5 else 0
        return self._to_slices(y_pred, axis), self._to_slices(y, axis)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        p, t = self._slices(y_pred, y)
        return compute_dice(p, t, include_background=self.include_background, ignore_empty=self.ignore_empty)

    def aggregate(self, reduction: MetricReduction | str | None = None):  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


class SliceIoUMetric(SliceDiceMetric):
    """IoU (Jaccard) of every 2D slice of ``B x C x X x Y x Z`` predictions; arguments as :class:`SliceDiceMetric`."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        p, t = self._slices(y_pred, y)
        return compute_iou(p, t, include_background=self.include_background, ignore_empty=self.ignore_empty)

"""Ignite handlers of the slice-wise metrics: :class:`SliceMeanDice` and :class:`SliceMeanIoU`."""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers import IgniteMetricHandler
from monai.utils import MetricReduction

from ..metrics.slice_dice import SliceDiceMetric, SliceIoUMetric

__all__ = ["SliceMeanDice", "SliceMeanIoU"]


class SliceMeanDice(IgniteMetricHandler):
    """Ignite handler of :class:`SliceDiceMetric`: mean Dice over all 2D slices of the evaluated volumes.

    Use it next to ``MeanDice`` (per-case Dice) in an evaluator's ``additional_metrics``. Its per-slice
    values are not per file, so do not list it in ``MetricsSaver(metric_details=...)``.

    Args:
        include_background, reduction, ignore_empty, slice_axis: as :class:`SliceDiceMetric`.
        output_transform: engine output -> ``(y_pred, y)``, e.g. ``from_engine(["pred", "label"])``.
        save_details: keep the per-slice values in ``engine.state.metric_details``.
    """

    #: the metric this handler computes
    metric_class: type[SliceDiceMetric] = SliceDiceMetric

    def __init__(
        self,
        include_background: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        ignore_empty: bool = True,
        slice_axis: int | str = 2,
        output_transform: Callable = lambda x: x,
        save_details: bool = False,
    ) -> None:
        metric_fn = self.metric_class(include_background, reduction, False, ignore_empty, slice_axis)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class SliceMeanIoU(SliceMeanDice):
    """Ignite handler of :class:`SliceIoUMetric`: mean IoU over all 2D slices; arguments as :class:`SliceMeanDice`."""

    metric_class = SliceIoUMetric

"""Metrics (MONAI ``CumulativeIterationMetric`` classes): slice-wise Dice and IoU of 3D predictions."""

from .slice_dice import SliceDiceMetric, SliceIoUMetric

__all__ = ["SliceDiceMetric", "SliceIoUMetric"]

"""Inferers: MONAI's slice-by-slice sliding-window inference, with windows of background skipped."""

from .skip_empty import SkipEmptySliceInferer

__all__ = ["SkipEmptySliceInferer"]

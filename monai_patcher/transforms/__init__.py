"""MONAI dictionary transforms for Patcher: input checks, stroke (eADC), 3D -> 2D slicing, polyp images."""

from .checks import CheckGeometryd, CheckVolumed
from .slices import RandSliced, SliceDataset, extract_slice, slice_labels, stack_slices
from .stroke import (
    ADC_UNITS,
    ComputeEADCd,
    detect_adc_unit,
    stroke_inference_transforms,
    stroke_train_transforms,
    stroke_val_transforms,
    stroke_volume_transforms,
)

__all__ = [
    "CheckVolumed",
    "CheckGeometryd",
    "RandSliced",
    "SliceDataset",
    "extract_slice",
    "slice_labels",
    "stack_slices",
    "ADC_UNITS",
    "ComputeEADCd",
    "detect_adc_unit",
    "stroke_volume_transforms",
    "stroke_train_transforms",
    "stroke_val_transforms",
    "stroke_inference_transforms",
]

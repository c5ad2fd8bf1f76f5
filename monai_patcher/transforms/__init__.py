"""MONAI dictionary transforms for Patcher: input checks, stroke (eADC), 3D -> 2D slicing, polyp images."""

from .checks import CheckGeometryd, CheckVolumed
from .polyp import IMAGENET_MEAN, IMAGENET_STD, BinarizeMaskd, EnsureRGBd, polyp_load_transforms, polyp_train_transforms, polyp_val_transforms
from .slices import RandSliced, SliceDataset, extract_slice, slice_labels, stack_slices
from .stroke import (
    ADC_UNITS,
    INPLANE_MODES,
    ComputeEADCd,
    detect_adc_unit,
    stroke_inference_transforms,
    stroke_train_transforms,
    stroke_val_transforms,
    stroke_volume_transforms,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BinarizeMaskd",
    "EnsureRGBd",
    "polyp_load_transforms",
    "polyp_train_transforms",
    "polyp_val_transforms",
    "CheckVolumed",
    "CheckGeometryd",
    "RandSliced",
    "SliceDataset",
    "extract_slice",
    "slice_labels",
    "stack_slices",
    "ADC_UNITS",
    "INPLANE_MODES",
    "ComputeEADCd",
    "detect_adc_unit",
    "stroke_volume_transforms",
    "stroke_train_transforms",
    "stroke_val_transforms",
    "stroke_inference_transforms",
]

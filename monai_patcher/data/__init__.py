"""Data: readers, case discovery, datalist builders and the synthetic demo dataset.

Importing this module registers :class:`SimpleITKReader` under the name ``"SimpleITKReader"`` for
MONAI's ``LoadImage(d)`` (see :func:`register_reader`). The case, datalist and demo modules are imported on
first use (so ``python -m monai_patcher.data.demo`` runs cleanly).
"""

import importlib

from .errors import DataError
from .readers import PolypImageReader, SimpleITKReader, dicom_series_files, register_reader

register_reader()

_LAZY = {
    "Case": "cases",
    "find_cases": "cases",
    "split_two_channel": "cases",
    "stroke_inference_datalist": "cases",
    "stroke_output_name": "cases",
    "case_id": "cases",
    "image_datalist": "cases",
    "build_isles22_datalist": "datalists",
    "build_case_folder_datalist": "datalists",
    "build_kvasir_datalist": "datalists",
    "split_cases": "datalists",
    "write_datalist": "datalists",
    "load_datalist": "datalists",
    "median_inplane_spacing": "spacing",
    "make_demo_case": "demo",
    "write_demo_dataset": "demo",
    "ensure_demo_dataset": "demo",
}

__all__ = ["DataError", "PolypImageReader", "SimpleITKReader", "dicom_series_files", "register_reader"] + list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

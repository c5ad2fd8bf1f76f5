"""Data: readers, datalist builders and the synthetic demo dataset.

Importing this module registers :class:`SimpleITKReader` under the name ``"SimpleITKReader"`` for
MONAI's ``LoadImage(d)`` (see :func:`register_reader`).
"""

from .errors import DataError
from .readers import SimpleITKReader, dicom_series_files, register_reader

register_reader()

__all__ = ["DataError", "SimpleITKReader", "dicom_series_files", "register_reader"]

"""Image readers: :class:`SimpleITKReader` (a MONAI ``ImageReader``) and the format code behind it.

One concept per module:

- :mod:`.sitk_reader`: :class:`SimpleITKReader`, the MONAI reader (NIfTI, MetaImage, NRRD, DICOM files and series);
- :mod:`.dicom`: DICOM series discovery, slice ordering and checks, DICOM sniffing;
- :mod:`.nifti`: the NIfTI file read once, ITK's image of it matched to nibabel's;
- :mod:`.metaimage`: why a MetaImage file's voxel data is short;
- :mod:`.compressed`: gzipped files read once or checked to their end;
- :mod:`.itk`: SimpleITK header reading and error messages;
- :mod:`.suffixes`: the one table of image file suffixes (:data:`SUFFIXES`), used across the package.
"""

from .dicom import dicom_series_files, holds_dicom_files, is_dicom_file
from .sitk_reader import SimpleITKReader, register_reader
from .suffixes import SUFFIXES, strip_suffix, suffix_of, suffixes

__all__ = [
    "SimpleITKReader",
    "register_reader",
    "dicom_series_files",
    "is_dicom_file",
    "holds_dicom_files",
    "SUFFIXES",
    "suffixes",
    "suffix_of",
    "strip_suffix",
]

"""Image readers: :class:`SimpleITKReader` (a MONAI ``ImageReader``) and the format code behind it.

One concept per module:

- :mod:`.sitk_reader`: :class:`SimpleITKReader`, the MONAI reader (NIfTI, MetaImage, NRRD, DICOM files and series);
- :mod:`.polyp_reader`: :class:`PolypImageReader`, the MONAI reader of polyp photographs and masks (JPEG, PNG, ...);
- :mod:`.nifti_header`, :mod:`.metaimage_header` (and NRRD), :mod:`.dicom_header`: each format's header validated
  against itself and its file before ITK sees it (a header that lies is a ``DataError`` naming the file and field);
- :mod:`.budget`: the reading budget (a declared decoded size refused before anything is allocated);
- :mod:`.dicom`: DICOM series discovery, slice ordering and checks, DICOM sniffing;
- :mod:`.nifti`: the NIfTI file read once, ITK's image of it matched to nibabel's;
- :mod:`.metaimage`: why a MetaImage file's voxel data is short;
- :mod:`.compressed`: gzipped files read once or checked to their end;
- :mod:`.itk`: SimpleITK header reading and error messages;
- :mod:`.suffixes`: the one table of image file suffixes (:data:`SUFFIXES`), used across the package.
"""

from .dicom import dicom_series_files, holds_dicom_files, is_dicom_file
from .polyp_reader import PolypImageReader
from .sitk_reader import SimpleITKReader, register_reader
from .suffixes import SUFFIXES, strip_suffix, suffix_of, suffixes

__all__ = [
    "SimpleITKReader",
    "PolypImageReader",
    "register_reader",
    "dicom_series_files",
    "is_dicom_file",
    "holds_dicom_files",
    "SUFFIXES",
    "suffixes",
    "suffix_of",
    "strip_suffix",
]

"""NIfTI: the file read once, and ITK's image of it made to agree with nibabel (MONAI's ``NibabelReader``).

:func:`read_nifti` validates a ``.nii``/``.nii.gz`` file (:mod:`.nifti_header`: every header field, the declared size
against the reading budget and the file) and reads (decompresses) it once, refusing what ITK would silently
zero-fill, reinterpret or replace by 1 mm. The result, a :class:`NiftiFile`, serves the
rest without reading the file again:

- :func:`image_from_memory`: the image ITK's reader would return, built from the voxels in memory;
- :func:`restore_nonfinite`: the NaN/Inf voxels ITK's reader replaces by 0, put back;
- :func:`match_nibabel_geometry`: the image placed where nibabel places it (sform over qform).
"""

from __future__ import annotations

import io
import logging
import struct
import warnings

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.data.utils import correct_nifti_header_if_necessary, orientation_ras_lps

from ..errors import DataError
from .nifti_header import read_nifti_bytes

__all__ = ["NiftiFile", "read_nifti", "image_from_memory", "restore_nonfinite", "match_nibabel_geometry"]

logger = logging.getLogger(__name__)


# numpy (native byte order) -> SimpleITK scalar pixel types, for NIfTI voxels decoded from memory
_SITK_PIXEL = {
    np.dtype(np.uint8): sitk.sitkUInt8, np.dtype(np.int8): sitk.sitkInt8,
    np.dtype(np.uint16): sitk.sitkUInt16, np.dtype(np.int16): sitk.sitkInt16,
    np.dtype(np.uint32): sitk.sitkUInt32, np.dtype(np.int32): sitk.sitkInt32,
    np.dtype(np.uint64): sitk.sitkUInt64, np.dtype(np.int64): sitk.sitkInt64,
    np.dtype(np.float32): sitk.sitkFloat32, np.dtype(np.float64): sitk.sitkFloat64,
}  # fmt: skip



class NiftiFile:
    """A NIfTI file read once: its whole (decompressed) bytes and nibabel's image parsed from them.

    :func:`read_nifti` builds it; :func:`image_from_memory`, :func:`restore_nonfinite` and
    :func:`match_nibabel_geometry` use it instead of reading (and decompressing) the file again.
    """

    __slots__ = ("data", "image", "raw_header")

    def __init__(self, data: bytes, image, raw_header):
        # raw_header: the header as stored in the file. nibabel's image.header is not: it says vox_offset 0 and
        # scl_slope/scl_inter NaN, keeping the offset and the scaling in image.dataobj
        self.data, self.image, self.raw_header = data, image, raw_header

    @property
    def header(self):
        return self.image.header

    def raw_voxels(self) -> np.ndarray | None:
        """The stored (unscaled) voxels: a read-only view on :attr:`data`, file order (x fastest), flat; None if the
        file does not hold them all (:func:`read_nifti` refuses such files)."""
        header = self.header
        dtype = header.get_data_dtype()
        count = int(np.prod(header.get_data_shape()))
        offset = int(self.image.dataobj.offset)  # where nibabel reads them (after the extensions if vox_offset is 0)
        if offset < 0 or len(self.data) < offset + count * dtype.itemsize:
            return None
        return np.frombuffer(self.data, dtype=dtype, count=count, offset=offset)

    def plain_offset(self) -> bool:
        """True if ``vox_offset`` is a whole number of bytes, after the header, and where nibabel reads the voxels
        (ITK's NIfTI reader then reads them from there too)."""
        value = float(self.raw_header["vox_offset"])
        return (
            np.isfinite(value) and value == int(value) and int(value) >= int(self.header.single_vox_offset)
            and int(value) == int(self.image.dataobj.offset)
        )  # fmt: skip

    def scaled(self) -> bool:
        """True if ``scl_slope``/``scl_inter`` change the stored values (for nibabel and for ITK's NIfTI reader,
        which ignore a zero or non-finite slope and a non-finite intercept)."""
        # nibabel's array proxy holds the slope/intercept after that rule (1 / 0 when ignored)
        return (float(self.image.dataobj.slope), float(self.image.dataobj.inter)) != (1.0, 0.0)


def read_nifti(path: str, max_bytes: int | None = None, allow_missing_geometry: bool = False) -> NiftiFile:
    """Validate a NIfTI file (``.nii`` or ``.nii.gz``) before ITK sees it, and read it (decompressed) once: its bytes
    and nibabel's image parsed from them.

    The header's fields, its declared size against the reading budget and against the file are checked first
    (:func:`~monai_patcher.data.readers.nifti_header.read_nifti_bytes`: SimpleITK zero-fills truncated voxel data
    silently and reinterprets a header that declares fewer voxels; a ``.nii.gz`` is decompressed only up to the
    declared size). A file without orientation (``qform_code`` and ``sform_code`` both 0) is refused unless
    ``allow_missing_geometry``: ITK and nibabel place it differently.

    Args:
        path: the file.
        max_bytes: the reading budget (see :func:`~monai_patcher.data.readers.budget.check_decoded_size`).
        allow_missing_geometry: read a file without orientation (with ITK's geometry: pixdim spacing, no rotation,
            origin 0).

    Raises:
        DataError: invalid header field, over budget, fewer or more bytes than declared, truncated or corrupt gzip
            stream, no orientation. The message names the file.
    """
    data, layout = read_nifti_bytes(path, max_bytes)
    codes = struct.unpack_from(("<" if data[:4] in (b"\x5c\x01\x00\x00", b"\x1c\x02\x00\x00") else ">")
                               + ("2h" if layout.version == 1 else "2i"), data, 252 if layout.version == 1 else 344)
    if max(codes) <= 0 and not allow_missing_geometry:  # ITK and nibabel place such a file differently
        raise DataError.for_file(
            path, "NIfTI file without orientation (qform_code and sform_code are both 0, the Analyze convention): ITK "
            "and nibabel place it differently; pass allow_missing_geometry=True to the reader to read it anyway "
            "(with ITK's geometry: pixdim spacing, no rotation, origin 0)"
        )
    try:  # NIfTI-1 and -2 headers, parsed from the bytes in memory
        image = (nib.Nifti2Image if layout.version == 2 else nib.Nifti1Image).from_bytes(data)
    except Exception as e:  # nibabel raises many types for bad headers
        raise DataError.for_file(path, f"invalid NIfTI header: {e}") from None
    raw = type(image.header).from_fileobj(io.BytesIO(data), check=False)  # as stored (nibabel's header is "fixed")
    return NiftiFile(data, image, raw)


def image_from_memory(nifti: NiftiFile, header: sitk.ImageFileReader) -> sitk.Image | None:
    """The ``SimpleITK.Image`` ITK's NIfTI reader would return, built from the voxels already in memory (no second
    decompression by ITK), with ITK's own geometry, pixel type and metadata (from ``header``, its header read).

    Only for the plain case, where ITK's reader copies the stored values as they are: a single-file NIfTI-1/2, one
    scalar component, no ``scl_slope``/``scl_inter`` scaling, a pixel type ITK reads as the stored one, a
    ``vox_offset`` that is a whole number of bytes and where nibabel reads the voxels. None otherwise (the caller
    then lets ITK read the file). Unlike ITK's reader, this keeps NaN/Inf voxels (as ``NibabelReader`` does).
    """
    hdr = nifti.header
    if type(hdr) not in (nib.Nifti1Header, nib.Nifti2Header) or hdr["magic"].item() not in (b"n+1", b"n+2"):
        return None
    if header.GetNumberOfComponents() != 1 or nifti.scaled() or not nifti.plain_offset():
        return None
    dtype = hdr.get_data_dtype()
    native = dtype.newbyteorder("=")
    if _SITK_PIXEL.get(native) != header.GetPixelID():
        return None
    if min(header.GetSpacing()) <= 0:  # a negative pixdim: ITK's reader makes it positive (and flips the direction)
        return None
    size = tuple(int(n) for n in header.GetSize())
    voxels = nifti.raw_voxels()
    if voxels is None or voxels.size != int(np.prod(size)):
        return None
    if not dtype.isnative:
        voxels = voxels.astype(native)  # ITK swaps big-endian files to the machine's order too
    img = sitk.GetImageFromArray(voxels.reshape(size[::-1]), isVector=False)  # a copy (the bytes can go)
    img.SetOrigin(header.GetOrigin())
    img.SetSpacing(header.GetSpacing())
    img.SetDirection(header.GetDirection())
    _copy_metadata(header, img)
    return img


def restore_nonfinite(path: str, img: sitk.Image, nifti: NiftiFile | None) -> sitk.Image:
    """Put back the NaN/Inf voxels of a floating-point NIfTI file read by ITK.

    ITK's NIfTI reader silently replaces NaN and Inf voxels by 0, which would hide broken input from the
    checks downstream (``CheckVolumed``). For float NIfTI files the voxels already in memory (``nifti``, from
    :func:`read_nifti`) are checked; if any is not finite, the image's pixels are replaced by nibabel's (same
    grid, same values otherwise).
    """
    if nifti is None or img.GetNumberOfComponentsPerPixel() != 1:
        return img
    try:
        if not np.issubdtype(nifti.header.get_data_dtype(), np.floating):
            return img
        raw = nifti.raw_voxels()
        if raw is not None and not nifti.scaled() and np.isfinite(raw).all():
            return img  # the common case: no second copy of the voxels
        arr = np.asarray(nifti.image.dataobj)  # nibabel's values (scaled), from the bytes in memory
    except Exception:  # nibabel cannot read it: keep ITK's result
        return img
    if np.isfinite(arr).all():
        return img
    size = tuple(img.GetSize())
    if arr.shape != size:
        if arr.size != int(np.prod(size)):
            logger.warning("%s: NaN/Inf voxels not put back (nibabel shape %s, ITK size %s)", path, arr.shape, size)
            return img
        arr = arr.reshape(size, order="F")  # ITK dropped singleton axes, e.g. (x, y, z, 1) -> (x, y, z)
    dtype = sitk.GetArrayViewFromImage(img).dtype
    fixed = sitk.GetImageFromArray(np.ascontiguousarray(arr.T).astype(dtype, copy=False), isVector=False)
    fixed.CopyInformation(img)
    _copy_metadata(img, fixed)
    return fixed


def _copy_metadata(src: sitk.Image, dst: sitk.Image) -> None:
    """Copy every metadata key (the file's header fields) of ``src`` to ``dst``."""
    for key in src.GetMetaDataKeys():
        try:
            dst.SetMetaData(key, src.GetMetaData(key))
        except (RuntimeError, TypeError, UnicodeDecodeError):  # a header field that is not text (damaged bytes)
            continue


def _corner_distance(a: np.ndarray, b: np.ndarray, size) -> float:
    """The largest distance (mm) between where two affines put the corners of a grid of ``size`` voxels."""
    corners = np.array(np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in size[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((a @ corners - b @ corners)[:3], axis=0).max())


def match_nibabel_geometry(path: str, img: sitk.Image, nifti: NiftiFile | None) -> sitk.Image:
    """Place a NIfTI image where nibabel (and MONAI's ``NibabelReader``) places it.

    ITK uses the qform unless ``sform_code`` is 1 ("scanner") or there is no qform; nibabel uses the sform
    whenever ``sform_code > 0`` (``header.get_best_affine()``). For registration outputs (``sform_code`` 2, 3, 4)
    the two can differ by centimetres. The affine taken is exactly ``NibabelReader``'s: nibabel's, after MONAI's
    ``correct_nifti_header_if_necessary`` (which, like ITK, prefers the qform when only the qform's voxel sizes match
    ``pixdim``). When it (sform or qform; files with neither are left to ITK) differs from ITK's geometry, the image
    gets its origin, direction and spacing (the spatial 3x3 block of a 4D image), logged at info level. A sheared
    affine cannot be a SimpleITK geometry: ITK's is kept, with a warning. 2D images are left as ITK reads them.
    """
    dim = img.GetDimension()
    if nifti is None or dim < 3:
        return img
    try:
        nimg = nifti.image
        sform_code, qform_code = int(nimg.header["sform_code"]), int(nimg.header["qform_code"])
        if sform_code <= 0 and qform_code <= 0:
            return img
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Modifying image pixdim ...": NibabelReader's business
            ras = np.asarray(correct_nifti_header_if_necessary(nimg).affine, dtype=float)
    except Exception:  # nibabel cannot read it (ITK could): keep ITK's
        return img
    if sform_code > 0 and np.allclose(ras, nimg.header.get_sform(), atol=1e-6):
        which = f"sform (sform_code {sform_code})"
    else:
        which = f"qform (qform_code {qform_code})"
    lps = orientation_ras_lps(ras)  # RAS -> ITK's LPS
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(dim, dim)
    spacing = np.asarray(img.GetSpacing(), dtype=float)
    origin = np.asarray(img.GetOrigin(), dtype=float)
    itk = np.eye(4)
    itk[:3, :3] = direction[:3, :3] @ np.diag(spacing[:3])
    itk[:3, 3] = origin[:3]
    if not np.all(np.isfinite(lps)) or np.allclose(itk, lps, rtol=0, atol=1e-4):
        return img
    size = img.GetSize()
    moved = _corner_distance(itk, lps, size)
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    cosines = lps[:3, :3] / np.where(zooms > 0, zooms, 1)
    if np.any(zooms <= 0) or not np.allclose(cosines.T @ cosines, np.eye(3), atol=1e-4):
        logger.warning(
            "%s: the NIfTI %s is sheared (axes not orthogonal), which a SimpleITK image cannot hold; read with ITK's "
            "geometry (the file's qform) instead, %.3g mm away from where nibabel/NibabelReader place it",
            path, which, moved,
        )  # fmt: skip
        return img
    u, _, vt = np.linalg.svd(cosines)  # the nearest exactly orthonormal matrix (nibabel's is within 1e-4)
    direction[:3, :3] = u @ vt
    spacing[:3], origin[:3] = zooms, lps[:3, 3]
    img.SetDirection(direction.ravel().tolist())
    img.SetSpacing(spacing.tolist())
    img.SetOrigin(origin.tolist())
    logger.info(
        "%s: ITK would place this NIfTI file %.3g mm away from nibabel; using its %s like nibabel and NibabelReader",
        path, moved, which,
    )  # fmt: skip
    return img

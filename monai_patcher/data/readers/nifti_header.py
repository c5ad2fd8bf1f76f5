"""NIfTI header validation before ITK sees the file: a header that lies is a ``DataError`` naming the file and the field.

ITK's NIfTI reader trusts the header: a negative ``dim[0]`` or a lying ``datatype`` ends in an exception without the
file name (or worse), a header that declares fewer voxel bytes than the file holds is read as other voxels, and a
small ``.nii.gz`` that declares a huge volume is decompressed in full before anything is checked.
:func:`check_nifti_header` checks the fields (pure: it parses bytes with nibabel's header classes, which do not
"fix" anything with ``check=False``); :func:`read_nifti_bytes` reads a file through it: the header first, the declared
size against the memory budget, then exactly the declared bytes (the file size for ``.nii``; for ``.nii.gz`` a
streamed decompression that stops one byte after the declared size).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import zlib
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from ..errors import DataError
from .budget import check_decoded_size
from .compressed import gzip_errors

__all__ = ["NiftiLayout", "check_nifti_header", "read_nifti_bytes", "NIFTI_DATATYPES"]

#: NIfTI ``datatype`` code -> (name, bits per voxel, supported). Complex, colour and 128-bit types are refused: no
#: scan the pipelines take is stored so, ITK would hand them on as vectors, and MONAI's NibabelReader cannot read them.
NIFTI_DATATYPES = {
    2: ("uint8", 8, True), 4: ("int16", 16, True), 8: ("int32", 32, True), 16: ("float32", 32, True),
    32: ("complex64", 64, False), 64: ("float64", 64, True), 128: ("RGB24", 24, False), 256: ("int8", 8, True),
    512: ("uint16", 16, True), 768: ("uint32", 32, True), 1024: ("int64", 64, True), 1280: ("uint64", 64, True),
    1536: ("float128", 128, False), 1792: ("complex128", 128, False), 2048: ("complex256", 256, False),
    2304: ("RGBA32", 32, False),
}  # fmt: skip

#: the largest coordinate (mm) a header may give; beyond it the affine is meaningless and overflows in products.
MAX_COORDINATE = 1e9

_HEADER = {1: (nib.Nifti1Header, 348, 352), 2: (nib.Nifti2Header, 540, 544)}  # class, sizeof_hdr, first data byte


@dataclass(frozen=True)
class NiftiLayout:
    """What a validated single-file NIfTI header declares.

    Attributes:
        version: 1 or 2.
        shape: the voxel grid, ``dim[1:dim[0] + 1]``.
        datatype: the NIfTI datatype name (``"float32"``, ``"RGB24"``...).
        data_offset: where the voxels start (``vox_offset``).
        data_bytes: how many bytes of voxels the header declares.
        scaled: ``scl_slope``/``scl_inter`` change the stored values.
    """

    version: int
    shape: tuple[int, ...]
    datatype: str
    data_offset: int
    data_bytes: int
    scaled: bool

    @property
    def size(self) -> int:
        """The size of the whole (decompressed) file the header declares: ``data_offset + data_bytes``."""
        return self.data_offset + self.data_bytes


def _bad(path, field: str, problem: str) -> DataError:
    return DataError.for_file(path, f"invalid NIfTI header: {field} {problem}")


def _finite(values) -> bool:
    a = np.asarray(values, dtype=float)
    return bool(np.all(np.isfinite(a)) and np.all(np.abs(a) <= MAX_COORDINATE))


def check_nifti_header(path, head: bytes) -> NiftiLayout:
    """Validate the header of a single-file NIfTI-1/2 (``.nii``, or the decompressed start of a ``.nii.gz``).

    Checked: ``sizeof_hdr`` (348 or 540, either byte order), ``magic`` (``n+1``/``n+2``: one file), ``dim`` (``dim[0]``
    2..7, each size >= 1), ``datatype`` (known, scalar and real-valued) and ``bitpix`` (its size), ``pixdim`` of the spatial axes
    (finite and non-zero; a negative one is read as its absolute value, as nibabel and ITK do), ``vox_offset`` (a whole
    number of bytes after the header), ``scl_slope``/``scl_inter`` (finite when they scale; no intercept without a
    slope), ``qform_code`` /
    ``sform_code`` (0..5) and the transform each selects (finite, within 1e9 mm, not singular; quaternion norm <= 1).

    Args:
        path: the file, for the messages.
        head: at least the first 348 (NIfTI-1) or 540 (NIfTI-2) bytes.

    Returns:
        the :class:`NiftiLayout` the header declares.

    Raises:
        DataError: the first field that is invalid, named, with its value.

    Example:
        >>> import nibabel as nib, numpy as np
        >>> check_nifti_header("x.nii", nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)).to_bytes()).shape
        (4, 5, 6)
    """
    if len(head) < 4:
        raise DataError.for_file(path, f"not a readable image: {len(head)} bytes, shorter than a NIfTI header")
    version = endian = None  # the byte order is sizeof_hdr's (nibabel would guess it from dim[0], itself checked here)
    for v, (_, size, _) in _HEADER.items():
        for order in "<>":
            if struct.unpack(f"{order}i", head[:4])[0] == size:
                version, endian = v, order
    if version is None:
        raise DataError.for_file(
            path, f"not a readable image: not a NIfTI file (sizeof_hdr = {struct.unpack('<i', head[:4])[0]}; 348 for "
            "NIfTI-1, 540 for NIfTI-2)"
        )
    cls, hsize, first = _HEADER[version]
    if len(head) < hsize:
        raise DataError.for_file(path, f"truncated NIfTI file: the header needs {hsize} bytes, the file has {len(head)}")
    hdr = cls(head[:hsize], endianness=endian, check=False)
    magic = bytes(hdr["magic"].item()).rstrip(b"\x00")
    if magic != (b"n+1" if version == 1 else b"n+2"):
        hint = " (a header of a .hdr/.img pair, not a single-file .nii)" if magic in (b"ni1", b"ni2") else ""
        raise _bad(path, "magic", f"= {magic!r}{hint}; expected {'n+1' if version == 1 else 'n+2'}")
    dim = [int(d) for d in hdr["dim"]]
    if not 2 <= dim[0] <= 7:
        raise _bad(path, "dim[0]", f"= {dim[0]}: the number of dimensions must be 2 to 7")
    shape = tuple(dim[1 : dim[0] + 1])
    if any(n < 1 for n in shape):
        i = next(i for i, n in enumerate(shape, start=1) if n < 1)
        raise _bad(path, f"dim[{i}]", f"= {shape[i - 1]}: every size must be at least 1 (dim = {dim})")
    code = int(hdr["datatype"])
    if code not in NIFTI_DATATYPES:
        raise _bad(path, "datatype", f"= {code}: not a NIfTI data type")
    name, bits, supported = NIFTI_DATATYPES[code]
    if not supported:
        raise _bad(path, "datatype", f"= {code} ({name}): complex, colour and 128-bit voxels are not supported")
    if int(hdr["bitpix"]) != bits:
        raise _bad(path, "bitpix", f"= {int(hdr['bitpix'])} contradicts datatype {name} ({bits} bits per voxel)")
    pixdim = np.asarray(hdr["pixdim"], dtype=float)
    for i in range(1, min(dim[0], 3) + 1):
        if not np.isfinite(pixdim[i]) or abs(pixdim[i]) > MAX_COORDINATE or (pixdim[i] == 0 and shape[i - 1] > 1):
            raise _bad(path, f"voxel size pixdim[{i}]", f"= {pixdim[i]} (must be finite, non-zero)")
    offset = float(hdr["vox_offset"])
    if not np.isfinite(offset) or offset != int(offset) or offset < first:
        raise _bad(path, "vox_offset", f"= {offset}: the voxels of a single-file NIfTI-{version} start at a whole "
                   f"byte offset of at least {first} (after the header)")  # fmt: skip
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if np.isinf(slope):
        raise _bad(path, "scl_slope", f"= {slope}")
    scaled = np.isfinite(slope) and slope != 0
    if scaled and not np.isfinite(inter):
        raise _bad(path, "scl_inter", f"= {inter} with scl_slope = {slope}")
    if not scaled and np.isfinite(inter) and inter != 0:  # nibabel ignores it, ITK adds it: refused
        raise _bad(path, "scl_inter", f"= {inter} with scl_slope = {slope} (no scaling): an intercept without a slope")
    scaled = bool(scaled and (slope, inter) != (1.0, 0.0))
    for field in ("qform_code", "sform_code"):
        if not 0 <= int(hdr[field]) <= 5:
            raise _bad(path, field, f"= {int(hdr[field])}: not a NIfTI transform code (0 to 5)")
    if int(hdr["qform_code"]) > 0:
        quat = [float(hdr[f"quatern_{c}"]) for c in "bcd"]
        offs = [float(hdr[f"qoffset_{c}"]) for c in "xyz"]
        if not _finite(quat + offs) or not np.isfinite(pixdim[0]):
            raise _bad(path, "qform", f"(quatern_b/c/d {quat}, qoffset_x/y/z {offs}, qfac {pixdim[0]}) is not finite")
        if sum(q * q for q in quat) > 1.0 + 1e-3:
            raise _bad(path, "qform", f"quaternion (b, c, d) = {quat} has a norm above 1")
    if int(hdr["sform_code"]) > 0:
        srow = np.asarray([hdr["srow_x"], hdr["srow_y"], hdr["srow_z"]], dtype=float)
        if not _finite(srow):
            raise _bad(path, "sform", f"srow_x/y/z = {srow.tolist()} is not finite or beyond {MAX_COORDINATE:g} mm")
        if abs(np.linalg.det(srow[:, :3])) < 1e-12:
            raise _bad(path, "sform", f"srow_x/y/z = {srow.tolist()} is singular (no voxel size along some axis)")
    data_bytes = int(np.prod([int(n) for n in shape], dtype=object)) * bits // 8
    return NiftiLayout(version, shape, name, int(offset), data_bytes, scaled)


def _describe(layout: NiftiLayout) -> str:
    return f"the NIfTI header ({' x '.join(map(str, layout.shape))} {layout.datatype})"


def read_nifti_bytes(path, max_bytes: int | None = None) -> tuple[bytes, NiftiLayout]:
    """Read a single-file NIfTI (``.nii`` or ``.nii.gz``) whole, checked against its header before it is decoded.

    The header is validated (:func:`check_nifti_header`), its declared size is checked against the reading budget
    (:func:`~monai_patcher.data.readers.budget.check_decoded_size`), then the file must hold exactly the declared bytes:
    a ``.nii`` file's size, a ``.nii.gz`` file's decompressed stream, decompressed in chunks and never further than
    one byte past the declared size (so a decompression bomb stops there, and the gzip checksum is verified).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        max_bytes: the reading budget (see :func:`~monai_patcher.data.readers.budget.check_decoded_size`).

    Returns:
        ``(data, layout)``: the whole decompressed file and what its header declares.

    Raises:
        DataError: invalid header, over budget, fewer or more bytes than declared, corrupt gzip stream.
    """
    name = os.fspath(path)
    compressed = name.lower().endswith(".gz")
    with open(name, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            head = stream.read(544)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError.for_file(name, f"not a readable image (not a gzip file, or a truncated one): {e}") from None
        with gzip_errors(name) if compressed else contextlib.nullcontext():
            layout = check_nifti_header(name, head)
            check_decoded_size(name, layout.size, _describe(layout), max_bytes)
            if not compressed:
                present = os.fstat(raw.fileno()).st_size
                if present != layout.size:
                    raise _size_error(name, layout, present)
                return head + raw.read(), layout
            chunks, have = [head], len(head)
            while have <= layout.size:
                chunk = stream.read(min(1 << 22, layout.size + 1 - have))
                if not chunk:
                    break
                chunks.append(chunk)
                have += len(chunk)
    if have != layout.size:
        raise _size_error(name, layout, have, exact=have < layout.size)
    return b"".join(chunks), layout


def _size_error(path: str, layout: NiftiLayout, present: int, exact: bool = True) -> DataError:
    what = f"header + {' x '.join(map(str, layout.shape))} {layout.datatype} voxels from byte {layout.data_offset}"
    if present < layout.size:
        return DataError.for_file(
            path, f"truncated NIfTI file: {layout.size} bytes expected ({what}), only {present} present"
        )
    held = f"{present} bytes" if exact else f"more than {layout.size} bytes"
    return DataError.for_file(
        path, f"the NIfTI header declares {layout.size} bytes ({what}) but the file holds {held}: a header that "
        "does not describe its voxels (edited dim or datatype?)"
    )

"""``SimpleITKReader``: a MONAI :class:`~monai.data.ImageReader` built on SimpleITK.

Reads NIfTI (``.nii``/``.nii.gz``), MetaImage (``.mha``/``.mhd``), NRRD, single DICOM files (including
enhanced multi-frame files whose frames carry their geometry) and DICOM series folders. Arrays and
metadata follow MONAI's conventions exactly like :class:`monai.data.ITKReader` (which needs the much
larger ``itk`` package): spatial axes in ``(x, y, z)`` order (the transpose of SimpleITK's numpy view),
an affine in RAS world coordinates (``meta["space"] == "RAS"``), ``original_affine`` kept for
:class:`~monai.transforms.Invertd` / :class:`~monai.transforms.SaveImaged`, ``spatial_shape``, ``spacing``
and ``original_channel_dim``; a DICOM series carries the (public) tags of its first slice, as with ``ITKReader``.

On a NIfTI file it returns the same array and affine as :class:`monai.data.NibabelReader`: where ITK would
place the file by its qform but nibabel by its sform (``sform_code`` 2, 3 or 4: registration outputs of
FSL, ANTs, SPM), nibabel's affine is used (logged). A SimpleITK image cannot hold a sheared (non-orthogonal)
affine: a file whose only affine is sheared is refused (read it with ``NibabelReader`` or resample it), and a
file with a sheared sform but a rigid qform is read with the qform, with a warning giving the distance between
the two placements.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.data.utils import orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from ..errors import DataError
from .dicom import check_dicom_image, check_itk_geometry, check_multiframe_geometry, dicom_series_files, is_dicom_file
from .dicom_header import DicomInfo, read_dicom_info
from .itk import itk_error_message, read_header
from .metaimage import metaimage_shortfall
from .metaimage_header import check_metaimage_file, check_nrrd_file
from .nifti import NiftiFile, image_from_memory, match_nibabel_geometry, read_nifti, restore_nonfinite
from .suffixes import suffix_of, suffixes

__all__ = ["SimpleITKReader", "register_reader"]

#: the formats this reader claims in ``verify_suffix`` (a folder is taken as a DICOM series).
READER_FORMATS = ("nifti", "metaimage", "nrrd", "dicom")


def _validate_file(
    name: str, max_bytes: int | None, allow_missing_geometry: bool = False
) -> NiftiFile | DicomInfo | None:
    """Check a file's header against itself, its size and the reading budget before ITK reads anything of it: NIfTI,
    MetaImage, NRRD and DICOM (by suffix, or the DICOM preamble). A file of another format is refused: ITK trusts
    headers (a lying one crashed it, or made it return uninitialised memory), so only validated formats reach it.

    Returns:
        for a NIfTI file, the file read once (:func:`~monai_patcher.data.readers.nifti.read_nifti`); for a DICOM file
        what its data set says (:class:`~monai_patcher.data.readers.dicom_header.DicomInfo`); None otherwise.
    """
    fmt = suffix_of(name, READER_FORMATS)
    if fmt is None and is_dicom_file(name):
        fmt = ".dcm"
    if fmt in suffixes("nifti"):
        return read_nifti(name, max_bytes, allow_missing_geometry)
    if fmt in suffixes("metaimage"):
        check_metaimage_file(name, max_bytes)
    elif fmt in suffixes("nrrd"):
        check_nrrd_file(name, max_bytes)
    elif fmt in suffixes("dicom"):
        return check_dicom_image(name, max_bytes, allow_missing_geometry)
    else:
        raise DataError.for_file(
            name, f"unsupported file type (supported: {', '.join(suffixes(READER_FORMATS))}, DICOM series folders)"
        )
    return None


class _Pending:
    """A path noted by ``SimpleITKReader.read``, read by ``get_data``."""

    __slots__ = ("path", "series_uid")

    def __init__(self, path: str, series_uid: str | None):
        self.path, self.series_uid = path, series_uid

    def __repr__(self) -> str:
        return f"_Pending({self.path!r})"


class SimpleITKReader(ImageReader):
    """Load NIfTI, MHA/NRRD, DICOM files and DICOM series folders with SimpleITK, MONAI-style.

    Use it wherever MONAI takes a reader::

        LoadImaged(keys=["dwi", "adc"], reader=SimpleITKReader())

    or in a bundle config (after ``"$import monai_patcher"``)::

        {"_target_": "LoadImaged", "keys": ["dwi", "adc"], "reader": "SimpleITKReader"}
        {"_target_": "LoadImaged", "keys": "image", "reader": {"_target_": "monai_patcher.data.SimpleITKReader"}}

    A folder is read as a DICOM series (slices ordered by geometry, see :func:`dicom_series_files`);
    a list of files is stacked as channels (MONAI's convention), and their shapes and affines must agree.

    Args:
        channel_dim: the channel axis of the returned array, if any. None (default): a scalar 3D volume
            has no channel axis, a multi-component image (RGB) or a 4D NIfTI gets it last (``-1``).
        series_uid: ``SeriesInstanceUID`` to read from a folder holding several series. None: the series
            with the most slices (the choice is logged).
        affine_lps_to_ras: convert SimpleITK's LPS geometry to a RAS affine (MONAI's default, as
            ``ITKReader`` and ``NibabelReader`` do). Default True.
        reverse_indexing: return SimpleITK's numpy axis order ``(z, y, x)`` instead of MONAI's
            ``(x, y, z)``. Default False. It does not change the affine or the other metadata, except that a 4D
            image, ``(t, z, y, x)``, has ``original_channel_dim`` 0.
        allow_slice_gaps: read DICOM series whose slice positions have gaps (see :func:`dicom_series_files`;
            refused by default: the geometry would be wrong).
        b_value: from a DICOM series holding images of several diffusion b-values, read those of this one
            (see :func:`dicom_series_files`; no effect on other series and files).
        allow_missing_geometry: read DICOM series whose slices have no ``ImagePositionPatient`` or ``PixelSpacing``,
            single DICOM images without position, orientation or spacing, and NIfTI files without orientation
            (``qform_code`` and ``sform_code`` 0) (refused by default: the geometry would be made up, and ITK and
            nibabel make it up differently; see :func:`dicom_series_files`).
        max_bytes: the reading budget: a file (or series) whose header declares more decoded bytes is refused before
            anything is decompressed or allocated. None (default): a quarter of the memory available when reading
            (see :func:`~monai_patcher.data.readers.budget.check_decoded_size`).
        kwargs: ignored; accepted so that ``LoadImage(reader=..., **kwargs)`` meant for another reader
            does not fail.

    Every file is validated before ITK reads it (ITK trusts headers: a lying one crashed it or made it return
    uninitialised memory): NIfTI, MetaImage, NRRD and DICOM headers are checked field by field, against the file's
    size (compressed data: decompressed in chunks up to the declared size only) and against ``max_bytes``
    (:mod:`~monai_patcher.data.readers.nifti_header`, :mod:`~monai_patcher.data.readers.metaimage_header`,
    :mod:`~monai_patcher.data.readers.dicom_header`); other formats are refused.

    Raises:
        DataError: (from ``get_data``: ``read`` only notes the paths) missing file, unsupported format, a header
            field that is invalid or contradicts the data, unreadable/truncated file, over budget, DICOM folder without
            images, multi-frame DICOM without geometry, DICOM series with gaps in its slice positions or without
            positions, channels with different shapes or affines. The message names the file.
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        series_uid: str | None = None,
        affine_lps_to_ras: bool = True,
        reverse_indexing: bool = False,
        allow_slice_gaps: bool = False,
        b_value: float | None = None,
        allow_missing_geometry: bool = False,
        max_bytes: int | None = None,
        **kwargs,
    ):
        super().__init__()
        self.allow_missing_geometry = allow_missing_geometry
        self.max_bytes = max_bytes
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.series_uid = series_uid
        self.allow_slice_gaps = allow_slice_gaps
        self.b_value = b_value
        self.affine_lps_to_ras = affine_lps_to_ras
        self.reverse_indexing = reverse_indexing
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True if every name is a folder (DICOM series), has a supported suffix, or is a DICOM file.

        Args:
            filename: file name or a sequence of file names.
        """
        return all(
            Path(name).is_dir() or suffix_of(name, READER_FORMATS) is not None or is_dicom_file(name)
            for name in ensure_tuple(filename)
        )

    def read(self, data, **kwargs):
        """Note what to read; the pixels are read (and checked) by :meth:`get_data`.

        Like ``NibabelReader`` (whose ``nib.load`` only parses the header), reading is deferred: this
        returns a light handle per path and never raises, so that when ``LoadImage`` is given this reader,
        a bad file produces this reader's clear :class:`DataError` from ``get_data`` instead of a pile of
        tracebacks from MONAI's other readers trying the same file. Use :meth:`read_image` to get a
        ``SimpleITK.Image`` directly.

        Args:
            data: a path, a DICOM series folder, or a sequence of them (stacked as channels by ``get_data``).
            kwargs: ``series_uid`` overrides the constructor's value for this call.
        """
        names = ensure_tuple(data)
        series_uid = kwargs.get("series_uid", self.series_uid)
        handles = [_Pending(os.fspath(n), series_uid) for n in names]
        return handles if len(names) > 1 else handles[0]

    def read_image(self, path, series_uid: str | None = None) -> sitk.Image:
        """Read one file or DICOM series folder now and return the ``SimpleITK.Image``.

        Args:
            path: a file or a DICOM series folder.
            series_uid: the series to read from a folder holding several (default: the constructor's value).

        Raises:
            DataError: missing file, empty/truncated/corrupt file, unknown format, DICOM folder without
                images, multi-frame DICOM without geometry. The message names the file.
        """
        return self._read_one(os.fspath(path), series_uid or self.series_uid)

    def _read_one(self, name: str, series_uid: str | None) -> sitk.Image:
        path = Path(name)
        if not path.exists():
            raise DataError.for_file(name, "file or folder does not exist")
        if path.is_dir():
            files, uid = dicom_series_files(
                name, series_uid, self.allow_slice_gaps, self.b_value, self.allow_missing_geometry, self.max_bytes
            )
            try:
                if len(files) == 1:
                    img = sitk.ReadImage(files[0])
                else:
                    reader = sitk.ImageSeriesReader()
                    reader.SetFileNames(files)
                    reader.MetaDataDictionaryArrayUpdateOn()  # public tags only, as ITKReader (private
                    # ones, e.g. Siemens' ~100 kB CSA headers, would travel with every slice; read_header reads them)
                    img = reader.Execute()
                    for key in reader.GetMetaDataKeys(0):  # the first slice's tags, as MONAI's ITKReader gives
                        try:
                            img.SetMetaData(key, reader.GetMetaData(0, key))
                        except (RuntimeError, TypeError, UnicodeDecodeError):  # a key or value that is not text
                            continue
            except RuntimeError as e:
                raise DataError.for_file(name, f"cannot read DICOM series {uid}: {itk_error_message(e)}") from None
            img.SetMetaData("series_uid", uid)
            img.SetMetaData("num_files", str(len(files)))
            check_itk_geometry(name, img, read_dicom_info(files[0]))
            return img
        if path.stat().st_size == 0:
            raise DataError.for_file(name, "file is empty (0 bytes)")
        # before ITK sees the file; a NIfTI file is read once here, kept for the steps below
        checked = _validate_file(name, self.max_bytes, self.allow_missing_geometry)
        nifti = checked if isinstance(checked, NiftiFile) else None
        try:
            header = read_header(name)
        except RuntimeError as e:
            if "orthonormal" in str(e):
                raise DataError.for_file(
                    name, "sheared affine (axes not orthogonal): a SimpleITK image cannot hold it "
                    f"({itk_error_message(e)}); read it with monai.data.NibabelReader or resample it first"
                ) from None
            raise DataError.for_file(
                name, f"not a readable image (truncated, corrupt or unsupported format): {itk_error_message(e)}"
            ) from None
        check_multiframe_geometry(name, header)
        img = image_from_memory(nifti, header) if nifti is not None else None
        if img is None:
            try:
                img = sitk.ReadImage(name)
            except RuntimeError as e:
                short = metaimage_shortfall(name, header)
                if short:
                    raise DataError.for_file(name, f"truncated MetaImage file: {short}") from None
                raise DataError.for_file(
                    name, f"cannot read the image data (truncated or corrupt file?): {itk_error_message(e)}"
                ) from None
            img = restore_nonfinite(name, img, nifti)
        if isinstance(checked, DicomInfo):
            check_itk_geometry(name, img, checked)
        return match_nibabel_geometry(name, img, nifti)

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """Array and metadata of an image read by :meth:`read`, stacked as channels if several.

        Args:
            img: a ``SimpleITK.Image`` or a sequence of them.

        Returns:
            ``(array, meta)``: the array in MONAI axis order; ``meta`` with ``affine``, ``original_affine``,
            ``spatial_shape``, ``spacing``, ``space`` (``"RAS"`` unless ``affine_lps_to_ras=False``),
            ``original_channel_dim`` and the image's own metadata entries (DICOM tags, NIfTI header fields).

        Raises:
            DataError: images to be stacked as channels differ in shape or affine.
        """
        images = [img] if isinstance(img, (sitk.Image, _Pending)) else list(img)
        names = [i.path if isinstance(i, _Pending) else f"channel {k}" for k, i in enumerate(images)]
        images = [self._read_one(i.path, i.series_uid) if isinstance(i, _Pending) else i for i in images]
        arrays, metas = [], []
        for im in images:
            arr, meta = self._one(im)
            arrays.append(arr)
            metas.append(meta)
        meta0 = metas[0]
        for i, m in enumerate(metas[1:], start=1):
            if not np.array_equal(m[MetaKeys.SPATIAL_SHAPE], meta0[MetaKeys.SPATIAL_SHAPE]) or (
                arrays[i].shape != arrays[0].shape
            ):
                raise DataError.for_file(
                    names[i], f"channel {i} has shape {tuple(arrays[i].shape)}, channel 0 ({names[0]}) has "
                    f"{tuple(arrays[0].shape)}: images stacked as channels must have the same shape"
                )
            if not np.allclose(m[MetaKeys.AFFINE], meta0[MetaKeys.AFFINE], atol=1e-3):
                raise DataError.for_file(
                    names[i], f"channel {i} has affine {np.round(m[MetaKeys.AFFINE], 4).tolist()}, channel 0 "
                    f"({names[0]}) has {np.round(meta0[MetaKeys.AFFINE], 4).tolist()}: images stacked as channels "
                    "must share one grid (resample them first)"
                )
        if len(arrays) == 1:
            return arrays[0], meta0
        if np.isnan(float(meta0[MetaKeys.ORIGINAL_CHANNEL_DIM])):
            meta0[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
            return np.stack(arrays, axis=0), meta0
        return np.concatenate(arrays, axis=int(meta0[MetaKeys.ORIGINAL_CHANNEL_DIM])), meta0

    def _one(self, im: sitk.Image) -> tuple[np.ndarray, dict]:
        dim = im.GetDimension()
        ncomp = im.GetNumberOfComponentsPerPixel()
        sr = min(dim, 3)
        view = sitk.GetArrayViewFromImage(im)  # (t, z, y, x[, c]), valid while `im` lives
        if not self.reverse_indexing:
            view = view.T if ncomp == 1 else np.moveaxis(view.T, 0, -1)  # (x, y, z, t) or (x, y, z, c)
        arr = np.array(view, order="C", copy=True)  # one copy, never a view on the image
        direction = np.asarray(im.GetDirection(), dtype=float).reshape(dim, dim)[:sr, :sr]
        spacing = np.asarray(im.GetSpacing(), dtype=float)[:sr]
        origin = np.asarray(im.GetOrigin(), dtype=float)[:sr]
        affine = np.eye(sr + 1)
        affine[:sr, :sr] = direction @ np.diag(spacing)
        affine[:sr, -1] = origin
        if self.affine_lps_to_ras:
            affine = orientation_ras_lps(affine)
        meta: dict = {}
        for key in im.GetMetaDataKeys():
            if key.startswith("ITK_"):
                continue
            try:
                meta[key] = im.GetMetaData(key)
            except (RuntimeError, TypeError, UnicodeDecodeError):  # a key or value that is not text
                continue
        size = list(im.GetSize())
        meta["spacing"] = spacing
        meta[MetaKeys.ORIGINAL_AFFINE] = affine
        meta[MetaKeys.AFFINE] = affine.copy()
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(size[:sr])
        meta[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
        if self.channel_dim is None:
            if ncomp == 1 and dim <= 3:
                meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
            else:  # the 4th axis (t, z, y, x) comes first in SimpleITK's order; vector components last in both
                meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0 if (self.reverse_indexing and ncomp == 1) else -1
        else:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
        return arr, meta


def register_reader() -> None:
    """Make ``"reader": "SimpleITKReader"`` (any case) work in ``LoadImage``/``LoadImaged`` and bundle configs.

    MONAI resolves a reader given as a plain name by looking it up in
    ``monai.transforms.io.array.SUPPORTED_READERS``. This adds ``"simpleitkreader"`` there **at the front**
    of the dict: readers are auto-selected from the last entry to the first, so MONAI's own readers keep
    priority for ``LoadImage()`` without a reader, and this one is only used when asked for by name (or
    when no other reader claims a file, e.g. ``.mha`` without ``itk``). Called on ``import monai_patcher.data``;
    calling it again does nothing.
    """
    from monai.transforms.io.array import SUPPORTED_READERS

    if "simpleitkreader" in SUPPORTED_READERS:
        return
    items = list(SUPPORTED_READERS.items())
    SUPPORTED_READERS.clear()
    SUPPORTED_READERS["simpleitkreader"] = SimpleITKReader
    SUPPORTED_READERS.update(items)

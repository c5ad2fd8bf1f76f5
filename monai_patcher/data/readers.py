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

import contextlib
import gzip
import io
import logging
import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.data.utils import correct_nifti_header_if_necessary, orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from .errors import DataError

__all__ = ["SimpleITKReader", "register_reader", "dicom_series_files"]

logger = logging.getLogger(__name__)

#: file name endings this reader claims in ``verify_suffix`` (a folder is taken as a DICOM series).
SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm", ".dicom", ".ima")

_TAG_POSITION = "0020|0032"  # ImagePositionPatient
_TAG_ORIENTATION = "0020|0037"  # ImageOrientationPatient
_TAG_INSTANCE = "0020|0013"  # InstanceNumber
_TAG_FRAMES = "0028|0008"  # NumberOfFrames
_TAG_NAMES = {_TAG_POSITION: "ImagePositionPatient", _TAG_ORIENTATION: "ImageOrientationPatient",
              _TAG_INSTANCE: "InstanceNumber", _TAG_FRAMES: "NumberOfFrames"}  # fmt: skip
# diffusion b-value tags, standard first (read by _b_value in this order)
_B_VALUE_TAGS = {
    "0018|9087": "DiffusionBValue",
    "0019|100c": "Siemens b-value (0019,100C)",
    "2001|1003": "Philips b-value (2001,1003)",
    "0043|1039": "GE b-value (0043,1039)",
}
# tags that tell apart several volumes stored in one series (named in the error message when slices coincide)
_VOLUME_TAGS = {
    **_B_VALUE_TAGS,
    "0018|0081": "EchoTime",
    "0018|0086": "EchoNumbers",
    "0020|0100": "TemporalPositionIdentifier",
    "0020|0012": "AcquisitionNumber",
    "0008|0008": "ImageType",
}


def _b_value(tags: dict[str, str]) -> float | None:
    """The diffusion b-value of a DICOM slice from its standard or vendor tag (None: no b-value tag)."""
    for tag in _B_VALUE_TAGS:
        text = tags.get(tag, "").strip()
        if not text:
            continue
        try:
            value = float(text.split("\\")[0])
        except ValueError:
            continue
        return value % 1e9 if tag == "0043|1039" else value  # GE may add 10^9 to flag the b-value
    return None


# SOP classes of DICOM objects that hold no image (reports, presentation states, documents, RT plans, ...): found
# next to the slices in exported series folders, GDCM lists them in no series. Families (every class under the prefix):
_NON_IMAGE_SOP_FAMILIES = {
    "1.2.840.10008.5.1.4.1.1.88": "structured report or key object selection",
    "1.2.840.10008.5.1.4.1.1.11": "presentation state",
    "1.2.840.10008.5.1.4.1.1.104": "encapsulated document (PDF, CDA, STL, ...)",
    "1.2.840.10008.5.1.4.1.1.9": "waveform",
}
# ... and single classes (RT Image .481.1, RT Dose .481.2 and Segmentation .66.4 are images: not listed)
_NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.4": "RT beams treatment record",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT plan",
    "1.2.840.10008.5.1.4.1.1.481.6": "RT brachy treatment record",
    "1.2.840.10008.5.1.4.1.1.481.7": "RT treatment summary record",
    "1.2.840.10008.5.1.4.1.1.481.8": "RT ion plan",
    "1.2.840.10008.5.1.4.1.1.481.9": "RT ion beams treatment record",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.66.1": "spatial registration",
    "1.2.840.10008.5.1.4.1.1.66.2": "spatial fiducials",
    "1.2.840.10008.5.1.4.1.1.66.3": "deformable spatial registration",
    "1.2.840.10008.5.1.4.1.1.66.5": "surface segmentation",
    "1.2.840.10008.5.1.4.1.1.67": "real world value mapping",
    "1.2.840.10008.5.1.4.1.1.4.2": "MR spectroscopy",
    "1.3.12.2.1107.5.9.1": "Siemens CSA non-image",
}
# file meta elements with a 4-byte length (explicit VR little endian, PS3.5 7.1.2)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _media_sop_class(path: Path) -> str | None:
    """The SOP Class UID of a DICOM part-10 file, from its file meta group (MediaStorageSOPClassUID (0002,0002),
    which the standard requires to equal SOPClassUID (0008,0016)); None if the file has no readable file meta."""
    try:
        with open(path, "rb") as f:
            head = f.read(132 + 8192)
    except OSError:
        return None
    if head[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            return None
        if head[pos + 4 : pos + 6] in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            length, pos = struct.unpack_from("<I", head, pos + 8)[0], pos + 12
        else:
            length, pos = struct.unpack_from("<H", head, pos + 6)[0], pos + 8
        if element == 0x0002:
            value = head[pos : pos + length]
            return value.rstrip(b"\x00 ").decode("ascii", "replace") if len(value) == length else None
        pos += length
    return None


def _non_image_kind(sop_class: str | None) -> str | None:
    """What a non-image SOP class is (e.g. ``"RT plan"``); None for image classes, unknown ones and None."""
    if not sop_class:
        return None
    if sop_class in _NON_IMAGE_SOP_CLASSES:
        return _NON_IMAGE_SOP_CLASSES[sop_class]
    for prefix, kind in _NON_IMAGE_SOP_FAMILIES.items():
        if sop_class.startswith(prefix + "."):
            return kind
    return None


def _is_dicom_file(path: Path) -> bool:
    """True if ``path`` has the DICOM part-10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


# ITK appends "Reason: " + strerror(errno) to some read errors, with an errno left over from an unrelated call
# (a truncated .mha is refused with "Reason: No such file or directory"): such lines say nothing about the file
_OS_REASONS = {f"reason: {os.strerror(n)}".lower() for n in range(1, 134)}
_ITK_ERROR_PREFIX = re.compile(r"^ITK ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*")


def _sitk_message(err: Exception) -> str:
    """The useful line of a SimpleITK/ITK exception message (they are long and multi-line)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    lines = [ln for ln in lines if ln.lower().rstrip(".") not in _OS_REASONS]
    return _ITK_ERROR_PREFIX.sub("", lines[-1]) if lines else type(err).__name__


def _metaimage_shortfall(path: str, header: sitk.ImageFileReader) -> str | None:
    """Why a MetaImage file (``.mha``, or ``.mhd`` with ``ElementDataFile = LOCAL``) whose voxels ITK could not read
    is short of bytes: ``"N bytes expected ..., only M present"``; None if it is not (or this cannot tell)."""
    if not path.lower().endswith((".mha", ".mhd")):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        total = os.path.getsize(path)
        fields, end = {}, 0
        for line in head.splitlines(keepends=True):
            end += len(line)
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                break
        else:
            return None
        if fields["elementdatafile"].upper() != "LOCAL":
            return None
        present = total - end
        if fields.get("compresseddata", "false").lower() == "true":
            if "compresseddatasize" not in fields:
                return None
            expected, what = int(fields["compresseddatasize"]), "compressed voxel data"
        else:
            pixel = sitk.Image([1, 1], header.GetPixelID(), header.GetNumberOfComponents())
            expected = int(np.prod(header.GetSize())) * sitk.GetArrayViewFromImage(pixel).nbytes
            what = "voxel data"
    except (OSError, KeyError, ValueError, RuntimeError):
        return None
    if present >= expected:
        return None
    return f"{expected} bytes of {what} expected after the {end}-byte header, only {present} present"


def _header(path: str) -> sitk.ImageFileReader:
    """Read the header (no pixels) of one file; DICOM private tags included (the vendors' b-value tags)."""
    r = sitk.ImageFileReader()
    r.SetFileName(path)
    r.LoadPrivateTagsOn()
    r.ReadImageInformation()
    return r


def _tag_numbers(header: sitk.ImageFileReader, tag: str, count: int, path: str) -> np.ndarray | None:
    """The ``count`` numbers of a DICOM tag (backslash-separated); None if the tag is absent or empty (type-2 tags
    may be present without a value).

    Raises:
        DataError: the value is not ``count`` numbers; the message names the file, the tag and the value.
    """
    if not header.HasMetaDataKey(tag):
        return None
    text = header.GetMetaData(tag).strip().strip("\x00").strip()
    if not text:
        return None
    try:
        values = np.asarray([float(v) for v in text.split("\\")], dtype=float)
    except ValueError:
        values = None
    if values is None or values.size != count or not np.isfinite(values).all():
        raise DataError.for_file(
            path, f"cannot parse {_TAG_NAMES.get(tag, tag)} ({tag.replace('|', ',')}) = {text!r}: "
            f"{count} number{'s' if count > 1 else ''} expected"
        )
    return values


def dicom_series_files(
    folder, series_uid: str | None = None, allow_slice_gaps: bool = False, b_value: float | None = None
) -> tuple[list[str], str]:
    """The files of one DICOM series in ``folder``, sorted by geometry.

    Slices are ordered by ``ImagePositionPatient`` projected on the slice normal (the cross product of
    the two ``ImageOrientationPatient`` direction cosines), ascending, never by ``InstanceNumber``
    (which scanners number in either direction). Only when a slice has no position does it fall back
    to ``InstanceNumber`` (with a warning).

    A volume has one slice step: SimpleITK stacks the slices with the mean step. A step more than 1.5 times
    the smallest one is a gap, most often a slice file missing from the folder (an interrupted export or copy),
    and stacking across it would put every slice after it at the wrong position, so it is refused unless
    ``allow_slice_gaps``. Smaller irregularities are logged.

    Args:
        folder: a folder holding DICOM files (not searched recursively).
        series_uid: the ``SeriesInstanceUID`` to read. If None and the folder holds several series,
            the one with the most slices is chosen and the choice is logged.
        allow_slice_gaps: read a series with gaps anyway (with a warning); its slice positions are then
            approximate (evenly spread between the first and the last slice).
        b_value: in a series holding images of several diffusion b-values (e.g. a DWI series with its b = 0 and
            b = 1000 images at the same positions), read those of this b-value (from ``DiffusionBValue`` or the
            Siemens, GE or Philips b-value tag). Ignored for series of one b-value or none (an ADC map, a T1).

    Returns:
        ``(sorted_file_names, series_uid)``.

    Raises:
        DataError: no DICOM series in the folder, unknown ``series_uid``, mixed orientations,
            several slices at one position (several volumes in one series), a gap in the slice positions, or
            a ``b_value`` the series does not hold.

    Example:
        >>> files, uid = dicom_series_files("/data/patient1/dwi_series")  # doctest: +SKIP
    """
    folder = os.fspath(folder)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM prints "No Series were found" to stderr
    try:
        uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
        listed = {u: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, u)) for u in uids}
    except RuntimeError as e:  # GDCM throws on some corrupt files while scanning the folder
        raise DataError.for_file(folder, f"cannot scan the DICOM files of this folder (corrupt file?): {_sitk_message(e)}") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if not uids:
        raise DataError.for_file(folder, "no DICOM images found in this folder (is it the right folder?)")
    # GDCM silently leaves out files it cannot parse (a truncated or corrupt slice): the series would be read
    # without them. Refuse DICOM-looking files (.dcm/.dicom/.ima or the DICM preamble) that are in no series.
    # Valid non-image objects (reports, presentation states, PDFs, RT plans...) are in no series either: skipped.
    in_series = {os.path.basename(f) for fs in listed.values() for f in fs}
    unlisted, skipped = [], []
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file() or p.name in in_series or p.name.upper() == "DICOMDIR":
            continue
        if not (p.suffix.lower() in (".dcm", ".dicom", ".ima") or _is_dicom_file(p)):
            continue
        kind = _non_image_kind(_media_sop_class(p))
        if kind:
            skipped.append(f"{p.name} ({kind})")
        else:
            unlisted.append(p.name)
    if skipped:
        logger.info("%s: skipping %d non-image DICOM object(s): %s", folder, len(skipped), ", ".join(skipped))
    if unlisted:
        raise DataError.for_file(
            folder, f"{len(unlisted)} DICOM file(s) belong to no readable series (empty, truncated or corrupt?): "
            f"{unlisted[:5]}{' ...' if len(unlisted) > 5 else ''}"
        )
    counts = {u: len(listed[u]) for u in uids}
    if series_uid:
        if series_uid not in counts:
            raise DataError.for_file(
                folder, f"no DICOM series with SeriesInstanceUID {series_uid!r}; the folder holds {counts}"
            )
        uid = series_uid
    else:
        uid = max(uids, key=lambda u: counts[u])
        if len(uids) > 1:
            logger.info(
                "%s holds %d DICOM series %s; reading %s (the one with the most slices). Pass series_uid to choose.",
                folder, len(uids), counts, uid,
            )
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
    if len(files) <= 1:
        return files, uid
    positions, orientations, instances, volume_tags = [], [], [], []
    for f in files:
        try:
            h = _header(f)
        except RuntimeError as e:
            raise DataError.for_file(f, f"unreadable DICOM file in series {uid}: {_sitk_message(e)}") from None
        keys = set(h.GetMetaDataKeys())
        positions.append(_tag_numbers(h, _TAG_POSITION, 3, f))
        orientations.append(_tag_numbers(h, _TAG_ORIENTATION, 6, f))
        instance = _tag_numbers(h, _TAG_INSTANCE, 1, f)
        instances.append(0 if instance is None else int(instance[0]))
        volume_tags.append({t: h.GetMetaData(t).strip() for t in _VOLUME_TAGS if t in keys})
    b_values = [_b_value(t) for t in volume_tags]
    held = sorted({round(b, 3) for b in b_values if b is not None})
    if b_value is not None and len(held) > 1:
        keep = [i for i, b in enumerate(b_values) if b is not None and abs(b - b_value) < 0.5]
        if not keep:
            raise DataError.for_file(
                folder, f"series {uid} holds images of the b-values {[f'{b:g}' for b in held]}, none of b = {b_value:g}"
            )
        logger.info("%s: series %s holds the b-values %s; reading the %d images of b = %g",
                    folder, uid, [f"{b:g}" for b in held], len(keep), b_value)  # fmt: skip
        files, positions, orientations, instances, volume_tags = (
            [seq[i] for i in keep] for seq in (files, positions, orientations, instances, volume_tags)
        )
        if len(files) <= 1:
            return files, uid
    unplaced = [f for f, p, o in zip(files, positions, orientations) if p is None or o is None]
    if len(unplaced) == len(files):
        logger.warning("%s: the slices have no ImagePositionPatient/Orientation; ordering by InstanceNumber", folder)
        order = np.argsort(instances, kind="stable")
        return [files[i] for i in order], uid
    if unplaced:  # ITK would stack them at made-up positions (the others' geometry shifted silently)
        names = [os.path.basename(f) for f in unplaced]
        raise DataError.for_file(
            folder, f"series {uid}: {len(unplaced)} of its {len(files)} slices have no (or an empty) "
            f"ImagePositionPatient/ImageOrientationPatient, so their positions are unknown: {names[:5]}"
            f"{' ...' if len(names) > 5 else ''}"
        )
    o0 = orientations[0]
    for f, o in zip(files, orientations):
        if not np.allclose(o, o0, atol=1e-4):
            raise DataError.for_file(f, f"slice orientation {o.tolist()} differs from the series' {o0.tolist()}")
    normal = np.cross(o0[:3], o0[3:])
    dist = np.asarray([float(np.dot(p, normal)) for p in positions])
    order = np.argsort(dist, kind="stable")
    steps = np.diff(dist[order])
    if np.any(np.abs(steps) < 1e-4):
        values = {tag: {t.get(tag, "") for t in volume_tags} for tag in _VOLUME_TAGS}
        varying = [
            f"{name} {sorted(v or '(none)' for v in values[tag])}" for tag, name in _VOLUME_TAGS.items() if len(values[tag]) > 1
        ]  # fmt: skip
        hint = (
            f"pass b_value= one of {[f'{b:g}' for b in held]} to the reader to read one of them, or split them"
            if len(held) > 1 and b_value is None else "split them"
        )
        raise DataError.for_file(
            folder,
            f"series {uid} has several slices at the same position ({len(files)} files, "
            f"{len(np.unique(np.round(dist, 4)))} positions): it holds several volumes (echoes, time points or "
            "b-values; "
            + (f"these tags differ between its files: {'; '.join(varying)}" if varying else "no tag tells them apart")
            + f"); {hint} into separate folders, one volume each",
        )
    # the smallest step is the regular one (a median would miss the gap of a 3-slice series)
    gaps = np.flatnonzero(steps > 1.5 * steps.min()) if steps.size else steps
    if gaps.size:
        z = dist[order]
        where = ", ".join(f"{z[i]:.2f} -> {z[i + 1]:.2f} mm" for i in gaps[:5]) + (" ..." if gaps.size > 5 else "")
        msg = (
            f"series {uid} has gaps in its slice positions ({len(files)} files; step {steps.min():.3g} mm, "
            f"but {where}): slice files missing from the folder? Stacked as one volume, the slices after a gap "
            "would be placed at wrong positions"
        )
        if not allow_slice_gaps:
            raise DataError.for_file(folder, msg + "; pass allow_slice_gaps=True to the reader to read it anyway")
        logger.warning("%s: %s; read anyway (allow_slice_gaps), with the mean step", folder, msg)
    elif steps.size and not np.allclose(steps, steps.mean(), rtol=1e-2, atol=1e-2):
        logger.warning("%s: non-uniform slice spacing %s mm; the mean step is used", folder, np.round(steps, 3))
    return [files[i] for i in order], uid


def _check_multiframe_geometry(path: str, header: sitk.ImageFileReader) -> None:
    """Refuse multi-frame DICOM files that carry no frame positions (their geometry would be made up)."""
    keys = set(header.GetMetaDataKeys())
    frames = _tag_numbers(header, _TAG_FRAMES, 1, path)
    frames = 1 if frames is None else int(frames[0])
    if frames <= 1 or _TAG_POSITION in keys:
        return
    with open(path, "rb") as f:
        raw = f.read()
    raw = raw.split(b"\xe0\x7f\x10\x00", 1)[0]  # everything before PixelData (7FE0,0010), little endian
    # PlanePositionSequence (0020,9113) inside the (shared or per-frame) functional groups
    if b"\x20\x00\x13\x91" not in raw:
        raise DataError.for_file(
            path,
            f"multi-frame DICOM ({frames} frames) without ImagePositionPatient or PlanePositionSequence: "
            "its geometry (spacing, orientation, slice positions) is unknown, so it cannot be read as a volume",
        )


def _restore_nifti_nonfinite(path: str, img: sitk.Image, nifti: _Nifti | None) -> sitk.Image:
    """Put back the NaN/Inf voxels of a floating-point NIfTI file read by ITK.

    ITK's NIfTI reader silently replaces NaN and Inf voxels by 0, which would hide broken input from the
    checks downstream (``CheckVolumed``). For float NIfTI files the voxels already in memory (``nifti``, from
    ``_check_complete``) are checked; if any is not finite, the image's pixels are replaced by nibabel's (same
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
        dst.SetMetaData(key, src.GetMetaData(key))


def _corner_distance(a: np.ndarray, b: np.ndarray, size) -> float:
    """The largest distance (mm) between where two affines put the corners of a grid of ``size`` voxels."""
    corners = np.array(np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in size[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((a @ corners - b @ corners)[:3], axis=0).max())


def _match_nibabel_geometry(path: str, img: sitk.Image, nifti: _Nifti | None) -> sitk.Image:
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


class _Pending:
    """A path noted by ``SimpleITKReader.read``, read by ``get_data``."""

    __slots__ = ("path", "series_uid")

    def __init__(self, path: str, series_uid: str | None):
        self.path, self.series_uid = path, series_uid

    def __repr__(self) -> str:
        return f"_Pending({self.path!r})"


# numpy (native byte order) -> SimpleITK scalar pixel types, for NIfTI voxels decoded from memory
_SITK_PIXEL = {
    np.dtype(np.uint8): sitk.sitkUInt8, np.dtype(np.int8): sitk.sitkInt8,
    np.dtype(np.uint16): sitk.sitkUInt16, np.dtype(np.int16): sitk.sitkInt16,
    np.dtype(np.uint32): sitk.sitkUInt32, np.dtype(np.int32): sitk.sitkInt32,
    np.dtype(np.uint64): sitk.sitkUInt64, np.dtype(np.int64): sitk.sitkInt64,
    np.dtype(np.float32): sitk.sitkFloat32, np.dtype(np.float64): sitk.sitkFloat64,
}  # fmt: skip


class _Nifti:
    """A NIfTI file read once: its whole (decompressed) bytes and nibabel's image parsed from them.

    ``_check_complete`` builds it; ``_nifti_from_memory``, ``_restore_nifti_nonfinite`` and
    ``_match_nibabel_geometry`` use it instead of reading (and decompressing) the file again.
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
        file does not hold them all (it was refused by ``_check_complete`` before this is used)."""
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


@contextlib.contextmanager
def _gzip_errors(path: str) -> Iterator[None]:
    """Turn a truncated or corrupt gzip stream met inside the block into a ``DataError`` naming ``path``."""
    try:
        yield
    except EOFError:
        raise DataError.for_file(path, "truncated gzip file (the compressed stream ends early)") from None
    except (OSError, zlib.error) as e:
        raise DataError.for_file(path, f"corrupt gzip file: {e}") from None


def _read_bytes(path: str) -> bytes:
    """The whole content of a file, decompressed once in memory if it is gzipped (``.gz``).

    Raises:
        DataError: truncated or corrupt gzip stream (checked to its end, CRC and length included).
    """
    with open(path, "rb") as f:
        data = f.read()
    if not path.lower().endswith(".gz"):
        return data
    with _gzip_errors(path):
        return gzip.decompress(data)


def _check_gzip_stream(path: str) -> None:
    """Decompress a ``.gz`` file to its end in 4 MiB chunks (flat memory), only to check it; ``DataError`` if bad."""
    with _gzip_errors(path), gzip.open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def _check_complete(path: str) -> _Nifti | None:
    """Raise if a (gzipped) file is truncated: SimpleITK zero-fills truncated NIfTI voxel data silently.

    The file is read (and decompressed) once; for a NIfTI file the bytes and nibabel's image parsed from them are
    returned, to be used instead of reading the file again. None for other files.
    """
    lower = path.lower()
    is_nifti = lower.endswith((".nii", ".nii.gz"))
    if not is_nifti:
        if lower.endswith(".gz"):  # ITK reads (and decompresses) the file itself: check the stream only
            _check_gzip_stream(path)
        return None
    data = _read_bytes(path)
    try:
        # NIfTI-2 headers are 540 bytes (sizeof_hdr, either byte order), NIfTI-1 348: parse the bytes in memory
        nifti2 = 540 in (int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big"))
        image = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(data)
        header = image.header
    except Exception as e:  # nibabel raises many types for bad headers
        raise DataError.for_file(path, f"invalid NIfTI header: {e}") from None
    # ITK takes the spacing from pixdim and silently uses 1 mm for a NaN/Inf/0 voxel size (nibabel's
    # load also "fixes" 0 to 1: read the raw header)
    shape = header.get_data_shape()
    raw = type(header).from_fileobj(io.BytesIO(data), check=False)
    for i, (size, zoom) in enumerate(zip(shape[:3], np.asarray(raw["pixdim"][1:4], dtype=float)), start=1):
        if not np.isfinite(zoom) or (zoom == 0 and size > 1):
            raise DataError.for_file(path, f"invalid NIfTI header: voxel size pixdim[{i}] = {zoom} (must be finite, non-zero)")
    # a single-file NIfTI's voxels start at vox_offset, at least after the header (352 bytes NIfTI-1, 544 NIfTI-2) and
    # its extensions (nibabel's image.header says vox_offset 0: where nibabel reads them is image.dataobj.offset)
    offset = max(int(image.dataobj.offset), int(getattr(header, "single_vox_offset", 0)))
    expected = offset + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    if len(data) < expected:
        raise DataError.for_file(
            path, f"truncated NIfTI file: {expected} bytes expected (header + voxels), only {len(data)} present"
        )
    return _Nifti(data, image, raw)


def _nifti_from_memory(nifti: _Nifti, header: sitk.ImageFileReader) -> sitk.Image | None:
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
        kwargs: ignored; accepted so that ``LoadImage(reader=..., **kwargs)`` meant for another reader
            does not fail.

    Raises:
        DataError: (from ``get_data``: ``read`` only notes the paths) missing file, unreadable/truncated file,
            DICOM folder without images, multi-frame DICOM without geometry, DICOM series with gaps in its slice
            positions, channels with different shapes or affines.
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        series_uid: str | None = None,
        affine_lps_to_ras: bool = True,
        reverse_indexing: bool = False,
        allow_slice_gaps: bool = False,
        b_value: float | None = None,
        **kwargs,
    ):
        super().__init__()
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
        for name in ensure_tuple(filename):
            p = Path(name)
            n = p.name.lower()
            if p.is_dir() or any(n.endswith(s) for s in SUFFIXES):
                continue
            if p.is_file() and _is_dicom_file(p):
                continue
            return False
        return True

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
            files, uid = dicom_series_files(name, series_uid, self.allow_slice_gaps, self.b_value)
            try:
                if len(files) == 1:
                    img = sitk.ReadImage(files[0])
                else:
                    reader = sitk.ImageSeriesReader()
                    reader.SetFileNames(files)
                    reader.MetaDataDictionaryArrayUpdateOn()  # public tags only, as ITKReader (private
                    # ones, e.g. Siemens' ~100 kB CSA headers, would travel with every slice; _header reads them)
                    img = reader.Execute()
                    for key in reader.GetMetaDataKeys(0):  # the first slice's tags, as MONAI's ITKReader gives
                        try:
                            img.SetMetaData(key, reader.GetMetaData(0, key))
                        except (RuntimeError, UnicodeDecodeError):
                            continue
            except RuntimeError as e:
                raise DataError.for_file(name, f"cannot read DICOM series {uid}: {_sitk_message(e)}") from None
            img.SetMetaData("series_uid", uid)
            img.SetMetaData("num_files", str(len(files)))
            return img
        if path.stat().st_size == 0:
            raise DataError.for_file(name, "file is empty (0 bytes)")
        try:
            header = _header(name)
        except RuntimeError as e:
            if "orthonormal" in str(e):
                raise DataError.for_file(
                    name, "sheared affine (axes not orthogonal): a SimpleITK image cannot hold it "
                    f"({_sitk_message(e)}); read it with monai.data.NibabelReader or resample it first"
                ) from None
            raise DataError.for_file(
                name, f"not a readable image (truncated, corrupt or unsupported format): {_sitk_message(e)}"
            ) from None
        if _TAG_FRAMES in header.GetMetaDataKeys() or _is_dicom_file(path):
            _check_multiframe_geometry(name, header)
        nifti = _check_complete(name)  # the file read (and decompressed) once; kept for a NIfTI file
        img = _nifti_from_memory(nifti, header) if nifti is not None else None
        if img is None:
            try:
                img = sitk.ReadImage(name)
            except RuntimeError as e:
                short = _metaimage_shortfall(name, header)
                if short:
                    raise DataError.for_file(name, f"truncated MetaImage file: {short}") from None
                raise DataError.for_file(
                    name, f"cannot read the image data (truncated or corrupt file?): {_sitk_message(e)}"
                ) from None
            img = _restore_nifti_nonfinite(name, img, nifti)
        return _match_nibabel_geometry(name, img, nifti)

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
            except (RuntimeError, UnicodeDecodeError):
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

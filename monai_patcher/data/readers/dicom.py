"""DICOM: finding, ordering and checking the slices of a series, and telling DICOM files from others.

- :func:`dicom_series_files`: the files of one series of a folder, ordered by their geometry (never by
  ``InstanceNumber``), with the checks that keep a volume's geometry true (gaps, several volumes in one series,
  unreadable slices, one diffusion b-value out of several);
- :func:`is_dicom_file` / :func:`holds_dicom_files`: DICOM sniffing by name or by the part-10 preamble;
- :func:`check_multiframe_geometry`: refuse enhanced multi-frame files whose frames carry no position;
- :func:`check_dicom_image`, :func:`validated_dicom_files`, :func:`check_itk_geometry`: what GDCM would read wrongly
  (MONOCHROME1, made-up geometry), refused before it reads, and what it read checked against the file's own tags.

Tags are read with SimpleITK (GDCM) and, before GDCM sees a file, by this package's own data set walk
(:mod:`.dicom_header`): no pydicom needed.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import DataError
from .dicom_header import DicomInfo, check_dicom_file, check_dicom_info, check_dicom_series, read_dicom_info
from .itk import itk_error_message, read_header
from .suffixes import suffix_of

__all__ = [
    "dicom_series_files",
    "is_dicom_file",
    "holds_dicom_files",
    "check_multiframe_geometry",
    "b_value_of",
    "check_dicom_image",
    "validated_dicom_files",
    "check_itk_geometry",
]

logger = logging.getLogger(__name__)


_TAG_POSITION = "0020|0032"  # ImagePositionPatient
_TAG_ORIENTATION = "0020|0037"  # ImageOrientationPatient
_TAG_INSTANCE = "0020|0013"  # InstanceNumber
_TAG_FRAMES = "0028|0008"  # NumberOfFrames
_TAG_NAMES = {_TAG_POSITION: "ImagePositionPatient", _TAG_ORIENTATION: "ImageOrientationPatient",
              _TAG_INSTANCE: "InstanceNumber", _TAG_FRAMES: "NumberOfFrames"}  # fmt: skip
# diffusion b-value tags, standard first (read by b_value_of in this order)
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



def b_value_of(tags: dict[str, str]) -> float | None:
    """The diffusion b-value of a DICOM slice from its standard or vendor tag (None: no b-value tag).

    Args:
        tags: the slice's tags, ``{"gggg|eeee": value}`` as SimpleITK names them.

    Example:
        >>> b_value_of({"0019|100c": "1000 "}), b_value_of({"0043|1039": "1000000800\\\\8\\\\0\\\\0"})
        (1000.0, 800.0)
    """
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



def is_dicom_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file named like DICOM (``.dcm``, ``.dicom``, ``.ima``) or starting with the DICOM
    part-10 preamble (``DICM`` at byte 128, whatever its name: scanners often write files without a suffix)."""
    p = Path(path)
    if suffix_of(p.name, "dicom") is not None:
        return p.is_file()
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def holds_dicom_files(folder: str | os.PathLike, look_at: int = 50) -> bool:
    """True if one of the first ``look_at`` files (in name order) of ``folder`` is a DICOM file (:func:`is_dicom_file`)."""
    entries = sorted(Path(folder).iterdir())[:look_at]
    return any(p.is_file() and is_dicom_file(p) for p in entries)


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


def _check_stored_values(name: str, info: DicomInfo) -> None:
    """Refuse what ITK would not read as stored: MONOCHROME1 (display-inverted grayscale), which GDCM inverts."""
    if info.get("PhotometricInterpretation") == "MONOCHROME1":
        raise DataError.for_file(
            name, "PhotometricInterpretation MONOCHROME1 (inverted grayscale, an X-ray display convention): ITK would "
            "invert the stored values; volumes are read as stored (MONOCHROME2)"
        )


def _check_geometry_present(name: str, info: DicomInfo, allow_missing_geometry: bool) -> None:
    """A single-frame DICOM image read alone needs its position, orientation and pixel spacing (a multi-frame one:
    see :func:`check_multiframe_geometry`), unless ``allow_missing_geometry``: ITK would make them up (the origin,
    1 mm)."""
    if allow_missing_geometry or info.frames != 1:
        return
    missing = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if info.get(t) is None]
    if missing:
        raise DataError.for_file(
            name, f"DICOM image without {', '.join(missing)}: its geometry is unknown (ITK would place it at the origin "
            "with 1 mm voxels); pass allow_missing_geometry=True to the reader to read it anyway"
        )


def check_dicom_image(name: str, max_bytes: int | None = None, allow_missing_geometry: bool = False) -> DicomInfo:
    """Validate one DICOM file read on its own, before GDCM sees it: its data set and pixel description
    (:func:`~monai_patcher.data.readers.dicom_header.check_dicom_file`, with the reading budget), stored values ITK
    would change (MONOCHROME1) and, unless ``allow_missing_geometry``, its position, orientation and pixel spacing.

    Returns:
        what its data set says (:class:`~monai_patcher.data.readers.dicom_header.DicomInfo`).

    Raises:
        DataError: naming the file and the problem.
    """
    info = check_dicom_file(name, max_bytes)
    _check_stored_values(name, info)
    _check_geometry_present(name, info, allow_missing_geometry)
    return info


def validated_dicom_files(folder: str) -> dict[str, DicomInfo]:
    """Walk every DICOM-looking file of a folder (not the non-image objects) before GDCM scans it: a file whose data
    set is broken makes the folder's series unreadable, one whose pixel description lies is refused by name.

    Returns:
        ``{file name: DicomInfo}``.

    Raises:
        DataError: files that belong to no readable series (named), a lying pixel description, MONOCHROME1.
    """
    infos, broken = {}, []
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file() or p.name.upper() == "DICOMDIR":
            continue
        if not is_dicom_file(p) or _non_image_kind(_media_sop_class(p)):
            continue
        try:
            info = read_dicom_info(p)
        except DataError as e:
            broken.append((p.name, str(e)))
            continue
        check_dicom_info(p, info)
        _check_stored_values(str(p), info)
        infos[p.name] = info
    if broken:
        names = [n for n, _ in broken]
        raise DataError.for_file(
            folder, f"{len(broken)} DICOM file(s) belong to no readable series (empty, truncated or corrupt?): "
            f"{names[:5]}{' ...' if len(names) > 5 else ''}; {broken[0][1]}"
        )
    return infos


def check_itk_geometry(name: str, img: sitk.Image, info: DicomInfo) -> None:
    """After ITK read a DICOM file (or a series starting with it): its origin, in-plane spacing and direction must be
    the file's ``ImagePositionPatient``, ``PixelSpacing`` and ``ImageOrientationPatient``. GDCM takes them by SOP
    class and can leave them out silently (1 mm, the origin); a safety net behind the validation.

    Raises:
        DataError: ITK's geometry is not the file's.
    """
    if info.frames != 1 or img.GetDimension() != 3:
        return
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    pairs = []
    if info.get("PixelSpacing") is not None:
        pairs.append(("spacing", img.GetSpacing()[:2], info.get("PixelSpacing")[::-1], "PixelSpacing (reversed)"))
    if info.get("ImagePositionPatient") is not None:
        pairs.append(("origin", img.GetOrigin(), info.get("ImagePositionPatient"), "ImagePositionPatient"))
    if info.get("ImageOrientationPatient") is not None:
        pairs.append(("direction", np.concatenate([direction[:, 0], direction[:, 1]]), info.get("ImageOrientationPatient"),
                      "ImageOrientationPatient"))  # fmt: skip
    for what, itk, stated, tag in pairs:
        if not np.allclose(np.asarray(itk, dtype=float), np.asarray(stated, dtype=float), rtol=1e-4, atol=1e-3):
            raise DataError.for_file(
                name, f"ITK read the {what} {np.round(itk, 4).tolist()}, but the file's {tag} is "
                f"{np.round(stated, 4).tolist()}: its geometry would be wrong, the file is not read"
            )


def dicom_series_files(
    folder,
    series_uid: str | None = None,
    allow_slice_gaps: bool = False,
    b_value: float | None = None,
    allow_missing_geometry: bool = False,
    max_bytes: int | None = None,
) -> tuple[list[str], str]:
    """The files of one DICOM series in ``folder``, sorted by geometry.

    Slices are ordered by ``ImagePositionPatient`` projected on the slice normal (the cross product of
    the two ``ImageOrientationPatient`` direction cosines), ascending, never by ``InstanceNumber``
    (which scanners number in either direction). Only when a slice has no position does it fall back
    to ``InstanceNumber``, and only with ``allow_missing_geometry`` (refused by default: without positions
    the slice spacing is unknown, and ITK would stack the slices 1 mm apart).

    Every DICOM file of the folder is checked before GDCM reads it (its data set walked, its pixel description
    checked against its pixel data: :mod:`~monai_patcher.data.readers.dicom_header`), and the slices of the series
    must share their pixel description (rows, columns, samples per pixel, bits allocated, ...) and fit ``max_bytes``.

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
        allow_missing_geometry: read a series whose slices have no ``ImagePositionPatient`` (ordered by
            ``InstanceNumber``, 1 mm apart) or no ``PixelSpacing`` (1 mm), or a single image without position,
            orientation or spacing, with a warning: the geometry is then made up.
        max_bytes: the reading budget for the whole series (see
            :func:`~monai_patcher.data.readers.budget.check_decoded_size`).

    Returns:
        ``(sorted_file_names, series_uid)``.

    Raises:
        DataError: no DICOM series in the folder, unknown ``series_uid``, a damaged or lying file, slices with different
            pixel descriptions, mixed orientations, several slices at one position (several volumes in one series),
            a gap in the slice positions, slices without positions, or a ``b_value`` the series does not hold.

    Example:
        >>> files, uid = dicom_series_files("/data/patient1/dwi_series")  # doctest: +SKIP
    """
    folder = os.fspath(folder)
    infos = validated_dicom_files(folder)
    files, uid = _series_files(folder, series_uid, allow_slice_gaps, b_value, allow_missing_geometry)
    chosen = {f: infos.get(os.path.basename(f)) or check_dicom_file(f, max_bytes) for f in files}
    check_dicom_series(folder, chosen, max_bytes)
    if len(files) == 1:
        _check_geometry_present(files[0], chosen[files[0]], allow_missing_geometry)
    elif not allow_missing_geometry:
        unspaced = [os.path.basename(f) for f, i in chosen.items() if i.get("PixelSpacing") is None]
        if unspaced:
            raise DataError.for_file(
                folder, f"series {uid}: {len(unspaced)} of its {len(files)} slices have no PixelSpacing, so the voxel "
                f"size is unknown (ITK would use 1 mm): {unspaced[:5]}; pass allow_missing_geometry=True to the "
                "reader to read it anyway"
            )
    return files, uid


def _series_files(
    folder: str, series_uid: str | None, allow_slice_gaps: bool, b_value: float | None, allow_missing_geometry: bool
) -> tuple[list[str], str]:
    """:func:`dicom_series_files` after its files were validated: GDCM's scan, the choice and the ordering."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM prints "No Series were found" to stderr
    try:
        uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
        listed = {u: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, u)) for u in uids}
    except RuntimeError as e:  # GDCM throws on some corrupt files while scanning the folder
        raise DataError.for_file(folder, f"cannot scan the DICOM files of this folder (corrupt file?): {itk_error_message(e)}") from None
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
        if not is_dicom_file(p):
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
            h = read_header(f)
        except RuntimeError as e:
            raise DataError.for_file(f, f"unreadable DICOM file in series {uid}: {itk_error_message(e)}") from None
        keys = set(h.GetMetaDataKeys())
        positions.append(_tag_numbers(h, _TAG_POSITION, 3, f))
        orientations.append(_tag_numbers(h, _TAG_ORIENTATION, 6, f))
        instance = _tag_numbers(h, _TAG_INSTANCE, 1, f)
        instances.append(0 if instance is None else int(instance[0]))
        volume_tags.append({t: h.GetMetaData(t).strip() for t in _VOLUME_TAGS if t in keys})
    b_values = [b_value_of(t) for t in volume_tags]
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
        if not allow_missing_geometry:
            raise DataError.for_file(
                folder, f"series {uid}: none of its {len(files)} slices has an ImagePositionPatient/"
                "ImageOrientationPatient, so the slice positions and spacing are unknown (ITK would stack them 1 mm "
                "apart); pass allow_missing_geometry=True to the reader to read it anyway, ordered by InstanceNumber"
            )
        logger.warning("%s: the slices have no ImagePositionPatient/Orientation; ordering by InstanceNumber, 1 mm "
                       "apart (allow_missing_geometry)", folder)  # fmt: skip
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


def check_multiframe_geometry(path: str, header: sitk.ImageFileReader) -> None:
    """Refuse a multi-frame DICOM file that carries no frame positions (its geometry would be made up).

    Does nothing for other files (no ``NumberOfFrames`` above 1 in ``header``).

    Raises:
        DataError: more than one frame, and neither ``ImagePositionPatient`` nor a ``PlanePositionSequence``.
    """
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

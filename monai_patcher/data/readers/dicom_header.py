"""DICOM validation before GDCM/ITK sees the file: the pixel description must match the pixel data.

GDCM trusts the pixel description: a file whose ``NumberOfFrames`` says 2 but whose ``PixelData`` holds one frame is
read with a second frame from outside the buffer, a series whose slices disagree on ``SamplesPerPixel`` or
``BitsAllocated`` is stacked anyway. :func:`read_dicom_info` walks the data set itself (explicit and implicit VR,
either byte order, deflated, nested sequences of defined or undefined length) to find the pixel description and
where ``PixelData`` is; :func:`check_dicom_info` checks them against each other (pure), and
:func:`check_dicom_series` checks a series' slices against each other. A file that lies is a
:class:`~monai_patcher.data.DataError` naming the file and the attribute.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import DataError
from .budget import check_decoded_size

__all__ = ["DicomInfo", "read_dicom_info", "check_dicom_info", "check_dicom_file", "check_dicom_series"]

#: the largest coordinate (mm) a position may have; beyond it the geometry is meaningless.
MAX_COORDINATE = 1e9

_PIXEL_DATA = (0x7FE0, 0x0010)
_ITEM, _ITEM_END, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
# the attributes read, by (group, element): name and kind of value
_WANTED = {
    (0x0002, 0x0010): ("TransferSyntaxUID", "text"),
    (0x0008, 0x0016): ("SOPClassUID", "text"),
    (0x0020, 0x000E): ("SeriesInstanceUID", "text"),
    (0x0020, 0x0032): ("ImagePositionPatient", "numbers"),
    (0x0020, 0x0037): ("ImageOrientationPatient", "numbers"),
    (0x0028, 0x0002): ("SamplesPerPixel", "us"),
    (0x0028, 0x0004): ("PhotometricInterpretation", "text"),
    (0x0028, 0x0006): ("PlanarConfiguration", "us"),
    (0x0028, 0x0008): ("NumberOfFrames", "numbers"),
    (0x0028, 0x0010): ("Rows", "us"),
    (0x0028, 0x0011): ("Columns", "us"),
    (0x0028, 0x0030): ("PixelSpacing", "numbers"),
    (0x0028, 0x0100): ("BitsAllocated", "us"),
    (0x0028, 0x0101): ("BitsStored", "us"),
    (0x0028, 0x0102): ("HighBit", "us"),
    (0x0028, 0x0103): ("PixelRepresentation", "us"),
    (0x0028, 0x1052): ("RescaleIntercept", "numbers"),
    (0x0028, 0x1053): ("RescaleSlope", "numbers"),
}
_IMPLICIT_LE, _EXPLICIT_BE, _DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"
# photometric interpretation -> samples per pixel
_PHOTOMETRIC = {
    "MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "YBR_FULL": 3, "YBR_FULL_422": 3,
    "YBR_PARTIAL_422": 3, "YBR_PARTIAL_420": 3, "YBR_ICT": 3, "YBR_RCT": 3,
}  # fmt: skip
#: the attributes of the Image Pixel module that must be present (type 1)
_PIXEL_MODULE = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                 "PhotometricInterpretation")  # fmt: skip
#: the attributes the slices of one series must share
SERIES_ATTRIBUTES = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PixelRepresentation",
                     "PhotometricInterpretation")  # fmt: skip


@dataclass
class DicomInfo:
    """What :func:`read_dicom_info` found in a DICOM file.

    Attributes:
        values: the attributes of ``_WANTED`` present at the top level, by name (numbers as tuples of floats, or
            the text if it does not parse; US values as ints, text stripped).
        pixel_offset: where the ``PixelData`` value starts (None: no pixel data).
        pixel_length: its length in bytes (None: encapsulated, i.e. compressed frames).
        fragments: the number of compressed fragments (encapsulated pixel data; the offset table not counted).
    """

    values: dict = field(default_factory=dict)
    pixel_offset: int | None = None
    pixel_length: int | None = None
    fragments: int | None = None

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    @property
    def frames(self) -> int:
        """``NumberOfFrames`` (1 when absent)."""
        n = self.values.get("NumberOfFrames")
        return 1 if not n else int(n[0])


class _Malformed(Exception):
    pass


class _Walker:
    """A bounds-checked walk over the elements of a DICOM data set held in a buffer."""

    def __init__(self, buf, little: bool, explicit: bool):
        self.buf, self.little, self.explicit = buf, little, explicit
        self.info = DicomInfo()

    def _u16(self, pos: int, little: bool | None = None) -> int:
        return struct.unpack_from("<H" if (self.little if little is None else little) else ">H", self.buf, pos)[0]

    def _u32(self, pos: int, little: bool | None = None) -> int:
        return struct.unpack_from("<I" if (self.little if little is None else little) else ">I", self.buf, pos)[0]

    def _need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or pos + n > len(self.buf):
            raise _Malformed(f"{what} at byte {pos} runs past the end of the file ({len(self.buf)} bytes)")

    def element(self, pos: int, explicit: bool, little: bool) -> tuple[tuple[int, int], bytes | None, int, int]:
        """``(tag, vr, value_start, length)`` of the element at ``pos``."""
        self._need(pos, 8, "an element header")
        tag = (self._u16(pos, little), self._u16(pos + 2, little))
        if tag[0] == 0xFFFE or not explicit:
            return tag, None, pos + 8, self._u32(pos + 4, little)
        vr = bytes(self.buf[pos + 4 : pos + 6])
        if not (len(vr) == 2 and 65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise _Malformed(f"element ({tag[0]:04X},{tag[1]:04X}) at byte {pos} has no valid VR ({vr!r})")
        if vr in _LONG_VRS:
            self._need(pos, 12, "an element header")
            return tag, vr, pos + 12, self._u32(pos + 8, little)
        return tag, vr, pos + 8, self._u16(pos + 6, little)

    def walk(self, pos: int, end: int, explicit: bool, little: bool, depth: int, stop_at_group: int | None = None) -> int:
        """Walk the elements from ``pos``; at depth 0 record the wanted ones and the pixel data. Returns where it
        stopped: ``end``, after an item delimiter (depth > 0), or at the first element of another group than
        ``stop_at_group``."""
        if depth > 32:
            raise _Malformed("sequences nested more than 32 deep")
        while pos < end:
            if stop_at_group is not None:
                self._need(pos, 2, "an element header")
                if self._u16(pos, little) != stop_at_group:
                    return pos
            tag, vr, start, length = self.element(pos, explicit, little)
            if tag == _ITEM_END and depth > 0:
                return start
            if tag[0] == 0xFFFE:
                raise _Malformed(f"unexpected item tag ({tag[0]:04X},{tag[1]:04X}) at byte {pos}")
            if length == _UNDEFINED:
                if tag == _PIXEL_DATA and depth == 0:
                    self.info.pixel_offset = start
                    self.info.fragments = self._fragments(start, little)
                    return end
                if vr not in (None, b"SQ", b"UN", b"OB"):
                    raise _Malformed(f"element ({tag[0]:04X},{tag[1]:04X}) with VR {vr.decode()} has an undefined length")
                # an undefined-length UN is implicit VR little endian inside (PS3.5 6.2.2)
                inner_explicit, inner_little = (False, True) if vr == b"UN" else (explicit, little)
                pos = self._sequence(start, inner_explicit, inner_little, depth + 1)
                continue
            self._need(start, length, f"element ({tag[0]:04X},{tag[1]:04X}) of {length} bytes")
            if depth == 0:
                if tag in _WANTED:
                    name, kind = _WANTED[tag]
                    self.info.values[name] = self._value(start, length, kind, little, name)
                elif tag == _PIXEL_DATA:
                    self.info.pixel_offset, self.info.pixel_length = start, length
            pos = start + length
        if depth > 0 and stop_at_group is None:
            raise _Malformed("an item of undefined length has no item delimiter")
        return pos

    def _sequence(self, pos: int, explicit: bool, little: bool, depth: int) -> int:
        """Skip a sequence of undefined length starting at ``pos``; returns the position after its delimiter."""
        while True:
            self._need(pos, 8, "a sequence item")
            tag, length = (self._u16(pos, little), self._u16(pos + 2, little)), self._u32(pos + 4, little)
            if tag == _SEQ_END:
                return pos + 8
            if tag != _ITEM:
                raise _Malformed(f"expected a sequence item at byte {pos}, found ({tag[0]:04X},{tag[1]:04X})")
            if length == _UNDEFINED:
                pos = self.walk(pos + 8, len(self.buf), explicit, little, depth)
            else:
                self._need(pos + 8, length, "a sequence item")
                pos += 8 + length

    def _fragments(self, pos: int, little: bool) -> int:
        """Count the fragments of encapsulated pixel data (the first item is the offset table)."""
        items = 0
        while True:
            self._need(pos, 8, "an encapsulated pixel data item")
            tag, length = (self._u16(pos, little), self._u16(pos + 2, little)), self._u32(pos + 4, little)
            if tag == _SEQ_END:
                return max(items - 1, 0)
            if tag != _ITEM or length == _UNDEFINED:
                raise _Malformed(f"invalid encapsulated pixel data item ({tag[0]:04X},{tag[1]:04X}) at byte {pos}")
            self._need(pos + 8, length, "an encapsulated pixel data fragment")
            pos += 8 + length
            items += 1

    def _value(self, start: int, length: int, kind: str, little: bool, name: str):
        raw = bytes(self.buf[start : start + length])
        if kind == "us":
            if length < 2:
                raise _Malformed(f"{name} has {length} bytes, a US value needs 2")
            return struct.unpack_from("<H" if little else ">H", raw)[0]
        text = raw.decode("latin-1").strip("\x00 ")
        if kind == "text":
            return text
        if not text:
            return None
        try:
            return tuple(float(v) for v in text.split("\\"))
        except ValueError:
            return text  # reported by check_dicom_info


def read_dicom_info(path) -> DicomInfo:
    """Walk a DICOM file's data set (without GDCM) for its pixel description and where its ``PixelData`` is.

    Args:
        path: a DICOM file (part-10 with the ``DICM`` preamble, or a bare data set).

    Returns:
        a :class:`DicomInfo`.

    Raises:
        DataError: a malformed data set (an element running past the end of the file, an invalid VR, a sequence
            without its delimiter, ...), naming the file and the byte.
    """
    name = os.fspath(path)
    size = os.path.getsize(name)
    if size == 0:
        raise DataError.for_file(name, "file is empty (0 bytes)")
    with open(name, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            return _read(buf, name)
        except (_Malformed, struct.error) as e:
            raise DataError.for_file(name, f"malformed DICOM data set: {e}") from None


def _read(buf, name: str) -> DicomInfo:
    if buf[128:132] == b"DICM":
        meta = _Walker(buf, little=True, explicit=True)
        pos = meta.walk(132, len(buf), True, True, 0, stop_at_group=0x0002)
        syntax = meta.info.get("TransferSyntaxUID", "")
    else:  # a bare data set: explicit VR if a VR follows the first tag
        pos, meta = 0, None
        syntax = "" if len(buf) >= 6 and bytes(buf[4:6]).isalpha() and bytes(buf[4:6]).isupper() else _IMPLICIT_LE
    data = buf
    if syntax == _DEFLATED:
        d = zlib.decompressobj(-15)
        try:
            data = d.decompress(bytes(buf[pos:]), 1 << 30)
        except zlib.error as e:
            raise _Malformed(f"deflated data set does not inflate: {e}") from None
        pos = 0
    explicit, little = syntax != _IMPLICIT_LE, syntax != _EXPLICIT_BE
    if pos + 6 <= len(data):  # writers that encode the data set otherwise than their transfer syntax says exist;
        vr = bytes(data[pos + 4 : pos + 6])  # GDCM and pydicom follow the data (as here, from its first element)
        explicit = vr.isalpha() and vr.isupper()
    walker = _Walker(data, little, explicit)
    walker.walk(pos, len(data), explicit, little, 0)
    if meta is not None:
        walker.info.values.setdefault("TransferSyntaxUID", syntax)
    return walker.info


def _bad(path, problem: str) -> DataError:
    return DataError.for_file(path, f"invalid DICOM pixel description: {problem}")


def check_dicom_info(path, info: DicomInfo) -> None:
    """Check a DICOM file's pixel description against itself and its ``PixelData`` (pure).

    The type 1 attributes of the Image Pixel module present; ``Rows``/``Columns`` >= 1, ``SamplesPerPixel`` 1 or 3
    and as ``PhotometricInterpretation`` says, ``BitsAllocated``
    1, 8, 16, 32 or 64, ``BitsStored``/``HighBit`` within it, ``PixelRepresentation`` 0 or 1, ``NumberOfFrames`` >= 1;
    native pixel data must hold ``Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated`` bits
    (plus padding shorter than one frame), compressed pixel data at least one fragment per frame. ``ImagePositionPatient`` (3),
    ``ImageOrientationPatient`` (6: two orthogonal unit vectors) and ``PixelSpacing`` (2, positive), when present,
    must be finite and within 1e9 mm; ``RescaleSlope`` (not 0) and ``RescaleIntercept`` both or neither, finite and
    within 1e9.

    Raises:
        DataError: the first attribute that is invalid or contradicts the pixel data, named.
    """
    if info.pixel_offset is None:
        raise DataError.for_file(path, "DICOM file without PixelData: not an image")
    v = info.values
    for name in ("SOPClassUID", "SeriesInstanceUID", "TransferSyntaxUID"):  # GDCM picks the spacing by SOP class
        uid = v.get(name)
        if uid and (len(uid) > 64 or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid)):
            raise DataError.for_file(path, f"invalid DICOM UID: {name} = {uid[:70]!r} (digits and dots expected)")
    for tag, (name, kind) in _WANTED.items():
        if kind == "numbers" and isinstance(v.get(name), str):
            raise DataError.for_file(path, f"cannot parse {name} ({tag[0]:04X},{tag[1]:04X}) = {v[name][:60]!r}: "
                                     "numbers expected")  # fmt: skip
    for name in _PIXEL_MODULE:  # type 1 attributes of the Image Pixel module: a reader would have to guess them
        if v.get(name) in (None, ""):
            raise _bad(path, f"{name} is missing")
    rows, cols, bits = v["Rows"], v["Columns"], v["BitsAllocated"]
    if rows < 1 or cols < 1:
        raise _bad(path, f"Rows x Columns = {rows} x {cols}")
    if bits not in (1, 8, 16, 32, 64):
        raise _bad(path, f"BitsAllocated = {bits} (1, 8, 16, 32 or 64 expected)")
    stored, high = v.get("BitsStored", bits), v.get("HighBit", v.get("BitsStored", bits) - 1)
    if not 1 <= stored <= bits or not stored - 1 <= high < bits:
        raise _bad(path, f"BitsStored = {stored}, HighBit = {high} do not fit BitsAllocated = {bits}")
    if v.get("PixelRepresentation", 0) not in (0, 1):
        raise _bad(path, f"PixelRepresentation = {v['PixelRepresentation']} (0 or 1 expected)")
    spp = v.get("SamplesPerPixel", 1)
    photometric = v.get("PhotometricInterpretation") or ("MONOCHROME2" if spp == 1 else "RGB")
    if photometric not in _PHOTOMETRIC:
        raise _bad(path, f"PhotometricInterpretation = {photometric!r} is not a known one")
    if spp != _PHOTOMETRIC[photometric]:
        raise _bad(path, f"SamplesPerPixel = {spp} contradicts PhotometricInterpretation = {photometric}")
    frames = v.get("NumberOfFrames")
    if frames is not None and (len(frames) != 1 or frames[0] != int(frames[0]) or frames[0] < 1):
        raise _bad(path, f"NumberOfFrames = {frames}")
    n_frames = info.frames
    if info.pixel_length is not None:
        samples = 2 if photometric == "YBR_FULL_422" else spp  # 4:2:2 stores 2 values per pixel
        expected = math.ceil(rows * cols * n_frames * samples * bits / 8)
        frame = expected // n_frames
        # trailing padding after the pixels exists in the wild (less than a frame); a missing or extra frame does not
        if not expected <= info.pixel_length < expected + max(frame, 2):
            raise _bad(path, f"PixelData holds {info.pixel_length} bytes, but Rows x Columns x NumberOfFrames x "
                       f"SamplesPerPixel x BitsAllocated = {rows} x {cols} x {n_frames} x {samples} x {bits} bits "
                       f"= {expected} bytes")  # fmt: skip
    elif info.fragments is not None and info.fragments < n_frames:
        raise _bad(path, f"NumberOfFrames = {n_frames} but the compressed PixelData holds {info.fragments} fragment(s)")
    if (v.get("RescaleSlope") is None) != (v.get("RescaleIntercept") is None):  # readers disagree on a lone one
        given = "RescaleSlope" if v.get("RescaleSlope") is not None else "RescaleIntercept"
        raise _bad(path, f"{given} without {'RescaleIntercept' if given == 'RescaleSlope' else 'RescaleSlope'} (the "
                   "two come together)")  # fmt: skip
    for name in ("RescaleSlope", "RescaleIntercept"):
        value = v.get(name)
        if value is not None and (len(value) != 1 or not math.isfinite(value[0]) or abs(value[0]) > MAX_COORDINATE
                                  or (name == "RescaleSlope" and value[0] == 0)):  # fmt: skip
            raise _bad(path, f"{name} = {list(value)} (one finite number{', not 0' if 'Slope' in name else ''}, "
                       f"within {MAX_COORDINATE:g}, expected)")  # fmt: skip
    for name, count in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)):
        value = v.get(name)
        if value is None:
            continue
        if len(value) != count or not all(math.isfinite(x) and abs(x) <= MAX_COORDINATE for x in value):
            raise DataError.for_file(path, f"invalid DICOM geometry: {name} = {list(value)} ({count} finite numbers "
                                     "expected)")  # fmt: skip
        if name == "PixelSpacing" and min(value) <= 0:
            raise DataError.for_file(path, f"invalid DICOM geometry: PixelSpacing = {list(value)} (must be positive)")
        if name == "ImageOrientationPatient":
            r, c = value[:3], value[3:]
            norms = [math.sqrt(sum(x * x for x in u)) for u in (r, c)]
            if any(abs(n - 1) > 1e-2 for n in norms) or abs(sum(a * b for a, b in zip(r, c))) > 1e-2:
                raise DataError.for_file(path, f"invalid DICOM geometry: ImageOrientationPatient = {list(value)} "
                                         "(two orthogonal unit vectors expected)")  # fmt: skip


def decoded_size(info: DicomInfo) -> int:
    """The bytes the decoded pixels of one file take (at least one byte per sample)."""
    v = info.values
    return v["Rows"] * v["Columns"] * info.frames * v.get("SamplesPerPixel", 1) * max(v["BitsAllocated"] // 8, 1)


def check_dicom_file(path, max_bytes: int | None = None) -> DicomInfo:
    """:func:`read_dicom_info` + :func:`check_dicom_info` + the memory budget for its decoded pixels.

    Args:
        path: a DICOM file.
        max_bytes: the reading budget (:func:`~monai_patcher.data.readers.budget.check_decoded_size`).

    Raises:
        DataError: malformed, inconsistent or over budget.

    Example:
        >>> check_dicom_file("/data/series/slice001.dcm").frames  # doctest: +SKIP
        1
    """
    info = read_dicom_info(path)
    check_dicom_info(path, info)
    v = info.values
    what = f"the DICOM pixel description ({v['Rows']} x {v['Columns']} x {info.frames} frames)"
    check_decoded_size(path, decoded_size(info), what, max_bytes)
    return info


def _rescale(info: DicomInfo) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)`` of a slice, ``(1, 0)`` where it has none."""
    slope, intercept = info.get("RescaleSlope"), info.get("RescaleIntercept")
    return (float(slope[0]) if slope else 1.0, float(intercept[0]) if intercept else 0.0)


def check_dicom_series(folder, infos: dict[str, DicomInfo], max_bytes: int | None = None) -> None:
    """Check that the slices of one series share their pixel description (:data:`SERIES_ATTRIBUTES`) and their
    ``RescaleSlope``/``RescaleIntercept`` (ITK converts every slice to the first slice's pixel type: a slice rescaled
    otherwise wrapped around), are single frames (unless the series is one multi-frame file), and fit the memory
    budget together.

    Args:
        folder: the series folder (named in the budget error).
        infos: ``{file: DicomInfo}`` of the series' files (each already checked by :func:`check_dicom_file`).
        max_bytes: the reading budget.

    Raises:
        DataError: naming the first file that differs from the first one and the attribute.
    """
    items = list(infos.items())
    if not items:
        return
    first_file, first = items[0]
    for f, info in items:
        if info.frames != 1 and len(items) > 1:
            raise DataError.for_file(f, f"multi-frame file ({info.frames} frames) inside a series of {len(items)} files")
        for name in SERIES_ATTRIBUTES:
            if info.get(name) != first.get(name):
                raise DataError.for_file(
                    f, f"{name} = {info.get(name)!r}, but {os.path.basename(first_file)} of the same series has "
                    f"{first.get(name)!r}: the slices of one series must share their pixel description"
                )
        if _rescale(info) != _rescale(first):
            raise DataError.for_file(
                f, f"RescaleSlope/RescaleIntercept = {_rescale(info)}, but {os.path.basename(first_file)} of the same "
                f"series has {_rescale(first)}: ITK reads every slice into the first slice's pixel type, so differently "
                "rescaled slices can wrap around (series with per-slice rescaling are not supported)"
            )
    total = sum(decoded_size(i) for _, i in items)
    check_decoded_size(folder, total, f"the DICOM series ({len(items)} slices)", max_bytes)

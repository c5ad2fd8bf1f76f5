"""MetaImage (``.mha``/``.mhd``) and NRRD (``.nrrd``/``.nhdr``) header validation before ITK sees the file.

ITK trusts these text headers: ``NDims = -1`` makes it segfault, ``CompressedData = True`` on uncompressed voxels gives
an image of uninitialised memory ("Uncompress failed" on stderr, no exception), a NaN ``Offset`` becomes 0, an
``Offset`` of 1e308 an infinite affine, NRRD ``space directions: none`` a 1 mm grid, and a header declaring fewer
voxels than the file holds is read as other voxels. :func:`check_metaimage_file` and :func:`check_nrrd_file` parse
the header (pure functions: :func:`parse_metaimage_header`, :func:`check_metaimage_header`, :func:`parse_nrrd_header`,
:func:`check_nrrd_header`), check the declared size against the memory budget, and check that the voxel data holds
exactly the declared bytes (compressed data: a streamed decompression that stops one byte after the declared size).
A header that lies is a :class:`~monai_patcher.data.DataError` naming the file and the field.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .budget import check_decoded_size

__all__ = [
    "RawLayout",
    "parse_metaimage_header",
    "check_metaimage_header",
    "check_metaimage_file",
    "parse_nrrd_header",
    "check_nrrd_header",
    "check_nrrd_file",
]

#: the largest coordinate or voxel size (mm) a header may give; beyond it the geometry is meaningless.
MAX_COORDINATE = 1e9
#: headers are small; a "header" longer than this is not one.
MAX_HEADER_BYTES = 1 << 20

# MetaImage element types and their sizes (MetaIO: MET_LONG is 32 bits)
_MET_TYPES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip
_NRRD_TYPES = {
    **dict.fromkeys(["signed char", "int8", "int8_t"], 1),
    **dict.fromkeys(["uchar", "unsigned char", "uint8", "uint8_t"], 1),
    **dict.fromkeys(["short", "short int", "signed short", "signed short int", "int16", "int16_t"], 2),
    **dict.fromkeys(["ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"], 2),
    **dict.fromkeys(["int", "signed int", "int32", "int32_t"], 4),
    **dict.fromkeys(["uint", "unsigned int", "uint32", "uint32_t"], 4),
    **dict.fromkeys(["longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t"], 8),
    **dict.fromkeys(["ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"], 8),
    "float": 4, "double": 8,
}  # fmt: skip
_NRRD_ENCODINGS = {"raw": "raw", "txt": "ascii", "text": "ascii", "ascii": "ascii", "hex": "hex", "gz": "gzip",
                   "gzip": "gzip", "bz2": "bzip2", "bzip2": "bzip2"}  # fmt: skip
# NRRD axis kinds of spatial axes (an axis of another kind, e.g. "vector", needs no direction)
_NRRD_SPATIAL_KINDS = {"domain", "space", "time", "???", "none"}
# NRRD spaces whose relation to the patient ITK knows (it converts them to LPS)
_NRRD_SPACES = {"right-anterior-superior", "ras", "left-anterior-superior", "las", "left-posterior-superior", "lps"}


@dataclass(frozen=True)
class RawLayout:
    """What a validated MetaImage/NRRD header declares about its voxel data.

    Attributes:
        shape: the grid (fastest axis first), without the component axis.
        components: values per voxel.
        itemsize: bytes per value.
        encoding: ``"raw"``, ``"zlib"`` (MetaImage ``CompressedData``; zlib or gzip stream), ``"gzip"``,
            ``"ascii"`` or ``"hex"``.
        data_file: the file holding the voxels.
        data_offset: where they start in it (-1: they are the last ``data_bytes`` bytes of the file).
        compressed_size: the compressed size the header declares, if it does (MetaImage ``CompressedDataSize``).
    """

    shape: tuple[int, ...]
    components: int
    itemsize: int
    encoding: str
    data_file: str
    data_offset: int
    compressed_size: int | None = None

    @property
    def data_bytes(self) -> int:
        """The decoded size of the voxel data, in bytes."""
        return math.prod(self.shape) * self.components * self.itemsize


def _bad(path, fmt: str, field: str, problem: str) -> DataError:
    return DataError.for_file(path, f"invalid {fmt} header: {field} {problem}")


def _numbers(path, fmt: str, field: str, text: str, count: int | None, integer: bool = False) -> list[float]:
    parts = text.replace(",", " ").split()
    try:
        values = [int(p) if integer else float(p) for p in parts]
    except ValueError:
        raise _bad(path, fmt, field, f"= {text!r}: not {'whole ' if integer else ''}numbers") from None
    if count is not None and len(values) != count:
        raise _bad(path, fmt, field, f"= {text!r}: {count} value{'s' if count != 1 else ''} expected, got {len(values)}")
    if not integer and not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in values):
        raise _bad(path, fmt, field, f"= {text!r}: not finite or beyond {MAX_COORDINATE:g} mm")
    return values


def _check_directions(path, fmt: str, field: str, vectors: list[list[float]]) -> None:
    """Direction vectors (one per spatial axis) must be non-zero and mutually orthogonal (no shear)."""
    units = []
    for v in vectors:
        norm = math.sqrt(sum(c * c for c in v))
        if norm == 0:
            raise _bad(path, fmt, field, f"has a zero vector {v}: an axis without direction")
        units.append([c / norm for c in v])
    for i in range(len(units)):
        for j in range(i + 1, len(units)):
            if abs(sum(a * b for a, b in zip(units[i], units[j]))) > 1e-3:
                raise _bad(path, fmt, field, f"axes {i} and {j} are not orthogonal ({vectors[i]} vs {vectors[j]}): "
                           "a sheared or degenerate grid")  # fmt: skip


# ----------------------------------------------------------------------------------------------------- MetaImage


def parse_metaimage_header(path, head: bytes) -> tuple[dict[str, str], int]:
    """The ``key = value`` fields of a MetaImage header, up to and including ``ElementDataFile``, and the byte offset
    just after that line (where ``LOCAL`` voxel data starts).

    Raises:
        DataError: no ``ElementDataFile`` line (not a MetaImage header, or a truncated one), a line without ``=``.
    """
    fields: dict[str, str] = {}
    end = 0
    for line in head.splitlines(keepends=True):
        end += len(line)
        text = line.decode("latin-1").strip()
        if not text:
            continue
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", key):  # MetaIO keys are words; other bytes are damage
            raise DataError.for_file(path, f"invalid MetaImage header: line {text[:60]!r} is not 'key = value'")
        if key in fields:
            raise _bad(path, "MetaImage", key, "is given twice")
        fields[key] = value.strip()
        if key == "ElementDataFile":
            return fields, end
        if not line.endswith(b"\n"):
            break
    raise DataError.for_file(path, "not a MetaImage file (or its header is truncated): no ElementDataFile line")


def _bool(path, field: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise _bad(path, "MetaImage", field, f"= {value!r}: True or False expected")


def check_metaimage_header(path, fields: dict[str, str], header_end: int) -> RawLayout:
    """Validate MetaImage header fields (from :func:`parse_metaimage_header`).

    Checked: ``ObjectType`` (Image), ``NDims`` (2 to 5), ``DimSize`` (``NDims`` sizes >= 1), ``ElementType`` (a scalar
    ``MET_`` type), ``ElementNumberOfChannels`` (1 to 64), ``ElementSpacing``/``ElementSize`` (finite, positive),
    ``Offset``/``Position``/``Origin`` (finite, within 1e9 mm), ``TransformMatrix``/``Rotation``/``Orientation``
    (finite, orthonormal), ``CompressedData``/``BinaryData``/byte order flags (booleans), ``CompressedDataSize``,
    ``HeaderSize`` and ``ElementDataFile`` (``LOCAL`` or one file; lists and patterns are refused).

    Args:
        path: the header file, for messages and to find a separate data file.
        fields: the parsed fields.
        header_end: the byte offset after the ``ElementDataFile`` line.

    Raises:
        DataError: the first invalid field, named.
    """
    fmt = "MetaImage"
    if fields.get("ObjectType", "Image").lower() != "image":
        raise _bad(path, fmt, "ObjectType", f"= {fields['ObjectType']!r}: only images are read")
    if "NDims" not in fields:
        raise _bad(path, fmt, "NDims", "is missing")
    (ndims,) = _numbers(path, fmt, "NDims", fields["NDims"], 1, integer=True)
    if not 2 <= ndims <= 5:
        raise _bad(path, fmt, "NDims", f"= {ndims}: 2 to 5 dimensions are supported")
    if "DimSize" not in fields:
        raise _bad(path, fmt, "DimSize", "is missing")
    shape = tuple(_numbers(path, fmt, "DimSize", fields["DimSize"], ndims, integer=True))
    if any(n < 1 for n in shape):
        raise _bad(path, fmt, "DimSize", f"= {list(shape)}: every size must be at least 1")
    etype = fields.get("ElementType", "")
    if etype not in _MET_TYPES:
        raise _bad(path, fmt, "ElementType", f"= {etype!r}: one of {sorted(_MET_TYPES)} expected")
    (channels,) = _numbers(path, fmt, "ElementNumberOfChannels", fields.get("ElementNumberOfChannels", "1"), 1, integer=True)
    if not 1 <= channels <= 64:
        raise _bad(path, fmt, "ElementNumberOfChannels", f"= {channels}: 1 to 64 expected")
    for key in ("ElementSpacing", "ElementSize"):
        if key in fields:
            spacing = _numbers(path, fmt, key, fields[key], ndims)
            if any(s <= 0 for s in spacing):
                raise _bad(path, fmt, key, f"= {spacing}: voxel sizes must be positive")
    for key in ("Offset", "Position", "Origin"):
        if key in fields:
            _numbers(path, fmt, key, fields[key], ndims)
    for key in ("TransformMatrix", "Rotation", "Orientation"):
        if key in fields:
            m = _numbers(path, fmt, key, fields[key], ndims * ndims)
            rows = [m[i * ndims : (i + 1) * ndims] for i in range(ndims)]
            _check_directions(path, fmt, key, rows)
            if any(abs(math.sqrt(sum(c * c for c in r)) - 1) > 1e-3 for r in rows):
                raise _bad(path, fmt, key, f"= {m}: not a rotation (its rows must have length 1)")
    for key in ("BinaryDataByteOrderMSB", "ElementByteOrderMSB"):
        _bool(path, key, fields.get(key), False)
    binary = _bool(path, "BinaryData", fields.get("BinaryData"), True)
    compressed = _bool(path, "CompressedData", fields.get("CompressedData"), False)
    csize = None
    if "CompressedDataSize" in fields:
        (csize,) = _numbers(path, fmt, "CompressedDataSize", fields["CompressedDataSize"], 1, integer=True)
        if csize < 1:
            raise _bad(path, fmt, "CompressedDataSize", f"= {csize}")
    (hsize,) = _numbers(path, fmt, "HeaderSize", fields.get("HeaderSize", "0"), 1, integer=True)
    if hsize < -1:
        raise _bad(path, fmt, "HeaderSize", f"= {hsize}")
    data_file = fields["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        if hsize != 0:  # ITK skips it inside the local data too: voxels read from elsewhere than they are
            raise _bad(path, fmt, "HeaderSize", f"= {hsize} with ElementDataFile = LOCAL: the voxels follow the header")
        target, offset = os.fspath(path), header_end
    else:
        if data_file.upper() == "LIST" or "%" in data_file or " " in data_file.strip():
            raise _bad(path, fmt, "ElementDataFile", f"= {data_file!r}: data split over several files is not supported")
        target = str(Path(os.fspath(path)).parent / data_file)
        if not os.path.isfile(target):
            raise _bad(path, fmt, "ElementDataFile", f"= {data_file!r}: the data file {target} does not exist")
        offset = hsize
    if compressed and csize is None:  # ITK then fails to decompress ("Uncompress failed") and returns garbage
        raise _bad(path, fmt, "CompressedDataSize", "is missing with CompressedData = True (ITK cannot decompress "
                   "without it)")  # fmt: skip
    if compressed and offset < 0:
        raise _bad(path, fmt, "HeaderSize", "= -1 with CompressedData = True: the compressed data cannot be located")
    encoding = "zlib" if compressed else ("raw" if binary else "ascii")
    return RawLayout(shape, channels, _MET_TYPES[etype], encoding, target, offset, csize)


def check_metaimage_file(path, max_bytes: int | None = None) -> RawLayout:
    """Validate a MetaImage file's header and that its voxel data is exactly what the header declares.

    Args:
        path: a ``.mha`` or ``.mhd`` file.
        max_bytes: the reading budget (:func:`~monai_patcher.data.readers.budget.check_decoded_size`).

    Returns:
        the validated :class:`RawLayout`.

    Raises:
        DataError: an invalid header field, over budget, or voxel data of another size than declared (or not
            compressed when the header says so).

    Example:
        >>> check_metaimage_file("/data/case1_adc.mha").shape  # doctest: +SKIP
        (112, 112, 73)
    """
    return _check_file(path, "MetaImage", parse_metaimage_header, check_metaimage_header, max_bytes)


# ----------------------------------------------------------------------------------------------------- NRRD


_VECTOR = re.compile(r"\(([^()]*)\)|none", re.I)


def parse_nrrd_header(path, head: bytes) -> tuple[dict[str, str], int]:
    """The ``field: value`` lines of a NRRD header (key/value pairs ``key:=value`` and comments are skipped) and the
    byte offset after the blank line that ends it (the file's length for a header without data, ``.nhdr``).

    Raises:
        DataError: no ``NRRD000x`` magic, a line that is not a field.
    """
    lines = head.splitlines(keepends=True)
    if not lines or not re.fullmatch(rb"NRRD000[1-5]", lines[0].strip()):
        raise DataError.for_file(path, f"not a NRRD file: first line {lines[0][:20] if lines else b''!r}")
    fields: dict[str, str] = {}
    end = len(lines[0])
    for line in lines[1:]:
        end += len(line)
        text = line.decode("latin-1").rstrip("\r\n")
        if not text.strip():
            return fields, end
        if text.startswith("#") or ":=" in text:
            continue
        key, sep, value = text.partition(": ")
        if not sep or not re.fullmatch(r"[A-Za-z0-9 _-]+", key.strip()):
            raise DataError.for_file(path, f"invalid NRRD header: line {text[:60]!r} is not 'field: value'")
        key = key.strip().lower().replace("datafile", "data file").replace("lineskip", "line skip")
        key = key.replace("byteskip", "byte skip")
        if key in fields:
            raise _bad(path, "NRRD", key, "is given twice")
        fields[key] = value.strip()
    if len(head) >= MAX_HEADER_BYTES:
        raise DataError.for_file(path, "invalid NRRD header: no blank line ends it within 1 MiB")
    return fields, end


def check_nrrd_header(path, fields: dict[str, str], header_end: int) -> RawLayout:
    """Validate NRRD header fields (from :func:`parse_nrrd_header`).

    Checked: ``dimension``, ``sizes``, ``type`` (a scalar type), ``encoding`` (raw, gzip, ascii or hex: ITK's reader
    has no bzip2), ``endian``, the geometry: every spatial axis (kind ``domain``/``space``/``time`` or no kind) needs a
    finite, non-zero direction in ``space directions`` (``none`` only for non-spatial axes, e.g. ``vector``) or, without
    them, a finite positive ``spacings`` entry; the directions must be orthogonal; ``space origin`` finite;
    ``line skip``/``byte skip``; ``data file`` (one file; lists and patterns are refused).

    Raises:
        DataError: the first invalid field, named.
    """
    fmt = "NRRD"
    for key in ("dimension", "sizes", "type", "encoding"):
        if key not in fields:
            raise _bad(path, fmt, key, "is missing")
    (dim,) = _numbers(path, fmt, "dimension", fields["dimension"], 1, integer=True)
    if not 1 <= dim <= 16:
        raise _bad(path, fmt, "dimension", f"= {dim}: 1 to 16 expected")
    sizes = _numbers(path, fmt, "sizes", fields["sizes"], dim, integer=True)
    if any(n < 1 for n in sizes):
        raise _bad(path, fmt, "sizes", f"= {sizes}: every size must be at least 1")
    etype = fields["type"].lower()
    if etype not in _NRRD_TYPES:
        raise _bad(path, fmt, "type", f"= {fields['type']!r}: not a scalar NRRD type")
    itemsize = _NRRD_TYPES[etype]
    encoding = _NRRD_ENCODINGS.get(fields["encoding"].lower())
    if encoding is None or encoding == "bzip2":
        raise _bad(path, fmt, "encoding", f"= {fields['encoding']!r}: raw, gzip, ascii or hex expected")
    if itemsize > 1 and encoding in ("raw", "gzip", "hex") and fields.get("endian", "").lower() not in ("little", "big"):
        raise _bad(path, fmt, "endian", f"= {fields.get('endian')!r}: 'little' or 'big' expected for {etype} data")
    kinds = fields.get("kinds", "").split() or ["domain"] * dim
    if len(kinds) != dim:
        raise _bad(path, fmt, "kinds", f"= {fields['kinds']!r}: {dim} kinds expected")
    spatial = [k.lower() in _NRRD_SPATIAL_KINDS for k in kinds]
    if "space" in fields and fields["space"].lower() not in _NRRD_SPACES:
        raise _bad(path, fmt, "space", f"= {fields['space']!r}: one of RAS, LAS, LPS (or their long names) expected: "
                   "the relation of another space to the patient is unknown")  # fmt: skip
    if "space directions" in fields:
        entries = _VECTOR.findall(fields["space directions"])
        tokens = [m.group(0) for m in _VECTOR.finditer(fields["space directions"])]
        if len(tokens) != dim or _VECTOR.sub("", fields["space directions"]).strip():
            raise _bad(path, fmt, "space directions", f"= {fields['space directions']!r}: {dim} vectors or 'none' expected")
        vectors = []
        for axis, (token, inner) in enumerate(zip(tokens, entries)):
            if token.lower() == "none":
                if spatial[axis]:
                    raise _bad(path, fmt, "space directions", f"= {fields['space directions']!r}: spatial axis {axis} "
                               f"(kind {kinds[axis]!r}) has no direction ('none'): its voxel size is unknown")  # fmt: skip
                continue
            vectors.append(_numbers(path, fmt, "space directions", inner, None))
        if not vectors or len({len(v) for v in vectors}) != 1:
            raise _bad(path, fmt, "space directions", f"= {fields['space directions']!r}: vectors of one length expected")
        _check_directions(path, fmt, "space directions", vectors)
        if "space origin" not in fields:
            raise _bad(path, fmt, "space origin", "is missing while space directions are given: the position is "
                       "unknown (ITK would put the first voxel at 0)")  # fmt: skip
        m = _VECTOR.fullmatch(fields["space origin"].strip())
        if m is None or m.group(1) is None:
            raise _bad(path, fmt, "space origin", f"= {fields['space origin']!r}: a vector '(x,y,z)' expected")
        _numbers(path, fmt, "space origin", m.group(1), len(vectors[0]))
    else:
        spacings = fields.get("spacings", "").split()
        if len(spacings) != dim:
            raise _bad(path, fmt, "space directions", "and spacings are missing: the voxel size is unknown (ITK would "
                       "use 1 mm); add the geometry to the header")  # fmt: skip
        for axis, s in enumerate(spacings):
            if spatial[axis]:
                (v,) = _numbers(path, fmt, "spacings", s, 1)
                if v <= 0:
                    raise _bad(path, fmt, "spacings", f"= {fields['spacings']!r}: axis {axis} has a voxel size {v}")
    line_skip = _numbers(path, fmt, "line skip", fields.get("line skip", "0"), 1, integer=True)[0]
    byte_skip = _numbers(path, fmt, "byte skip", fields.get("byte skip", "0"), 1, integer=True)[0]
    if line_skip < 0 or byte_skip < -1 or (byte_skip == -1 and encoding != "raw"):
        raise _bad(path, fmt, "line skip / byte skip", f"= {line_skip} / {byte_skip}")
    if "data file" in fields:
        name = fields["data file"]
        if name.upper().startswith("LIST") or "%" in name or len(name.split()) != 1:
            raise _bad(path, fmt, "data file", f"= {name!r}: data split over several files is not supported")
        target, offset = str(Path(os.fspath(path)).parent / name), 0
        if not os.path.isfile(target):
            raise _bad(path, fmt, "data file", f"= {name!r}: the data file {target} does not exist")
    else:
        target, offset = os.fspath(path), header_end
    if line_skip:
        with open(target, "rb") as f:
            f.seek(offset)
            for _ in range(line_skip):
                if not f.readline():
                    break
            offset = f.tell()
    offset = -1 if byte_skip == -1 else offset + byte_skip
    components = math.prod(n for n, s in zip(sizes, spatial) if not s)
    shape = tuple(n for n, s in zip(sizes, spatial) if s)
    return RawLayout(shape, components, itemsize, encoding, target, offset)


def check_nrrd_file(path, max_bytes: int | None = None) -> RawLayout:
    """Validate a NRRD file's header and that its voxel data is exactly what the header declares.

    Args:
        path: a ``.nrrd`` or ``.nhdr`` file.
        max_bytes: the reading budget (:func:`~monai_patcher.data.readers.budget.check_decoded_size`).

    Returns:
        the validated :class:`RawLayout`.

    Raises:
        DataError: an invalid header field, over budget, voxel data of another size than declared.

    Example:
        >>> check_nrrd_file("/data/case1_dwi.nrrd").shape  # doctest: +SKIP
        (112, 112, 73)
    """
    return _check_file(path, "NRRD", parse_nrrd_header, check_nrrd_header, max_bytes)


# ----------------------------------------------------------------------------------------------------- voxel data


def _check_file(path, fmt: str, parse, check, max_bytes: int | None) -> RawLayout:
    """Read a header (at most :data:`MAX_HEADER_BYTES`), parse and check it, then the budget and the voxel data."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    fields, end = parse(path, head)
    layout = check(path, fields, end)
    what = f"the {fmt} header ({' x '.join(map(str, layout.shape))} x {layout.components} x {layout.itemsize} bytes)"
    check_decoded_size(path, layout.data_bytes, what, max_bytes)
    _check_data(path, fmt, layout)
    return layout


def _check_data(path, fmt: str, layout: RawLayout) -> None:
    """The voxel data must hold exactly ``layout.data_bytes`` decoded bytes."""
    declared = layout.data_bytes
    size = os.path.getsize(layout.data_file)
    where = "" if os.fspath(path) == layout.data_file else f" (in {layout.data_file})"
    if layout.data_offset > size:
        raise DataError.for_file(path, f"truncated {fmt} file: the voxel data should start at byte "
                                 f"{layout.data_offset}{where}, the file has {size} bytes")  # fmt: skip
    if layout.encoding == "raw":
        present = size if layout.data_offset < 0 else size - layout.data_offset
        if present < declared:
            raise DataError.for_file(path, f"truncated {fmt} file: {declared} bytes of voxel data declared, only "
                                     f"{present} present{where}")  # fmt: skip
        if present > declared and layout.data_offset >= 0:
            raise DataError.for_file(
                path, f"the {fmt} header declares {declared} bytes of voxel data, the file holds {present}{where}: a "
                "header that does not describe its voxels (edited sizes or type?)"
            )
        return
    if layout.encoding in ("ascii", "hex"):
        with open(layout.data_file, "rb") as f:
            f.seek(layout.data_offset)
            text = f.read()
        if layout.encoding == "hex":
            count, want = sum(len(t) for t in text.split()), 2 * declared
        else:
            count, want = len(text.replace(b",", b" ").split()), declared // layout.itemsize
        if count != want:
            unit = "hex digits" if layout.encoding == "hex" else "values"
            raise DataError.for_file(path, f"the {fmt} header declares {want} {unit} of {layout.encoding} voxel data, "
                                     f"the file holds {count}{where}")  # fmt: skip
        return
    compressed = size - layout.data_offset
    if layout.compressed_size is not None and layout.compressed_size > compressed:
        raise DataError.for_file(path, f"truncated {fmt} file: {layout.compressed_size} bytes of compressed voxel data "
                                 f"declared (CompressedDataSize), only {compressed} present{where}")  # fmt: skip
    if layout.compressed_size is not None and layout.compressed_size != compressed:
        raise DataError.for_file(path, f"the {fmt} header declares CompressedDataSize = {layout.compressed_size}, "
                                 f"the file holds {compressed} bytes of compressed data{where}")  # fmt: skip
    got, trailing = _inflated_size(path, fmt, layout.data_file, layout.data_offset, declared)
    if got != declared:
        if got < declared:
            raise DataError.for_file(path, f"the compressed {fmt} voxel data decompresses to {got} bytes, the header "
                                     f"declares {declared} (truncated file?){where}")  # fmt: skip
        raise DataError.for_file(path, f"the compressed {fmt} voxel data decompresses to more than the {declared} "
                                 f"bytes the header declares{where}")  # fmt: skip
    if trailing:
        raise DataError.for_file(path, f"{trailing} bytes follow the end of the compressed {fmt} voxel data{where}")


def _inflated_size(path, fmt: str, data_file: str, offset: int, declared: int) -> tuple[int, int]:
    """Decompress a zlib or gzip stream in chunks, stopping one byte past ``declared``: ``(bytes out, bytes of input
    left after the stream ended)``. Never holds more than a few MiB."""
    d = zlib.decompressobj(wbits=47)  # zlib or gzip header, detected
    out = 0
    try:
        with open(data_file, "rb") as f:
            f.seek(offset)
            while out <= declared:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                while chunk and out <= declared:
                    piece = d.decompress(chunk, min(1 << 22, declared + 1 - out))
                    out += len(piece)
                    chunk = d.unconsumed_tail
                    if d.eof:
                        return out, len(d.unused_data) + len(chunk) + len(f.read())
            if out > declared:
                return out, 0
    except zlib.error as e:
        raise DataError.for_file(path, f"the {fmt} voxel data is not a valid compressed stream (is it compressed at "
                                 f"all?): {e}") from None  # fmt: skip
    if not d.eof:
        raise DataError.for_file(path, f"truncated {fmt} file: the compressed voxel data ends early ({out} of "
                                 f"{declared} bytes)")  # fmt: skip
    return out, 0

"""``PolypImageReader``: 2D photographs (JPEG, PNG, BMP, TIFF) for MONAI, every PIL mode converted correctly.

MONAI's ``PILReader`` hands on ``np.asarray(image)`` whatever the image's mode: a palette PNG arrives as palette
indices, a CMYK JPEG as four channels (whose first three, read as RGB, are the inverted colours), a 16-bit PNG as
values up to 65535 where 0-255 is expected, a 1-bit PNG as 0/1; and a truncated or damaged file raises PIL's
``OSError`` without the file name. This reader converts each mode the way its pixels are meant, checks the declared
size before decoding (a decompression bomb guard), checks the file's structure (PNG chunk checksums, JPEG markers to
the end-of-image marker) and raises :class:`~monai_patcher.data.DataError` naming the file for every problem.

Axis order: like ``PILReader`` (``reverse_indexing=True``), arrays are ``W x H`` (the transpose of PIL's ``H x W``).
The polyp bundle's checkpoints were trained on that layout and ``SaveImaged`` (``PILWriter``) transposes back, so the
convention is kept: a network is not invariant to transposing its input, and changing it would silently change the
predictions of every existing checkpoint.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, ensure_tuple
from PIL import Image

from ..errors import DataError
from .budget import check_decoded_size
from .suffixes import suffix_of

__all__ = ["PolypImageReader", "convert_image"]

#: bytes per pixel of each PIL mode once in numpy (decoded-size guard)
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
               "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2,
               "I;16N": 2}  # fmt: skip
_COLOUR = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _integer_bits(image: Image.Image) -> int | None:
    """The bit depth a 32-bit integer (``"I"``) image declares: 16 for PGM/PPM (PIL scales their ``maxval`` to
    65535), TIFF ``MaxSampleValue`` or ``BitsPerSample``; None if the file does not say."""
    if image.format == "PPM":
        return 16
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 281 in tags:  # MaxSampleValue
        top = tags[281]
        return int(top[0] if isinstance(top, tuple) else top).bit_length()
    if tags is not None and 258 in tags:  # BitsPerSample
        bits = tags[258]
        return int(bits[0] if isinstance(bits, tuple) else bits)
    return None


def convert_image(image: Image.Image, label: bool = False) -> np.ndarray:
    """The pixels of a decoded PIL image as a numpy array (``H x W`` or ``H x W x C``), converted from its mode.

    Images (``label=False``): always ``H x W x 3`` RGB. 8-bit modes stay ``uint8`` on 0-255: ``RGB`` as is, ``RGBA``/
    ``RGBX``/``LA``/``PA`` without the alpha channel (not composited, as PIL's ``convert("RGB")``), ``L`` repeated in 3
    channels, ``1`` as 0/255, ``P`` through its palette, ``CMYK`` as ``R = (255 - C)(255 - K) / 255`` (PIL's conversion;
    Adobe's inverted CMYK JPEGs are un-inverted by PIL's decoder), ``YCbCr``/``HSV`` converted. Deeper modes become
    ``float32`` on the same 0-255 scale: ``I;16`` scaled by 255 / 65535, ``I`` by 255 / (2^bits - 1) for the bit depth the
    file declares (up to 16; refused without one or above), ``F`` as is (PIL's scale for float images).

    Labels (``label=True``): the stored values, one channel where the mode has one: ``P``/``PA`` give the palette
    indices (the label values of a palette mask), ``1`` gives 0/255, ``L``/``LA``/``I;16``/``I``/``F`` their values
    (alpha dropped); colour modes give RGB as for images.

    Args:
        image: a decoded PIL image.
        label: convert as a label (mask) rather than an image.

    Raises:
        ValueError: a mode without a defined conversion (the caller adds the file name).

    Example:
        >>> from PIL import Image
        >>> convert_image(Image.new("P", (2, 1), 1).convert("P")).shape
        (1, 2, 3)
    """
    mode = image.mode
    if mode in ("P", "PA"):
        colours = len(image.getpalette() or []) // 3
        if not colours:
            raise ValueError("palette image without a palette (a PNG of colour type 3 needs a PLTE chunk)")
        if not label and int(np.asarray(image.getchannel(0)).max(initial=0)) >= colours:
            raise ValueError(f"palette indices beyond the {colours} colours of its palette")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(image).astype(np.float32 if not label else np.int32)
        values = values if label else values * np.float32(255.0 / 65535.0)
    elif mode == "I":
        values = np.asarray(image)
        if not label:
            bits = _integer_bits(image)
            if not bits or bits > 16:
                raise ValueError(f"{bits or 'unknown'}-bit integer image (PIL mode 'I'): no defined intensity scale "
                                 "for a photograph; convert it to 8 or 16 bits")  # fmt: skip
            top = (1 << bits) - 1
            if values.size and (values.min() < 0 or values.max() > top):
                raise ValueError(f"integer image with values outside 0..{top}, its declared {bits}-bit range")
            values = values.astype(np.float32) * np.float32(255.0 / top)
    elif mode == "F":
        values = np.asarray(image, dtype=np.float32)
    elif mode in ("P", "PA") and label:
        values = np.asarray(image.getchannel(0) if mode == "PA" else image)
    elif mode in ("1", "L", "LA", "La"):
        values = np.asarray(image.convert("L"))  # "1" -> 0/255, alpha dropped
    elif mode in ("P", "PA"):
        values = np.asarray(image.convert("RGBA").convert("RGB") if mode == "PA" else image.convert("RGB"))
    elif mode in _COLOUR:
        values = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    else:
        raise ValueError(f"PIL mode {mode!r} has no defined conversion")
    if values.ndim == 2 and not label:
        values = np.repeat(values[..., None], 3, axis=-1)
    return np.ascontiguousarray(values)


# ----------------------------------------------------------------------------------------------------- structure


def _check_png(path: str, data: bytes) -> tuple[int, int]:
    """Walk a PNG's chunks: each complete and with a matching CRC-32, ``IHDR`` first, ``IEND`` reached. Returns the
    size ``IHDR`` declares."""
    pos, first, size = 8, True, (0, 0)
    while True:
        if pos + 12 > len(data):
            raise DataError.for_file(path, f"truncated PNG file: it ends at byte {len(data)} before its IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        if length > 0x7FFFFFFF or pos + 12 + length > len(data):
            raise DataError.for_file(path, f"truncated or damaged PNG file: chunk {kind!r} at byte {pos} declares "
                                     f"{length} bytes, the file ends at byte {len(data)}")  # fmt: skip
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != crc:
            raise DataError.for_file(path, f"damaged PNG file: the checksum of chunk {kind!r} at byte {pos} does not "
                                     "match its content")  # fmt: skip
        if first and (kind != b"IHDR" or length < 8):
            raise DataError.for_file(path, f"damaged PNG file: the first chunk is {kind!r}, not IHDR")
        if first:
            size = struct.unpack_from(">II", data, pos + 8)
        first = False
        if kind == b"IEND":
            return size
        pos += 12 + length


_STANDALONE = set(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM: markers without a length
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _check_jpeg(path: str, data: bytes) -> tuple[int, int]:
    """Walk a JPEG's markers: every segment complete, a frame header before the first scan, the end-of-image marker
    reached (a truncated file has none). Returns the size the (first) frame header declares."""
    pos, frame, size = 2, False, (0, 0)
    while True:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < len(data) - 1 and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos < 0 or pos + 1 >= len(data):
            raise DataError.for_file(path, "truncated JPEG file: no end-of-image marker (the file ends early)")
        marker = data[pos + 1]
        if marker == 0xD9:
            return size
        if marker == 0x00 or marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > len(data):
            raise DataError.for_file(path, "truncated JPEG file: it ends inside a marker segment")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > len(data):
            raise DataError.for_file(path, f"truncated or damaged JPEG file: segment 0xFF{marker:02X} at byte {pos} "
                                     f"declares {length} bytes, the file ends at byte {len(data)}")  # fmt: skip
        if marker in _SOF and not frame and length >= 7:
            height, width = struct.unpack_from(">HH", data, pos + 5)
            size = (width, height)
        frame |= marker in _SOF
        if marker == 0xDA and not frame:
            raise DataError.for_file(path, "damaged JPEG file: image data (SOS) before any frame header (SOF)")
        pos += 2 + length  # after a scan header the entropy-coded data follows; its 0xFF bytes are stuffed (FF 00)


def _check_pixels(path: str, size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width < 1 or height < 1 or width * height > limit:
        raise DataError.for_file(path, f"the image declares {width} x {height} pixels; at most {limit} are read "
                                 "(max_pixels; a decompression bomb?)")  # fmt: skip


# ----------------------------------------------------------------------------------------------------- the reader


class _Pending:
    """A path noted by ``PolypImageReader.read``, read by ``get_data``."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def __repr__(self) -> str:
        return f"_Pending({self.path!r})"


class PolypImageReader(ImageReader):
    """Read 2D photographs (endoscopy frames and their masks) with PIL, every mode converted correctly.

    Use it wherever MONAI takes a reader, one for the images and one for the masks::

        LoadImaged("image", reader=PolypImageReader())
        LoadImaged("label", reader=PolypImageReader(label=True))

    or in a bundle config (after ``"$import monai_patcher"``)::

        {"_target_": "LoadImaged", "keys": "image", "reader": "$monai_patcher.data.PolypImageReader()"}

    Images come out RGB (``W x H x 3``), masks with their stored values (palette indices for palette masks); see
    :func:`convert_image` for every mode. Arrays are ``W x H`` like MONAI's ``PILReader`` (see the module docstring),
    with the same metadata keys (``format``, ``mode``: the file's mode, ``width``, ``height``, ``spatial_shape``,
    ``original_channel_dim``). A list of files is stacked as channels (MONAI's convention).

    Before decoding, the declared size is checked (``max_pixels``, and the decoded bytes against ``max_bytes``), PNG
    chunk checksums are verified and a JPEG must reach its end-of-image marker; then the image is decoded in full.

    Args:
        label: read masks: keep stored values (palette indices, one channel) instead of converting to RGB.
        reverse_indexing: ``W x H`` arrays as ``PILReader`` (default True); False gives PIL's ``H x W``.
        max_pixels: refuse images declaring more pixels (default PIL's ``Image.MAX_IMAGE_PIXELS``, 89.5 million, or
            that many if PIL's check is disabled).
        max_bytes: the reading budget for the decoded pixels (default a quarter of the available memory, see
            :func:`~monai_patcher.data.readers.budget.check_decoded_size`).
        kwargs: ignored; accepted so that ``LoadImage(reader=..., **kwargs)`` meant for another reader does not fail.

    Raises:
        DataError: (from ``get_data``) missing, empty, truncated or damaged file, unknown format, several frames,
            too many pixels, a mode without a defined conversion; the message names the file.

    Example:
        >>> from monai.transforms import LoadImage
        >>> img = LoadImage(reader=PolypImageReader(), image_only=True)("frame.jpg")  # doctest: +SKIP
        >>> tuple(img.shape)  # doctest: +SKIP
        (622, 529, 3)
    """

    def __init__(
        self,
        label: bool = False,
        reverse_indexing: bool = True,
        max_pixels: int | None = None,
        max_bytes: int | None = None,
        **kwargs,
    ):
        super().__init__()
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        self.label = label
        self.reverse_indexing = reverse_indexing
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """True if every name ends with a 2D image suffix (``image2d`` of :data:`~monai_patcher.data.readers.SUFFIXES`:
        ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``).

        Args:
            filename: file name or a sequence of file names.
        """
        return all(suffix_of(n, "image2d") is not None for n in ensure_tuple(filename))

    def read(self, data, **kwargs):
        """Note what to read; the pixels are read (and checked) by :meth:`get_data`, so that a bad file gives this
        reader's :class:`DataError` and not the tracebacks of other readers ``LoadImage`` would try next.

        Args:
            data: a path or a sequence of paths (stacked as channels by ``get_data``).
            kwargs: ignored.
        """
        names = ensure_tuple(data)
        handles = [_Pending(os.fspath(n)) for n in names]
        return handles if len(names) > 1 else handles[0]

    def read_array(self, path) -> tuple[np.ndarray, dict]:
        """Read one file now: ``(array, meta)``, the array in PIL's ``H x W[ x C]`` order, converted.

        Raises:
            DataError: see the class docstring.
        """
        name = os.fspath(path)
        if not os.path.isfile(name):
            raise DataError.for_file(name, "file does not exist")
        with open(name, "rb") as f:
            data = f.read()
        if not data:
            raise DataError.for_file(name, "file is empty (0 bytes)")
        limit = self.max_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            _check_pixels(name, _check_png(name, data), limit)
        elif data[:2] == b"\xff\xd8":
            _check_pixels(name, _check_jpeg(name, data), limit)
        try:
            with Image.open(name) as image:
                width, height = image.size
                _check_pixels(name, image.size, limit)
                if getattr(image, "n_frames", 1) > 1:
                    raise DataError.for_file(name, f"the file holds {image.n_frames} frames; one image expected")
                what = f"the image header ({width} x {height}, mode {image.mode})"
                check_decoded_size(name, width * height * _MODE_BYTES.get(image.mode, 8), what, self.max_bytes)
                image.load()
                meta = {"format": image.format, "mode": image.mode, "width": width, "height": height}
                array = convert_image(image, self.label)
        except DataError:
            raise
        except Image.DecompressionBombError as e:  # PIL's own check, for the formats not walked here
            raise DataError.for_file(name, f"too many pixels (max_pixels; a decompression bomb?): {e}") from None
        except ValueError as e:
            raise DataError.for_file(name, f"cannot convert this image: {e}") from None
        except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, EOFError, zlib.error ... for bad files
            kind = "not an image PIL can read" if isinstance(e, Image.UnidentifiedImageError) else \
                "cannot decode the image (truncated or damaged file?)"  # fmt: skip
            raise DataError.for_file(name, f"{kind}: {type(e).__name__}: {e}") from None
        return array, meta

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """Arrays and metadata of the files noted by :meth:`read`, stacked as channels if several.

        Args:
            img: a handle from :meth:`read` or a sequence of them.

        Returns:
            ``(array, meta)``: ``W x H[ x C]`` (``reverse_indexing``), or ``N x W x H[ x C]`` for ``N`` files.

        Raises:
            DataError: a bad file (see the class docstring), or files of different shapes stacked together.
        """
        arrays, meta0 = [], None
        for handle in ensure_tuple(img):
            array, meta = self.read_array(handle.path)
            if self.reverse_indexing:
                array = np.moveaxis(array, 0, 1)
            meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape[:2])
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if array.ndim == 2 else -1
            if arrays and array.shape != arrays[0].shape:
                raise DataError.for_file(handle.path, f"shape {array.shape} differs from the first file's "
                                         f"{arrays[0].shape}: images stacked as channels must have one shape")  # fmt: skip
            arrays.append(array)
            meta0 = meta0 or meta
        if len(arrays) == 1:
            return arrays[0], meta0
        meta0[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta0

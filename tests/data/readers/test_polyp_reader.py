"""PolypImageReader: one test per PIL mode against a reference conversion written out in numpy, damaged files and
decompression bombs refused with the file named, and MONAI's W x H layout kept."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from monai.data import PILReader
from monai.transforms import LoadImage
from PIL import Image

from monai_patcher.data import DataError
from monai_patcher.data.readers.polyp_reader import PolypImageReader, convert_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)  # H x W x 3
GRAY = RNG.integers(0, 256, (7, 9), dtype=np.uint8)


def _read(path, label=False):
    """The reader's array in PIL's H x W order (reverse_indexing=False) and its metadata."""
    return PolypImageReader(label=label, reverse_indexing=False).get_data(PolypImageReader().read(path))


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def test_rgb_and_rgba(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(_read(tmp_path / "rgb.png")[0], RGB)
    alpha = RNG.integers(0, 256, (7, 9, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([RGB, alpha], -1), "RGBA").save(tmp_path / "rgba.png")
    for label in (False, True):  # alpha dropped, not composited (PIL's convert("RGB"))
        array, meta = _read(tmp_path / "rgba.png", label)
        np.testing.assert_array_equal(array, RGB)
        assert meta["mode"] == "RGBA"


def test_gray_gray_alpha_and_1_bit(tmp_path):
    Image.fromarray(GRAY).save(tmp_path / "l.png")
    np.testing.assert_array_equal(_read(tmp_path / "l.png")[0], _rgb(GRAY))
    np.testing.assert_array_equal(_read(tmp_path / "l.png", label=True)[0], GRAY)
    Image.fromarray(np.stack([GRAY, 255 - GRAY], -1), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(_read(tmp_path / "la.png")[0], _rgb(GRAY))
    np.testing.assert_array_equal(_read(tmp_path / "la.png", label=True)[0], GRAY)
    bits = GRAY > 127
    Image.fromarray(bits).save(tmp_path / "one.png")  # a 1-bit PNG: read as 0/1 it was nearly black
    assert Image.open(tmp_path / "one.png").mode == "1"
    np.testing.assert_array_equal(_read(tmp_path / "one.png")[0], _rgb(bits.astype(np.uint8) * 255))
    np.testing.assert_array_equal(_read(tmp_path / "one.png", label=True)[0], bits.astype(np.uint8) * 255)


def test_palette_image_through_its_palette_palette_mask_as_indices(tmp_path):
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = RNG.integers(0, 256, (7, 9), dtype=np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(_read(tmp_path / "p.png")[0], palette[index])  # read as indices before
    np.testing.assert_array_equal(_read(tmp_path / "p.png", label=True)[0], index)
    pa = im.convert("PA")  # PA exists in memory only (PNG stores palette + tRNS, opened as P)
    assert pa.mode == "PA"
    np.testing.assert_array_equal(convert_image(pa), palette[index])
    np.testing.assert_array_equal(convert_image(pa, label=True), index)


def test_cmyk_jpeg_is_not_read_with_inverted_colours(tmp_path):
    cmyk = RNG.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")  # lossless
    c, k = cmyk[..., :3].astype(float), cmyk[..., 3:].astype(float)
    reference = np.round((255 - c) * (255 - k) / 255)
    np.testing.assert_allclose(_read(tmp_path / "c.tif")[0], reference, atol=1)
    # a CMYK JPEG as Photoshop writes it (Adobe APP14 marker, inverted values): pure red stays red
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "red.jpg", quality=100)
    assert b"Adobe" in (tmp_path / "red.jpg").read_bytes()
    red = _read(tmp_path / "red.jpg")[0].astype(int)
    assert np.abs(red - [255, 0, 0]).max() <= 4, red[0, 0]


def test_16_bit_images_are_scaled_to_the_8_bit_range(tmp_path):
    values = RNG.integers(0, 65536, (7, 9), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    array = _read(tmp_path / "g16.png")[0]
    assert array.dtype == np.float32
    np.testing.assert_allclose(array, _rgb(values.astype(np.float64) * 255 / 65535), rtol=1e-6)  # was not scaled
    np.testing.assert_array_equal(_read(tmp_path / "g16.png", label=True)[0], values)
    (tmp_path / "g12.pgm").write_bytes(b"P5\n9 7\n4095\n" + (values >> 4).astype(">u2").tobytes())
    assert Image.open(tmp_path / "g12.pgm").mode == "I"  # PIL scales a PGM's maxval to 65535
    ref = np.round((values >> 4).astype(np.float64) * 65535 / 4095) * 255 / 65535
    np.testing.assert_allclose(convert_image(Image.open(tmp_path / "g12.pgm"))[..., 0], ref, rtol=1e-5)


def test_32_bit_integer_and_float_images(tmp_path):
    Image.fromarray(GRAY.astype(np.int32) * 1000).save(tmp_path / "i32.tif")
    with pytest.raises(DataError, match=r"i32\.tif: cannot convert this image: 32-bit integer image .* no defined "
                                        "intensity scale"):  # fmt: skip
        _read(tmp_path / "i32.tif")
    np.testing.assert_array_equal(_read(tmp_path / "i32.tif", label=True)[0], GRAY.astype(np.int32) * 1000)
    floats = GRAY.astype(np.float32) + 0.25
    Image.fromarray(floats).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(_read(tmp_path / "f.tif")[0], _rgb(floats))


def test_ycbcr_and_hsv_are_converted_to_rgb():
    for mode in ("YCbCr", "HSV"):
        im = Image.fromarray(RGB).convert(mode)
        np.testing.assert_array_equal(convert_image(im), np.asarray(im.convert("RGB")))


def test_monai_layout_and_metadata_are_pil_readers(shared_path_fn):
    """Real Kvasir JPEGs: the same W x H arrays and metadata as MONAI's PILReader (existing checkpoints expect it)."""
    folder = shared_path_fn("Kvasir-SEG-5-samples-original-encoding", "Kvasir-SEG")
    for path in sorted(folder.glob("*/*.jpg"))[:4]:
        ours = LoadImage(reader=PolypImageReader(label="masks" in str(path)), image_only=True)(path)
        ref = LoadImage(reader=PILReader(), image_only=True)(path)
        if ref.ndim == 2:  # a gray mask
            np.testing.assert_array_equal(ours.numpy(), ref.numpy())
        else:
            np.testing.assert_array_equal(ours.numpy(), ref.numpy()[..., :3])
        for key in ("spatial_shape", "width", "height", "format"):
            np.testing.assert_array_equal(ours.meta[key], ref.meta[key])


def _png(width: int, height: int, idat: bytes, mode: int = 0) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png(100_000, 100_000, zlib.compress(bytes(1 << 20))))
    with pytest.raises(DataError, match=r"bomb\.png: the image declares 100000 x 100000 pixels; at most 89478485"):
        _read(tmp_path / "bomb.png")
    (tmp_path / "big.png").write_bytes(_png(4000, 4000, zlib.compress(bytes(1 << 16)), mode=2))
    with pytest.raises(DataError, match=r"big\.png: the image header \(4000 x 4000, mode RGB\) declares 45\.8 MiB"):
        PolypImageReader(max_bytes=1 << 20).read_array(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big\.png: the image declares 4000 x 4000 pixels; at most 1000000"):
        PolypImageReader(max_pixels=1_000_000).read_array(tmp_path / "big.png")


def test_damaged_files_name_the_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, "JPEG")
    jpeg = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, "PNG")
    png = buf.getvalue()
    flipped = bytearray(png)
    flipped[png.index(b"IDAT") + 10] ^= 0x10
    cases = {
        "trunc.jpg": (jpeg[:-2], "truncated JPEG file: no end-of-image marker"),
        "half.jpg": (jpeg[: len(jpeg) // 2], "truncated or damaged JPEG file"),
        "trunc.png": (png[:-20], "truncated"),
        "flipped.png": (bytes(flipped), "damaged PNG file: the checksum of chunk b'IDAT'"),
        "random.png": (RNG.bytes(500), "not an image PIL can read"),
        "empty.jpg": (b"", "file is empty"),
        "noise.jpg": (b"\xff\xd8" + RNG.bytes(300), "JPEG file"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=f"^{tmp_path / name}: .*{message}"):
            _read(tmp_path / name)
    with pytest.raises(DataError, match=r"missing\.png: file does not exist"):
        _read(tmp_path / "missing.png")

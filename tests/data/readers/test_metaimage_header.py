"""MetaImage/NRRD header validation (monai_patcher.data.readers.metaimage_header): the cases that crashed ITK, made it return
uninitialised memory or accepted garbage geometry are refused with the file and the field named."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from monai_patcher.data import DataError
from readers_helpers import load_image
from monai_patcher.data.readers.metaimage_header import check_metaimage_file, check_nrrd_file


@pytest.fixture
def volume():
    img = sitk.GetImageFromArray(np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7))
    img.SetSpacing((0.5, 0.75, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    return img


def _write(img, path, compress=False):
    sitk.WriteImage(img, str(path), compress)
    return path


def _edit(path, old: bytes, new: bytes, name: str):
    data = path.read_bytes()
    assert old in data, (old, data[:400])
    out = path.with_name(name)
    out.write_bytes(data.replace(old, new, 1))
    return out


@pytest.mark.parametrize("name, compress", [("v.mha", False), ("v.mha", True), ("v.mhd", False), ("v.mhd", True),
                                            ("v.nrrd", False), ("v.nrrd", True), ("v.nhdr", False), ("v.nhdr", True)])  # fmt: skip
def test_files_written_by_simpleitk_pass(tmp_path, volume, name, compress):
    path = _write(volume, tmp_path / name, compress)
    check = check_nrrd_file if name.endswith(("nrrd", "nhdr")) else check_metaimage_file
    layout = check(path)
    assert layout.shape == (7, 6, 5) and layout.data_bytes == 7 * 6 * 5 * 4
    vec = sitk.Image([3, 4, 5], sitk.sitkVectorFloat32, 3)
    assert check(_write(vec, tmp_path / f"vec_{name}", compress)).components == 3


@pytest.mark.parametrize(
    "old, new, message",
    [
        (b"NDims = 3", b"NDims = -1", "invalid MetaImage header: NDims = -1: 2 to 5 dimensions are supported"),  # segfaulted ITK
        (b"DimSize = 7 6 5", b"DimSize = 7 0 5", r"DimSize = \[7, 0, 5\]: every size must be at least 1"),
        (b"DimSize = 7 6 5", b"DimSize = 7 6", "DimSize = '7 6': 3 values expected, got 2"),
        (b"ElementType = MET_FLOAT", b"ElementType = MET_FLOATY", "ElementType = 'MET_FLOATY'"),
        (b"ElementSpacing = 0.5", b"ElementSpacing = -0.5", r"ElementSpacing = \[-0.5, 0.75, 2.0\]: voxel sizes must be positive"),
        (b"Offset = 1 2 3", b"Offset = nan 2 3", "Offset = 'nan 2 3': not finite"),  # became 0
        (b"Offset = 1 2 3", b"Offset = 1e308 2 3", "Offset = '1e308 2 3': not finite or beyond 1e"),  # -inf in the affine
        (b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 1 0 0 0 0 1", "axes 0 and 1 are not orthogonal"),
        (b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 2 0 0 0 1 0 0 0 1", "not a rotation"),
        (b"CompressedData = False", b"CompressedData = maybe", "CompressedData = 'maybe': True or False expected"),
        # ITK printed "Uncompress failed" and returned uninitialised memory as the image
        (b"CompressedData = False", b"CompressedData = True", "CompressedDataSize is missing with CompressedData = True"),
        (b"CompressedData = False", b"CompressedData = True\nCompressedDataSize = 840",
         "the MetaImage voxel data is not a valid compressed stream"),
        (b"DimSize = 7 6 5", b"DimSize = 7 6 4", "declares 672 bytes of voxel data, the file holds 840"),
        (b"ElementType = MET_FLOAT", b"ElementType = MET_DOUBLE", "truncated MetaImage file: 1680 bytes of voxel data declared, only 840"),
        (b"ElementDataFile = LOCAL", b"ElementDataFile = LIST", "data split over several files is not supported"),
        (b"BinaryDataByteOrderMSB = False\n", b"BinaryDataBy\xef\xbb\x90", "line 'BinaryDataBy.*' is not 'key = value'"),
        (b"ElementDataFile = LOCAL", b"HeaderSize = 100\nElementDataFile = LOCAL", "HeaderSize = 100 with ElementDataFile = LOCAL"),
    ],
)
def test_lying_metaimage_headers_are_refused(tmp_path, volume, old, new, message):
    bad = _edit(_write(volume, tmp_path / "v.mha"), old, new, "bad.mha")
    with pytest.raises(DataError, match=f"^{bad}: .*" + message):
        check_metaimage_file(bad)


def test_compressed_metaimage_must_decompress_to_the_declared_size(tmp_path, volume):
    path = _write(volume, tmp_path / "c.mha", compress=True)
    with pytest.raises(DataError, match="decompresses to more than the 672 bytes the header declares"):
        check_metaimage_file(_edit(path, b"DimSize = 7 6 5", b"DimSize = 7 6 4", "fewer.mha"))
    with pytest.raises(DataError, match="decompresses to 840 bytes, the header declares 1008"):
        check_metaimage_file(_edit(path, b"DimSize = 7 6 5", b"DimSize = 7 6 6", "more.mha"))
    data = path.read_bytes()
    (tmp_path / "trunc.mha").write_bytes(data[:-20])
    with pytest.raises(DataError, match=r"trunc\.mha: .*CompressedDataSize"):
        check_metaimage_file(tmp_path / "trunc.mha")
    head, _, _ = data.partition(b"ElementDataFile = LOCAL\n")
    head = b"\n".join(ln for ln in head.split(b"\n") if not ln.startswith(b"CompressedDataSize"))
    stream = zlib.compress(bytes(840))[:-9]  # the stream ends early, and its declared size says so
    sized = head + f"\nCompressedDataSize = {len(stream)}".encode()
    (tmp_path / "early.mha").write_bytes(sized + b"\nElementDataFile = LOCAL\n" + stream)
    with pytest.raises(DataError, match=r"early\.mha: truncated MetaImage file: the compressed voxel data ends early"):
        check_metaimage_file(tmp_path / "early.mha")
    (tmp_path / "nosize.mha").write_bytes(head + b"ElementDataFile = LOCAL\n" + zlib.compress(bytes(840)))
    with pytest.raises(DataError, match=r"nosize\.mha: .*CompressedDataSize is missing"):  # ITK: "Uncompress failed"
        check_metaimage_file(tmp_path / "nosize.mha")
    # a bomb: a small stream that inflates far beyond the budget is refused from its header
    bomb_stream = zlib.compress(bytes(1 << 20))
    bomb = head.replace(b"DimSize = 7 6 5", b"DimSize = 1024 1024 1024")
    bomb += f"\nCompressedDataSize = {len(bomb_stream)}\nElementDataFile = LOCAL\n".encode()
    (tmp_path / "bomb.mha").write_bytes(bomb + bomb_stream)
    with pytest.raises(DataError, match=r"bomb\.mha: the MetaImage header .* declares 4\.0 GiB of decoded data"):
        check_metaimage_file(tmp_path / "bomb.mha", max_bytes=1 << 30)


@pytest.mark.parametrize(
    "old, new, message",
    [
        (b"space directions: (0.5,0,0) (0,0.75,0) (0,0,2)", b"space directions: none none none",
         r"space directions = 'none none none': spatial axis 0 \(kind 'domain'\) has no direction"),  # became 1 mm
        (b"space directions: (0.5,0,0) (0,0.75,0) (0,0,2)", b"space directions: (0.5,0,0) (0,0.75,0) (0,0,nan)",
         "space directions = '0,0,nan': not finite"),
        (b"space directions: (0.5,0,0) (0,0.75,0) (0,0,2)", b"space directions: (0.5,0,0) (0,0.75,0) (0,0.7,0)",
         "axes 1 and 2 are not orthogonal"),
        (b"space origin: (1,2,3)", b"space origin: (1e308,2,3)", "space origin = '1e308,2,3': not finite or beyond"),
        (b"sizes: 7 6 5", b"sizes: 7 6 4", "declares 672 bytes of voxel data, the file holds 840"),
        (b"sizes: 7 6 5", b"sizes: 7 -6 5", r"sizes = \[7, -6, 5\]"),
        (b"dimension: 3", b"dimension: -1", "dimension = -1"),
        (b"type: float", b"type: block", "type = 'block': not a scalar NRRD type"),
        (b"encoding: raw", b"encoding: bzip2", "encoding = 'bzip2': raw, gzip, ascii or hex expected"),
        (b"encoding: raw", b"encoding: gzip", "the NRRD voxel data is not a valid compressed stream"),
        (b"endian: little", b"endian: middle", "endian = 'middle'"),
    ],
)
def test_lying_nrrd_headers_are_refused(tmp_path, volume, old, new, message):
    bad = _edit(_write(volume, tmp_path / "v.nrrd"), old, new, "bad.nrrd")
    with pytest.raises(DataError, match=f"^{bad}: .*" + message):
        check_nrrd_file(bad)


def test_nrrd_without_geometry_is_refused_and_ascii_data_is_counted(tmp_path):
    head = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 3 2\nendian: little\nencoding: %s\n%s\n"
    data = np.arange(24, dtype=np.float32)
    (tmp_path / "nogeom.nrrd").write_bytes(head % (b"raw", b"") + data.tobytes())
    with pytest.raises(DataError, match="space directions and spacings are missing: the voxel size is unknown"):
        check_nrrd_file(tmp_path / "nogeom.nrrd")
    spaced = head % (b"%s", b"spacings: 1 1 2\n")
    (tmp_path / "ascii.nrrd").write_bytes(spaced % b"ascii" + " ".join(map(str, range(24))).encode())
    assert check_nrrd_file(tmp_path / "ascii.nrrd").shape == (4, 3, 2)
    (tmp_path / "short.nrrd").write_bytes(spaced % b"ascii" + " ".join(map(str, range(20))).encode())
    with pytest.raises(DataError, match="declares 24 values of ascii voxel data, the file holds 20"):
        check_nrrd_file(tmp_path / "short.nrrd")
    (tmp_path / "gz.nrrd").write_bytes(spaced % b"gzip" + gzip.compress(data.tobytes() + b"1234"))
    with pytest.raises(DataError, match="decompresses to more than the 96 bytes"):
        check_nrrd_file(tmp_path / "gz.nrrd")


# ------------------------------------------------------------------- through the reader (issue 20)


REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def mha(tmp_path) -> Path:
    img = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(5, 4, 3))
    img.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "v.mha"))
    return tmp_path / "v.mha"


def test_metaimage_that_segfaulted_itk_is_refused_in_a_fresh_interpreter(mha):
    """NDims = -1 made ITK segfault inside the reader (the interpreter died). A child interpreter, so that a
    regression fails this test instead of killing the test run."""
    bad = _edit(mha, b"NDims = 3", b"NDims = -1", "ndims.mha")
    code = (
        "import sys; from monai_patcher.data import SimpleITKReader, DataError\n"
        "try:\n    SimpleITKReader().read_image(sys.argv[1])\nexcept DataError as e:\n    print(e)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{bad}: invalid MetaImage header: NDims = -1: 2 to 5 dimensions are supported" in proc.stdout


@pytest.mark.parametrize(
    "old, new, message",
    [
        # ITK printed "Uncompress failed" and returned uninitialised memory (zeros, NaN or garbage) with status ok
        (b"CompressedData = False", b"CompressedData = True", "CompressedDataSize is missing with CompressedData = True"),
        (b"CompressedData = False", b"CompressedData = True\nCompressedDataSize = 240",
         "the MetaImage voxel data is not a valid compressed stream"),
        (b"Offset = 1 2 3", b"Offset = nan 2 3", "Offset = 'nan 2 3': not finite"),  # became 0
        (b"Offset = 1 2 3", b"Offset = 1e308 2 3", "Offset = '1e308 2 3': not finite or beyond"),  # -inf in the affine
    ],
)
def test_metaimage_garbage_is_refused(mha, old, new, message):
    bad = _edit(mha, old, new, "bad.mha")
    with pytest.raises(DataError, match=f"^{bad}: .*{message}"):
        load_image(bad)


def test_nrrd_without_directions_is_refused(tmp_path, mha):
    sitk.WriteImage(sitk.ReadImage(str(mha)), str(tmp_path / "v.nrrd"))
    bad = _edit(tmp_path / "v.nrrd", b"space directions: (1,0,0) (0,1,0) (0,0,1)", b"space directions: none none none",
                "none.nrrd")  # fmt: skip
    with pytest.raises(DataError, match=r"none\.nrrd: invalid NRRD header: space directions .* no direction"):
        load_image(bad)  # was read as a 1 mm grid


def test_nrrd_space_must_be_one_itk_relates_to_the_patient(tmp_path, mha):
    sitk.WriteImage(sitk.ReadImage(str(mha)), str(tmp_path / "v.nrrd"))
    bad = _edit(tmp_path / "v.nrrd", b"space: left-posterior-superior", b"space: scanner-xyz", "scanner.nrrd")
    with pytest.raises(DataError, match=r"scanner\.nrrd: invalid NRRD header: space = 'scanner-xyz': one of RAS, LAS, LPS"):
        load_image(bad)
    ras = _edit(tmp_path / "v.nrrd", b"space: left-posterior-superior", b"space: right-anterior-superior", "ras.nrrd")
    # the same numbers in a RAS header: the RAS affine holds them as written (ITK converts the header to LPS)
    expected = np.array([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])
    np.testing.assert_allclose(load_image(ras).affine.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(load_image(tmp_path / "v.nrrd").affine.numpy(), np.diag([-1, -1, 1, 1]) @ expected, atol=1e-6)

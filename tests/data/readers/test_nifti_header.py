"""NIfTI header validation (monai_patcher.data.readers.nifti_header): every lying field is named, the declared size is the
file's size, and a .nii.gz is never decompressed past its declared size."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest

from monai_patcher.data import DataError
from monai_patcher.data.readers.nifti_header import check_nifti_header, read_nifti_bytes

# NIfTI-1 field offsets (little endian)
_FIELDS = {"sizeof_hdr": (0, "<i"), "dim0": (40, "<h"), "dim1": (42, "<h"), "dim3": (46, "<h"), "datatype": (70, "<h"),
           "bitpix": (72, "<h"), "pixdim0": (76, "<f"), "pixdim1": (80, "<f"), "pixdim2": (84, "<f"),
           "vox_offset": (108, "<f"), "scl_slope": (112, "<f"), "scl_inter": (116, "<f"), "qform_code": (252, "<h"),
           "sform_code": (254, "<h"), "quatern_b": (256, "<f"), "srow_x0": (280, "<f"), "magic": (344, "4s")}  # fmt: skip


def _nifti(shape=(4, 5, 6), dtype=np.float32) -> bytes:
    img = nib.Nifti1Image(np.arange(np.prod(shape), dtype=dtype).reshape(shape), np.diag([1.5, 1.5, 3.0, 1.0]))
    return img.to_bytes()


def _edit(data: bytes, **fields) -> bytes:
    b = bytearray(data)
    for name, value in fields.items():
        offset, fmt = _FIELDS[name]
        b[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(b)


def test_valid_headers_pass_and_describe_the_file():
    data = _nifti()
    layout = check_nifti_header("x.nii", data)
    assert (layout.version, layout.shape, layout.datatype, layout.data_offset) == (1, (4, 5, 6), "float32", 352)
    assert layout.size == len(data) and not layout.scaled
    two = nib.Nifti2Image(np.zeros((3, 4, 5, 2), np.int16), np.eye(4)).to_bytes()
    layout2 = check_nifti_header("y.nii", two)
    assert (layout2.version, layout2.shape, layout2.size) == (2, (3, 4, 5, 2), len(two))
    big_endian = nib.Nifti1Image(np.zeros((3, 4, 5), ">i2"), np.eye(4))
    assert check_nifti_header("be.nii", big_endian.to_bytes()).shape == (3, 4, 5)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"sizeof_hdr": 349}, r"not a readable image: not a NIfTI file \(sizeof_hdr = 349"),
        ({"magic": b"ni1\x00"}, r"magic = b'ni1'.*\.hdr/\.img pair"),
        ({"dim0": 1}, r"dim\[0\] = 1: the number of dimensions must be 2 to 7"),
        ({"dim0": -1}, r"dim\[0\] = -1"),
        ({"dim0": 8}, r"dim\[0\] = 8"),
        ({"dim1": 0}, r"dim\[1\] = 0: every size must be at least 1"),
        ({"dim3": -5}, r"dim\[3\] = -5"),
        ({"datatype": 7}, "datatype = 7: not a NIfTI data type"),
        ({"datatype": 32, "bitpix": 64}, r"datatype = 32 \(complex64\): complex, colour and 128-bit voxels are not supported"),
        ({"bitpix": 8}, "bitpix = 8 contradicts datatype float32"),
        ({"pixdim1": float("nan")}, r"voxel size pixdim\[1\] = nan"),
        ({"pixdim2": 0.0}, r"voxel size pixdim\[2\] = 0.0"),
        ({"pixdim1": 1e30}, r"voxel size pixdim\[1\] = 1\.0000000\d*e\+30"),
        ({"vox_offset": 100.0}, "vox_offset = 100.0: the voxels of a single-file NIfTI-1 start at a whole byte offset of at least 352"),
        ({"vox_offset": 352.5}, "vox_offset = 352.5"),
        ({"vox_offset": float("inf")}, "vox_offset = inf"),
        ({"scl_slope": float("inf")}, "scl_slope = inf"),
        ({"scl_slope": 2.0, "scl_inter": float("nan")}, "scl_inter = nan with scl_slope = 2.0"),
        ({"scl_slope": float("nan"), "scl_inter": -10.0}, "scl_inter = -10.0 with scl_slope = nan .*without a slope"),
        ({"qform_code": 9}, "qform_code = 9: not a NIfTI transform code"),
        ({"sform_code": -1}, "sform_code = -1"),
        ({"qform_code": 1, "quatern_b": float("nan")}, "qform .* is not finite"),
        ({"qform_code": 1, "quatern_b": 2.0}, "qform quaternion .* has a norm above 1"),
        ({"sform_code": 1, "srow_x0": float("inf")}, "sform srow_x/y/z = .* is not finite"),
        ({"sform_code": 1, "srow_x0": 0.0}, "sform srow_x/y/z = .* is singular"),
    ],
)
def test_each_lying_field_is_named(fields, message):
    with pytest.raises(DataError, match=r"^bad\.nii: (invalid NIfTI header: )?" + message):
        check_nifti_header("bad.nii", _edit(_nifti(), **fields))


def test_negative_voxel_size_and_unscaled_slopes_are_valid():
    """nibabel and ITK read a negative pixdim as its absolute value; scl_slope 0 or NaN means "not scaled"."""
    for fields in ({"pixdim2": -1.5}, {"scl_slope": 0.0, "scl_inter": float("nan")}, {"scl_slope": float("nan")}):
        assert not check_nifti_header("ok.nii", _edit(_nifti(), **fields)).scaled
    assert check_nifti_header("s.nii", _edit(_nifti(), scl_slope=2.0, scl_inter=1.0)).scaled


def test_declared_size_must_be_the_file_size(tmp_path):
    data = _nifti()
    (tmp_path / "ok.nii").write_bytes(data)
    got, layout = read_nifti_bytes(tmp_path / "ok.nii")
    assert got == data and layout.shape == (4, 5, 6)
    (tmp_path / "short.nii").write_bytes(data[:-4])
    with pytest.raises(DataError, match=r"short\.nii: truncated NIfTI file: 832 bytes expected .*only 828 present"):
        read_nifti_bytes(tmp_path / "short.nii")
    # a header edited to declare fewer voxels than the file holds (dim[3] 6 -> 5): the voxels would be reinterpreted
    (tmp_path / "fewer.nii").write_bytes(_edit(data, dim3=5))
    with pytest.raises(DataError, match=r"fewer\.nii: the NIfTI header declares 752 bytes .* the file holds 832 bytes"):
        read_nifti_bytes(tmp_path / "fewer.nii")


def test_gzip_is_decompressed_only_to_the_declared_size(tmp_path, monkeypatch):
    data = _nifti()
    (tmp_path / "ok.nii.gz").write_bytes(gzip.compress(data))
    assert read_nifti_bytes(tmp_path / "ok.nii.gz")[0] == data
    (tmp_path / "more.nii.gz").write_bytes(gzip.compress(_edit(data, dim3=5)))
    with pytest.raises(DataError, match=r"more\.nii\.gz: .* the file holds more than 752 bytes"):
        read_nifti_bytes(tmp_path / "more.nii.gz")
    (tmp_path / "trunc.nii.gz").write_bytes(gzip.compress(data)[:-30])
    with pytest.raises(DataError, match=r"trunc\.nii\.gz: truncated gzip file"):
        read_nifti_bytes(tmp_path / "trunc.nii.gz")
    # a bomb: 1024^3 float32 declared (4 GiB) in a few kB; refused from the header, nothing decompressed beyond it
    bomb = bytearray(data[:352])
    bomb[42:48] = struct.pack("<3h", 1024, 1024, 1024)
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(bytes(bomb) + bytes(1 << 20)))
    reads = []
    real_read = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, n=-1: reads.append(n) or real_read(self, n))
    with pytest.raises(DataError, match=r"bomb\.nii\.gz: the NIfTI header \(1024 x 1024 x 1024 float32\) declares "
                                        r"4\.0 GiB of decoded data, more than the reading budget of 1\.0 GiB"):
        read_nifti_bytes(tmp_path / "bomb.nii.gz", max_bytes=1 << 30)
    assert reads == [544]  # only the header was decompressed

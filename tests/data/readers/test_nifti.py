"""NIfTI reading (monai_patcher/data/readers/nifti.py): truncation, NaN/Inf, sform/qform like nibabel, read once."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import NibabelReader
from monai.transforms import LoadImage, LoadImaged, SaveImaged

from monai_patcher.data import DataError, SimpleITKReader
from readers_helpers import assert_clean_error, load_image, write_nifti


def test_truncated_gzip_nifti(tmp_path, oblique_nifti):
    path, _, _ = oblique_nifti
    raw = path.read_bytes()
    p = tmp_path / "cut.nii.gz"
    p.write_bytes(raw[: len(raw) // 2])
    before = p.read_bytes()
    assert_clean_error(p, "truncated")
    assert p.read_bytes() == before


def test_truncated_plain_nifti(tmp_path, oblique_nifti):
    path, _, _ = oblique_nifti
    raw = gzip.decompress(path.read_bytes())
    p = tmp_path / "cut.nii"
    p.write_bytes(raw[:-100])
    assert_clean_error(p, "truncated NIfTI")


def test_real_isles_geometry_matches_nibabel(shared_path_fn):
    for kind in ("dwi", "adc"):
        p = shared_path_fn("ISLES-2022-case0001", "data", f"sub-strokecase0001_ses-0001_{kind}.nii.gz")
        a = LoadImage(reader=SimpleITKReader(), image_only=True, dtype=None)(p)
        n = nib.load(p)
        assert tuple(a.shape) == n.shape == (112, 112, 73)
        np.testing.assert_allclose(a.affine.numpy(), n.affine, atol=1e-3)
        np.testing.assert_allclose(a.meta["spacing"], n.header.get_zooms(), atol=1e-4)
        np.testing.assert_array_equal(a.numpy(), np.asarray(n.dataobj))
        assert nib.aff2axcodes(a.affine.numpy()) == ("L", "A", "S")


def test_nan_and_inf_voxels_are_kept(tmp_path):
    """ITK's NIfTI reader turns NaN/Inf into 0; the reader must not hide them from the checks."""
    a = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    a[1, 2, 3] = np.nan
    a[2, 2, 2] = np.inf
    p = write_nifti(tmp_path / "nan.nii.gz", a, np.eye(4))
    out = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    assert int(torch.isnan(out).sum()) == 1 and int(torch.isinf(out).sum()) == 1
    np.testing.assert_array_equal(np.nan_to_num(out.numpy(), posinf=7), np.nan_to_num(a, posinf=7))


_QFORM = np.array([[2, 0, 0, -10], [0, 2, 0, -20], [0, 0, 2, -30], [0, 0, 0, 1.0]])


_SFORM = np.array(  # the same voxel sizes, rotated by 0.2 rad about z and shifted (a registration output)
    [[2 * np.cos(0.2), -2 * np.sin(0.2), 0, 5], [2 * np.sin(0.2), 2 * np.cos(0.2), 0, 7], [0, 0, 2, 9], [0, 0, 0, 1.0]]
)


def _xform_nifti(path, arr, qform, sform, qform_code=1, sform_code=2):
    img = nib.Nifti1Image(arr, None)
    img.set_qform(qform, code=qform_code)
    img.set_sform(sform, code=sform_code)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("sform_code", [2, 3, 4])
@pytest.mark.parametrize("shape", [(6, 7, 5), (6, 7, 5, 2)])
def test_nifti_sform_wins_over_qform_like_nibabel(tmp_path, caplog, sform_code, shape):
    """A file whose sform (code 2 'aligned', 3 'Talairach', 4 'MNI': FSL/ANTs registration output) differs from its
    qform: ITK places it by the qform, nibabel and MONAI's ``NibabelReader`` by the sform. The reader gives
    ``NibabelReader``'s affine (3D and 4D), and says so in the log."""
    arr = np.random.default_rng(0).random(shape).astype(np.float32)
    p = _xform_nifti(tmp_path / "reg.nii.gz", arr, _QFORM, _SFORM, sform_code=sform_code)
    with caplog.at_level("INFO", logger="monai_patcher.data.readers"):
        a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    b = LoadImage(reader=NibabelReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), _SFORM, atol=1e-4)
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(a.numpy(), arr)
    np.testing.assert_allclose(a.meta["spacing"], [2, 2, 2], atol=1e-5)
    assert "sform" in caplog.text and str(p) in caplog.text


def test_nifti_sform_over_qform_survives_save(tmp_path):
    """The mask written by ``SaveImaged`` lands where the input is for nibabel (the sform), not at the qform."""
    arr = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    p = _xform_nifti(tmp_path / "reg.nii.gz", arr, _QFORM, _SFORM, sform_code=2)
    d = LoadImaged("img", reader=SimpleITKReader())({"img": str(p)})
    SaveImaged("img", output_dir=tmp_path / "out", output_postfix="seg", separate_folder=False, resample=False,
               print_log=False)(d)  # fmt: skip
    np.testing.assert_allclose(nib.load(tmp_path / "out" / "reg_seg.nii.gz").affine, nib.load(p).affine, atol=1e-4)


@pytest.mark.parametrize("sform_code", [1, 2])
def test_nifti_sform_with_voxel_sizes_other_than_pixdim_like_nibabel_reader(tmp_path, sform_code):
    """An sform whose voxel sizes disagree with ``pixdim`` while the qform's agree: ``NibabelReader`` (MONAI's
    ``correct_nifti_header_if_necessary``) takes the qform; so does the reader, whatever the sform_code."""
    arr = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    sform = np.array([[2, 0, 0, 10], [0, 3, 0, 18], [0, 0, 4, 28], [0, 0, 0, 1.0]])
    p = _xform_nifti(tmp_path / "x.nii.gz", arr, np.eye(4), sform, sform_code=sform_code)  # pixdim 1 (the qform's)
    a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    b = LoadImage(reader=NibabelReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(a.meta["spacing"], [1, 1, 1], atol=1e-6)


def test_nifti_plain_xforms_are_left_to_itk(tmp_path):
    """Files without a competing sform keep ITK's geometry: qform only (both readers use it), and neither xform
    (ITK's pixdim grid; nibabel's 'best affine' there is a made-up centred one, not in the file), which is refused
    unless allow_missing_geometry."""
    arr = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    p = _xform_nifti(tmp_path / "q.nii.gz", arr, _SFORM, np.eye(4), qform_code=1, sform_code=0)
    a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), _SFORM, atol=1e-4)
    b = LoadImage(reader=NibabelReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
    p = _xform_nifti(tmp_path / "none.nii.gz", arr, _QFORM, _SFORM, qform_code=0, sform_code=0)
    assert_clean_error(p, "NIfTI file without orientation")  # ITK and nibabel place it differently: asked for
    a = LoadImage(reader=SimpleITKReader(allow_missing_geometry=True), image_only=True)(p)
    itk = sitk.ReadImage(str(p))
    np.testing.assert_allclose(a.meta["spacing"], itk.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.affine.numpy()[:3, 3], np.multiply(itk.GetOrigin(), [-1, -1, 1]), atol=1e-6)


def test_nifti_sheared_sform_with_a_rigid_qform_keeps_the_qform_and_warns(tmp_path, caplog):
    """A sheared sform cannot be an ITK geometry: the file's rigid qform is used, with a warning saying by how much
    the placement differs from ``NibabelReader``'s."""
    arr = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    sheared = np.array([[2, 0.5, 0, 1], [0, np.sqrt(3.75), 0, 2], [0, 0, 2, 3], [0, 0, 0, 1.0]])  # 2 mm columns
    p = _xform_nifti(tmp_path / "shear.nii.gz", arr, _QFORM, sheared, sform_code=2)
    with caplog.at_level("WARNING", logger="monai_patcher.data.readers"):
        a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), _QFORM, atol=1e-4)
    assert "axes not orthogonal" in caplog.text and str(p) in caplog.text and "qform" in caplog.text


def test_nifti_sheared_affine_only_is_refused_clearly(tmp_path):
    """A sheared affine with no rigid qform: no ITK geometry can represent it, refused with a message saying so."""
    arr = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    sheared = np.array([[2, 0.5, 0, 1], [0, 2, 0, 2], [0, 0, 3, 3], [0, 0, 0, 1.0]])
    p = _xform_nifti(tmp_path / "shear.nii.gz", arr, np.eye(4), sheared, qform_code=0, sform_code=2)
    assert_clean_error(p, "axes not orthogonal")


def test_real_nifti_registration_header_matches_nibabel_reader(shared_path_fn, tmp_path):
    """The real ISLES'22 DWI with the header of a registration output (sform code 2 'aligned' moved 12 mm and
    rotated, qform as scanned): same affine and array as ``NibabelReader``."""
    src = nib.load(shared_path_fn("ISLES-2022-case0001", "data", "sub-strokecase0001_ses-0001_dwi.nii.gz"))
    c, s = np.cos(0.1), np.sin(0.1)
    moved = np.array([[c, -s, 0, 12], [s, c, 0, -4], [0, 0, 1, 3], [0, 0, 0, 1.0]]) @ src.affine
    img = nib.Nifti1Image(np.asarray(src.dataobj), None, src.header)
    img.set_qform(src.affine, code=1)
    img.set_sform(moved, code=2)
    p = tmp_path / "dwi_reg.nii.gz"
    nib.save(img, str(p))
    a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    b = LoadImage(reader=NibabelReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-3)
    np.testing.assert_allclose(a.affine.numpy(), moved, atol=1e-3)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize(
    "parts",
    [
        ("BraTS2015-DeepMedic-examples", "train", "brats_2013_pat0005_1", "Flair_subtrMeanDivStd.nii.gz"),  # sform 2
        ("BraTS2015-DeepMedic-examples", "train", "brats_2013_pat0005_1", "OTMultiClass.nii.gz"),  # sform 1, qform 2
        ("ISLES-2022-case0001", "data", "sub-strokecase0001_ses-0001_adc.nii.gz"),
        ("package-bundled-samples", "nibabel", "tests", "data", "example4d.nii.gz"),
    ],
)
def test_real_nifti_affine_matches_nibabel_reader(shared_path_fn, parts):
    p = shared_path_fn(*parts)
    a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    b = LoadImage(reader=NibabelReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-3)
    assert a.shape == b.shape


def test_nan_voxels_of_4d_nifti_are_kept(tmp_path):
    """A float 4D NIfTI (a multi-b-value DWI) with a NaN: it comes back where it was, not as a raw RuntimeError."""
    a = np.random.default_rng(0).random((4, 5, 6, 3)).astype(np.float32)
    a[0, 1, 2, 1] = np.nan
    out = LoadImage(reader=SimpleITKReader(), image_only=True)(write_nifti(tmp_path / "nan4d.nii.gz", a, np.eye(4)))
    assert tuple(out.shape) == (4, 5, 6, 3)
    np.testing.assert_array_equal(out.numpy(), a)  # NaN compares equal to NaN in assert_array_equal


def test_nan_voxels_of_a_singleton_4d_nifti_are_kept(tmp_path):
    """An (x, y, z, 1) float NIfTI: ITK drops the singleton axis; its NaN must still come back (not as 0)."""
    b = np.random.default_rng(0).random((4, 5, 6, 1)).astype(np.float32)
    b[0, 1, 2, 0] = np.nan
    out = LoadImage(reader=SimpleITKReader(), image_only=True)(write_nifti(tmp_path / "nan_t1.nii.gz", b, np.eye(4)))
    assert tuple(out.shape) == (4, 5, 6) and bool(np.isnan(out.numpy()[0, 1, 2]))
    np.testing.assert_array_equal(out.numpy(), b[..., 0])


def _nifti_variants(folder: Path) -> list[Path]:
    """NIfTI files of every scalar type ITK reads as stored, 2D to 4D, gz or not, big-endian, with an extension,
    with a gap before the voxels, and ones the in-memory path leaves to ITK (scaled, vox_offset 0)."""
    rng = np.random.default_rng(1)
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[-1.5 * c, -2 * s, 0, 10], [1.5 * s, -2 * c, 0, -20], [0, 0, 3, 5], [0, 0, 0, 1]])
    paths = []
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64, np.float32, np.float64):
        for shape in ((5, 6), (5, 6, 7), (5, 6, 7, 3), (5, 6, 7, 1)):
            a = (rng.random(shape) * 100).astype(dtype)
            ext = ".nii.gz" if len(shape) % 2 else ".nii"
            p = folder / f"{np.dtype(dtype).name}_{'x'.join(map(str, shape))}{ext}"
            nib.save(nib.Nifti1Image(a, affine, dtype=a.dtype), str(p))
            paths.append(p)
    a = rng.random((4, 5, 6)).astype(np.float32)
    a[1, 1, 1], a[2, 2, 2] = np.nan, -np.inf
    nib.Nifti1Image(a.astype(">f4"), affine).to_filename(folder / "big_endian.nii")
    img = nib.Nifti1Image(a, affine)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment" * 5))
    img.to_filename(folder / "extension.nii.gz")
    img = nib.Nifti1Image(a, affine)
    img.header.set_data_offset(480)
    img.to_filename(folder / "gap.nii.gz")
    nib.Nifti1Image(a, affine).to_filename(folder / "scaled.nii")
    raw = bytearray((folder / "scaled.nii").read_bytes())
    raw[112:120] = struct.pack("<ff", 2.0, 1.0)  # scl_slope, scl_inter (nibabel's save would reset them)
    (folder / "scaled.nii").unlink()
    (folder / "scaled.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    return paths + [folder / n for n in ("big_endian.nii", "extension.nii.gz", "gap.nii.gz", "scaled.nii.gz")]


def test_nifti_read_from_memory_is_what_itk_reads(tmp_path):
    """The voxels decoded from the bytes already in memory (ITK reading only the header) give the image ITK's
    ReadImage gives: pixel type, size, geometry, metadata, values (NaN/Inf kept, where ITK writes 0)."""
    from monai_patcher.data.readers.itk import read_header
    from monai_patcher.data.readers.nifti import image_from_memory, read_nifti

    fast = 0
    for p in _nifti_variants(tmp_path):
        header = read_header(str(p))
        img = image_from_memory(read_nifti(str(p)), header)
        ref = sitk.ReadImage(str(p))
        if p.name == "scaled.nii.gz":
            assert img is None  # left to ITK (scl_slope)
            continue
        assert img is not None, p.name
        fast += 1
        assert (img.GetPixelID(), img.GetSize()) == (ref.GetPixelID(), ref.GetSize()), p.name
        assert (img.GetSpacing(), img.GetOrigin(), img.GetDirection()) == (
            ref.GetSpacing(), ref.GetOrigin(), ref.GetDirection()
        ), p.name  # fmt: skip
        itk_only = {"ITK_original_direction", "ITK_original_spacing"}  # "[UNKNOWN_PRINT_CHARACTERISTICS]" values
        assert {k: img.GetMetaData(k) for k in img.GetMetaDataKeys()} == {
            k: ref.GetMetaData(k) for k in ref.GetMetaDataKeys() if k not in itk_only
        }, p.name  # fmt: skip
        np.testing.assert_array_equal(
            np.nan_to_num(sitk.GetArrayFromImage(img), nan=0, posinf=0, neginf=0), sitk.GetArrayFromImage(ref)
        )
    assert fast == 39


def test_nifti_loads_like_nibabel_reader_on_both_paths(tmp_path):
    """Through LoadImage, every variant (read from memory or by ITK) equals NibabelReader: values (NaN, Inf and
    scaling included), shape and affine."""
    for p in _nifti_variants(tmp_path):
        a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
        b = LoadImage(reader=NibabelReader(), image_only=True)(p)
        b = b.squeeze(-1) if b.ndim == 4 and b.shape[-1] == 1 else b  # ITK drops a trailing singleton axis
        assert a.shape == b.shape, p.name
        np.testing.assert_array_equal(a.numpy(), b.numpy().astype(a.numpy().dtype), err_msg=p.name)
        if a.affine.shape == b.affine.shape:  # 2D: this reader's affine is 3x3 (as ITKReader's), nibabel's 4x4
            np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4, err_msg=p.name)
        else:
            assert p.name.endswith("_5x6.nii"), p.name
    scaled = LoadImage(reader=SimpleITKReader(), image_only=True)(tmp_path / "scaled.nii.gz").numpy()
    assert np.isnan(scaled[1, 1, 1]) and scaled[2, 2, 2] == -np.inf  # ITK read it, the NaN/Inf were put back


def test_plain_gzipped_nifti_is_decompressed_once(tmp_path, monkeypatch):
    """A plain float NIfTI: one decompression (by this reader), no voxel read by ITK, no re-read by nibabel; the
    NaN still comes back."""
    from monai_patcher.data.readers import nifti_header, sitk_reader

    a = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    a[1, 2, 3] = np.nan
    p = write_nifti(tmp_path / "once.nii.gz", a, np.eye(4))
    calls = {"decompress": 0}
    decompress, stream = gzip.decompress, gzip.GzipFile.__init__

    def counting(data):
        calls["decompress"] += 1
        return decompress(data)

    def counting_stream(self, *args, **kwargs):  # the reader decompresses in chunks (up to the declared size only)
        calls["decompress"] += 1
        stream(self, *args, **kwargs)

    def no_voxels(*args, **kwargs):
        raise AssertionError("ITK read the voxels again")

    monkeypatch.setattr(nifti_header.gzip, "decompress", counting)
    monkeypatch.setattr(nifti_header.gzip.GzipFile, "__init__", counting_stream)
    monkeypatch.setattr(sitk_reader.sitk, "ReadImage", no_voxels)
    out = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    assert calls["decompress"] == 1
    np.testing.assert_array_equal(out.numpy(), a)


def test_corrupt_gzip_nifti_crc(tmp_path, oblique_nifti):
    """A gzip stream whose CRC does not match its data (a flipped bit) is refused, not read."""
    path, _, _ = oblique_nifti
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF  # in the CRC-32 of the trailer
    p = tmp_path / "crc.nii.gz"
    p.write_bytes(bytes(raw))
    assert_clean_error(p, "corrupt")  # by ITK reading the header, or by the full decompression


def test_truncated_nifti_with_a_gap_before_the_voxels(tmp_path):
    """vox_offset 480 (a gap after the header): the expected size counts from there, so a file 100 bytes short is
    refused (ITK would zero-fill the missing voxels)."""
    img = nib.Nifti1Image(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), np.eye(4))
    img.header.set_data_offset(480)
    img.to_filename(tmp_path / "gap.nii")
    raw = (tmp_path / "gap.nii").read_bytes()
    assert len(raw) == 480 + 6 * 7 * 8 * 4
    p = tmp_path / "gap_cut.nii.gz"
    p.write_bytes(gzip.compress(raw[:-100]))
    assert_clean_error(p, f"truncated NIfTI file: {len(raw)} bytes expected")


# ------------------------------------------------------------------- through the reader (issue 20)


def _edited_nifti(tmp_path, name="v.nii", edits=None) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    b = bytearray(path.read_bytes())
    for offset, (fmt, value) in (edits or {}).items():
        b[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(b))
    return path


def test_nifti_holes_of_the_old_guarantee(tmp_path):
    # a negative pixdim: nibabel and ITK read it as its absolute value; SetSpacing raised a bare RuntimeError
    neg = _edited_nifti(tmp_path, "neg.nii", {84: ("<f", -1.5)})
    a, b = load_image(neg), LoadImage(reader=NibabelReader(), image_only=True)(neg)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-5)
    # dim[0] = 1: a bare RuntimeError from SimpleITK before
    with pytest.raises(DataError, match=r"dim0\.nii: invalid NIfTI header: dim\[0\] = 1"):
        load_image(_edited_nifti(tmp_path, "dim0.nii", {40: ("<h", 1)}))
    # fewer voxels declared than the file holds: the voxels were reinterpreted
    with pytest.raises(DataError, match=r"fewer\.nii: the NIfTI header declares 400 bytes .* the file holds 592"):
        load_image(_edited_nifti(tmp_path, "fewer.nii", {46: ("<h", 1)}))


def test_nifti_gz_bomb_is_refused_from_its_header(tmp_path):
    head = bytearray(_edited_nifti(tmp_path).read_bytes()[:352])
    head[42:48] = struct.pack("<3h", 1024, 1024, 1024)
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(bytes(head) + bytes(1 << 22)))  # 4 GiB declared, 4 MB of zeros
    with pytest.raises(DataError, match=r"bomb\.nii\.gz: the NIfTI header \(1024 x 1024 x 1024 float32\) declares "
                                        r"4\.0 GiB of decoded data, more than the reading budget of 256\.0 MiB"):  # fmt: skip
        load_image(tmp_path / "bomb.nii.gz", max_bytes=256 << 20)


def test_nifti_with_binary_garbage_in_its_text_fields_is_read(tmp_path):
    """Found by the fuzz campaign (--seed 21): non-UTF-8 bytes in ``descrip`` made the copy of the header fields
    raise a TypeError from SimpleITK's SetMetaData (not a DataError, no file name). The voxels are valid: read."""
    path = _edited_nifti(tmp_path, "descrip.nii")
    b = bytearray(path.read_bytes())
    b[148:228] = bytes(range(176, 256))  # descrip: 80 bytes, none of them valid UTF-8 alone
    path.write_bytes(bytes(b))
    np.testing.assert_array_equal(load_image(path).numpy(), np.arange(60, dtype=np.float32).reshape(3, 4, 5))


def test_nifti_without_orientation_is_refused_unless_allowed(tmp_path):
    """qform_code = sform_code = 0 (the Analyze convention, or a flipped code): ITK put it at the origin without
    rotation, nibabel centred it with x flipped: the fuzz campaign (--seed 22) found the two disagreeing."""
    path = _edited_nifti(tmp_path, "nocodes.nii", {252: ("<h", 0), 254: ("<h", 0)})
    with pytest.raises(DataError, match=r"nocodes\.nii: NIfTI file without orientation \(qform_code and sform_code "
                                        r"are both 0.*allow_missing_geometry=True"):  # fmt: skip
        load_image(path)
    np.testing.assert_allclose(load_image(path, allow_missing_geometry=True).affine.numpy(), np.diag([-1.5, -1.5, 3, 1]))

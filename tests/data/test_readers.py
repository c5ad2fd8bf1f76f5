"""SimpleITKReader: synthetic round trips, bad input, and the real samples in ../shared/data."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import NibabelReader
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImage,
    LoadImaged,
    Orientationd,
    SaveImaged,
    Spacingd,
)

from monai_patcher.data import DataError, SimpleITKReader, dicom_series_files


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _write_nifti(path, arr, affine):
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


@pytest.fixture
def oblique_nifti(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.random((7, 9, 5)).astype(np.float32)
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[-1.5 * c, -2 * s, 0, 10], [1.5 * s, -2 * c, 0, -20], [0, 0, 3, 5], [0, 0, 0, 1]])
    return _write_nifti(tmp_path / "vol.nii.gz", arr, affine), arr, affine


def test_nifti_matches_nibabel_reader(oblique_nifti):
    path, arr, affine = oblique_nifti
    a = LoadImage(reader=SimpleITKReader(), image_only=True)(path)
    b = LoadImage(reader=NibabelReader(), image_only=True)(path)
    np.testing.assert_array_equal(a.numpy(), arr)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), affine, atol=1e-5)
    np.testing.assert_allclose(a.meta["original_affine"], b.meta["original_affine"], atol=1e-5)
    assert str(a.meta["space"]) == "RAS"
    np.testing.assert_allclose(a.meta["spacing"], [1.5, 2, 3], atol=1e-6)
    assert list(a.meta["spatial_shape"]) == [7, 9, 5]


def test_reverse_indexing_gives_sitk_order(oblique_nifti):
    path, arr, _ = oblique_nifti
    r = SimpleITKReader(reverse_indexing=True)
    data, _ = r.get_data(r.read(path))
    np.testing.assert_array_equal(data, arr.transpose(2, 1, 0))


def test_mha_and_nrrd_lps_to_ras(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)  # sitk order (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.7, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    for ext in ("mha", "nrrd"):
        p = tmp_path / f"x.{ext}"
        sitk.WriteImage(img, str(p))
        out = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
        np.testing.assert_array_equal(out.numpy(), arr.T)
        # LPS origin (1, 2, 3) is RAS (-1, -2, 3); LPS identity direction is RAS diag(-1, -1, 1)
        np.testing.assert_allclose(out.affine.numpy()[:3, 3], [-1, -2, 3])
        np.testing.assert_allclose(np.diag(out.affine.numpy())[:3], [-0.5, -0.7, 2.0], atol=1e-6)


def test_list_of_files_stacks_channels_and_rejects_mismatch(tmp_path):
    aff = np.diag([1.0, 1, 1, 1])
    a = _write_nifti(tmp_path / "a.nii", np.ones((4, 4, 3), np.float32), aff)
    b = _write_nifti(tmp_path / "b.nii", np.zeros((4, 4, 3), np.float32), aff)
    out = LoadImage(reader=SimpleITKReader(), image_only=True)([a, b])
    assert tuple(out.shape) == (2, 4, 4, 3)
    c = _write_nifti(tmp_path / "c.nii", np.zeros((4, 4, 2), np.float32), aff)
    with pytest.raises(DataError, match="shape"):
        LoadImage(reader=SimpleITKReader(), image_only=True)([a, c])
    d = _write_nifti(tmp_path / "d.nii", np.zeros((4, 4, 3), np.float32), np.diag([2.0, 1, 1, 1]))
    with pytest.raises(DataError, match="affine"):
        LoadImage(reader=SimpleITKReader(), image_only=True)([a, d])


def test_reader_by_name_and_by_target():
    from monai.bundle import ConfigParser

    cfg = ConfigParser(
        {
            "imports": ["$import monai_patcher.data"],
            "a": {"_target_": "LoadImaged", "keys": "x", "reader": "SimpleITKReader"},
            "b": {"_target_": "LoadImaged", "keys": "x", "reader": {"_target_": "monai_patcher.data.SimpleITKReader"}},
        }
    )
    for name in ("a", "b"):
        loader = cfg.get_parsed_content(name)
        assert any(isinstance(r, SimpleITKReader) for r in loader._loader.readers)
    # registered with the lowest priority: MONAI's own readers still win in auto-selection
    from monai.transforms.io.array import SUPPORTED_READERS

    assert list(SUPPORTED_READERS)[0] == "simpleitkreader"


# ---------------------------------------------------------------- bad input


def _load(path, **kw):
    return Compose([LoadImaged("x", reader=SimpleITKReader(**kw))])({"x": str(path)})


def _assert_clean_error(path, match, **kw):
    with pytest.raises(Exception) as info:
        _load(path, **kw)
    root = _root_cause(info.value)
    assert isinstance(root, DataError), f"expected DataError, got {type(root).__name__}: {root}"
    assert str(path) in str(root)
    assert match in str(root)
    assert "Traceback" not in str(root)


def test_missing_file(tmp_path):
    _assert_clean_error(tmp_path / "nope.nii.gz", "does not exist")


def test_unreadable_file(tmp_path):
    p = tmp_path / "junk.nii.gz"
    p.write_bytes(b"not an image at all")
    before = p.read_bytes()
    _assert_clean_error(p, "not a readable image")
    assert p.read_bytes() == before


def test_empty_file(tmp_path):
    p = tmp_path / "empty.nii"
    p.write_bytes(b"")
    _assert_clean_error(p, "empty")


def test_truncated_gzip_nifti(tmp_path, oblique_nifti):
    path, _, _ = oblique_nifti
    raw = path.read_bytes()
    p = tmp_path / "cut.nii.gz"
    p.write_bytes(raw[: len(raw) // 2])
    before = p.read_bytes()
    _assert_clean_error(p, "truncated")
    assert p.read_bytes() == before


def test_truncated_plain_nifti(tmp_path, oblique_nifti):
    path, _, _ = oblique_nifti
    raw = gzip.decompress(path.read_bytes())
    p = tmp_path / "cut.nii"
    p.write_bytes(raw[:-100])
    _assert_clean_error(p, "truncated NIfTI")


def test_dicom_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    _assert_clean_error(tmp_path, "no DICOM images")


def _write_dicom_series(folder, positions, uid="1.2.3.4", size=(8, 6), start=0, extra=None, prefix="im"):
    """Tiny synthetic DICOM series via SimpleITK; slice value = its index in ``positions``; ``extra``: more tags."""
    folder.mkdir(parents=True, exist_ok=True)
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for i, z in enumerate(positions):
        img = sitk.GetImageFromArray(np.full((size[1], size[0]), 100 + i, np.int16))
        img.SetSpacing((0.8, 0.9))
        for tag, val in {
            "0008|0060": "MR",
            "0020|000d": "1.2.3",
            "0020|000e": uid,
            "0020|0013": str(len(positions) - i + start),  # reversed instance numbers on purpose
            "0020|0032": f"0\\0\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.9\\0.8",
            "0008|0018": f"{uid}.{start}.{i}",
            **(extra or {}),
        }.items():
            img.SetMetaData(tag, val)
        w.SetFileName(str(folder / f"{prefix}{i:02d}_{uid[-1]}.dcm"))
        w.Execute(img)


def test_dicom_series_sorted_by_position_not_instance(tmp_path):
    positions = [5.0, -1.0, 2.0, 8.0]  # file order and instance numbers are not geometric order
    _write_dicom_series(tmp_path / "s", positions)
    out = _load(tmp_path / "s")["x"]
    assert tuple(out.shape) == (8, 6, 4)
    got = out[0, 0, :].numpy()
    expected = 100 + np.argsort(positions)  # values in ascending z
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(out.meta["spacing"], [0.8, 0.9, 3.0], atol=1e-4)
    np.testing.assert_allclose(out.affine.numpy()[2, 3], -1.0, atol=1e-4)


def test_dicom_folder_with_two_series(tmp_path, caplog):
    _write_dicom_series(tmp_path / "s", [0.0, 1.0, 2.0], uid="1.2.3.4.1")
    _write_dicom_series(tmp_path / "s", [0.0, 2.0], uid="1.2.3.4.2")
    with caplog.at_level("INFO"):
        files, uid = dicom_series_files(tmp_path / "s")
    assert uid == "1.2.3.4.1" and len(files) == 3
    assert "1.2.3.4.1" in caplog.text
    out = _load(tmp_path / "s", series_uid="1.2.3.4.2")["x"]
    assert out.shape[-1] == 2
    _assert_clean_error(tmp_path / "s", "no DICOM series with SeriesInstanceUID", series_uid="9.9")


def test_dicom_series_holding_two_b_values_names_them(tmp_path):
    """A DWI series with its b = 0 and b = 1000 images (same positions) is refused; the message says which tag
    tells the volumes apart, so the user knows how to split them."""
    positions = [0.0, 3.0, 6.0]
    _write_dicom_series(tmp_path / "s", positions, extra={"0018|9087": "0"}, start=0)
    _write_dicom_series(tmp_path / "s", positions, extra={"0018|9087": "1000"}, start=10, prefix="b1000_")
    _assert_clean_error(tmp_path / "s", "several slices at the same position (6 files, 3 positions)")
    _assert_clean_error(tmp_path / "s", "DiffusionBValue ['0', '1000']")
    _assert_clean_error(tmp_path / "s", "pass b_value= one of ['0', '1000']")


def test_dicom_series_b_value_selects_one_volume(tmp_path):
    positions = [0.0, 3.0, 6.0]
    _write_dicom_series(tmp_path / "s", positions, extra={"0018|9087": "0"}, start=0)
    _write_dicom_series(tmp_path / "s", positions, extra={"0018|9087": "1000"}, start=10, prefix="b1000_")
    for b in (0, 1000):
        files, _ = dicom_series_files(tmp_path / "s", b_value=b)
        assert len(files) == 3 and all(Path(f).name.startswith("b1000_") == (b == 1000) for f in files)
        out = _load(tmp_path / "s", b_value=b)["x"]
        assert tuple(out.shape) == (8, 6, 3)
        np.testing.assert_allclose(out.meta["spacing"][2], 3.0, atol=1e-4)
    _assert_clean_error(tmp_path / "s", "holds images of the b-values ['0', '1000'], none of b = 500", b_value=500)
    # vendor tags: Siemens B_value, Philips, GE (first value; 10^9 added by some versions)
    from monai_patcher.data.readers import _b_value

    assert _b_value({"0019|100c": "1000 "}) == 1000 and _b_value({"2001|1003": "500.0"}) == 500
    assert _b_value({"0043|1039": "1000000800\\8\\0\\0"}) == 800 and _b_value({"0008|0008": "ORIGINAL"}) is None
    # a series of one volume: b_value has no effect (an ADC map read with the DWI's reader settings)
    _write_dicom_series(tmp_path / "adc", positions, extra={"0018|9087": "1000"})
    assert tuple(_load(tmp_path / "adc", b_value=0)["x"].shape) == (8, 6, 3)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path, caplog):
    _write_dicom_series(tmp_path / "s", [0.0, 3.0, 6.0, 12.0, 15.0])  # the slice at 9 mm is missing
    _assert_clean_error(tmp_path / "s", "gaps in its slice positions")
    _assert_clean_error(tmp_path / "s", "6.00 -> 12.00 mm")
    with caplog.at_level("WARNING"):
        out = _load(tmp_path / "s", allow_slice_gaps=True)["x"]  # on request: read, with a warning
    assert out.shape[-1] == 5 and "allow_slice_gaps" in caplog.text
    np.testing.assert_allclose(out.meta["spacing"][2], 15.0 / 4, rtol=1e-4)  # the mean step: approximate
    _write_dicom_series(tmp_path / "three", [0.0, 3.0, 9.0])  # 3 slices, the middle step missing one
    _assert_clean_error(tmp_path / "three", "3.00 -> 9.00 mm")


def test_dicom_series_with_jittered_positions_is_read(tmp_path):
    _write_dicom_series(tmp_path / "s", [0.0, 3.01, 5.98, 9.02, 12.0])  # rounding in the headers, not a gap
    out = _load(tmp_path / "s")["x"]
    assert out.shape[-1] == 5
    np.testing.assert_allclose(out.meta["spacing"][2], 3.0, atol=1e-2)


# ---------------------------------------------------------------- real data


def test_real_dicom_series_matches_pydicom(shared_path_fn):
    pydicom = pytest.importorskip("pydicom")
    folder = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    out = LoadImage(reader=SimpleITKReader(), image_only=True)(folder)
    assert tuple(out.shape) == (256, 256, 6)
    dss = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    iop = np.asarray(dss[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))
    # spacing: in-plane from PixelSpacing (row, col) -> (x = col spacing, y = row spacing), slice step ~9 mm
    ps = [float(v) for v in dss[0].PixelSpacing]
    step = np.linalg.norm(np.subtract(dss[1].ImagePositionPatient, dss[0].ImagePositionPatient, dtype=float))
    np.testing.assert_allclose(out.meta["spacing"], [ps[1], ps[0], step], rtol=1e-4)
    assert 8.5 < step < 9.5
    # ordering and pixels: slice k of the volume is the k-th file in geometric order, transposed to (x, y)
    for k, ds in enumerate(dss):
        np.testing.assert_array_equal(out[:, :, k].numpy(), ds.pixel_array.T.astype(np.float32))
    # origin: first slice's ImagePositionPatient (LPS) in RAS
    lps = np.asarray(dss[0].ImagePositionPatient, float)
    np.testing.assert_allclose(out.affine.numpy()[:3, 3], lps * [-1, -1, 1], atol=1e-3)
    # InstanceNumber order would differ from geometric order here only by direction; check the axis
    # points along +normal (LPS) in RAS
    np.testing.assert_allclose(out.affine.numpy()[:3, 2] / step, normal * [-1, -1, 1], atol=1e-4)


def test_real_dicom_series_as_a_two_b_value_dwi_series(shared_path_fn, two_b_value_dwi_series):
    """The real MR series as a two-b-value DWI series (conftest): refused without ``b_value``, each volume with it."""
    src = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    reference = LoadImage(reader=SimpleITKReader(), image_only=True)(src).numpy()
    dst = two_b_value_dwi_series
    _assert_clean_error(dst, "pass b_value= one of ['0', '1000']")
    b0 = LoadImage(reader=SimpleITKReader(b_value=0), image_only=True)(dst).numpy()
    b1000 = LoadImage(reader=SimpleITKReader(b_value=1000), image_only=True)(dst).numpy()
    np.testing.assert_array_equal(b0, reference)
    np.testing.assert_array_equal(b1000, reference // 2)


def test_real_dicom_series_with_a_file_removed(shared_path_fn, tmp_path):
    """The real series minus one middle slice file (an interrupted copy): refused, naming the folder and the gap."""
    import shutil

    src = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    files, _ = dicom_series_files(src)
    dst = tmp_path / "series"
    dst.mkdir()
    for f in files[:2] + files[3:]:  # the third slice in geometric order is missing
        shutil.copy(f, dst)
    _assert_clean_error(dst, "gaps in its slice positions")
    out = _load(dst, allow_slice_gaps=True)["x"]
    assert out.shape[-1] == len(files) - 1


@pytest.mark.parametrize("name, shape", [("CT_small.dcm", (128, 128, 1)), ("MR_small.dcm", (64, 64, 1))])
def test_real_single_dicom_files(shared_path_fn, name, shape):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.pixels import apply_modality_lut

    p = shared_path_fn("package-bundled-samples", "pydicom", "data", "test_files", name)
    out = LoadImage(reader=SimpleITKReader(), image_only=True, dtype=None)(p)
    assert tuple(out.shape) == shape
    ds = pydicom.dcmread(p)
    np.testing.assert_allclose(out[:, :, 0].numpy(), apply_modality_lut(ds.pixel_array, ds).T)
    np.testing.assert_allclose(out.meta["spacing"][:2], [float(v) for v in ds.PixelSpacing][::-1], rtol=1e-5)


def test_real_tiny_ct_series_folder(shared_path_fn):
    pydicom = pytest.importorskip("pydicom")
    folder = shared_path_fn("package-bundled-samples", "pydicom", "data", "test_files", "dicomdirtests", "77654033", "CT2")
    # 4 slices of a longer series (instances 18, 180-182: z = -99.48, 103.02, 104.27, 105.52 mm): a gap, refused
    _assert_clean_error(folder, "-99.48 -> 103.02 mm")
    out = LoadImage(reader=SimpleITKReader(allow_slice_gaps=True), image_only=True)(folder)
    assert tuple(out.shape) == (16, 16, 4)
    dss = [pydicom.dcmread(p) for p in folder.iterdir()]
    z = sorted(float(ds.ImagePositionPatient[2]) for ds in dss)
    np.testing.assert_allclose(out.affine.numpy()[2, 3], z[0], atol=1e-3)


def test_real_multiframe_enhanced(shared_path_fn):
    pydicom = pytest.importorskip("pydicom")
    base = ("package-bundled-samples", "pydicom_data", "data_store", "data")
    ct = shared_path_fn(*base, "eCT_Supplemental.dcm")
    out = LoadImage(reader=SimpleITKReader(), image_only=True, dtype=None)(ct)
    ds = pydicom.dcmread(ct)
    assert tuple(out.shape) == (512, 512, 2)
    frames = ds.PerFrameFunctionalGroupsSequence
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]
    np.testing.assert_allclose(out.meta["spacing"][2], abs(z[1] - z[0]), rtol=1e-4)
    intercept = float(ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleIntercept)
    np.testing.assert_allclose(np.moveaxis(out.numpy(), 2, 0), ds.pixel_array.transpose(0, 2, 1) + intercept)
    # emri_small has no frame geometry at all: refused with a clear message, not given a made-up grid
    mr = shared_path_fn(*base, "emri_small.dcm")
    _assert_clean_error(mr, "geometry")


def test_real_nibabel_samples(shared_path_fn):
    base = ("package-bundled-samples", "nibabel", "tests", "data")
    for name, shape in (("anatomical.nii", (33, 41, 25)), ("example4d.nii.gz", (128, 96, 24, 2))):
        p = shared_path_fn(*base, name)
        a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
        n = nib.load(p)
        assert tuple(a.shape) == shape
        np.testing.assert_array_equal(a.numpy(), np.asarray(n.dataobj, dtype=np.float32))
        np.testing.assert_allclose(a.affine.numpy(), n.affine, atol=1e-4)
    a = LoadImage(reader=SimpleITKReader(), image_only=True, ensure_channel_first=True)(p)
    assert tuple(a.shape) == (2, 128, 96, 24)
    # SimpleITK's axis order (t, z, y, x): the time axis is already first
    r = LoadImage(reader=SimpleITKReader(reverse_indexing=True), image_only=True, ensure_channel_first=True)(p)
    assert tuple(r.shape) == (2, 24, 96, 128)
    np.testing.assert_array_equal(r.numpy(), a.numpy().transpose(0, 3, 2, 1))


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


def test_round_trip_orientation_spacing_invert_save(tmp_path, shared_path_fn):
    p = shared_path_fn("ISLES-2022-case0001", "data", "sub-strokecase0001_ses-0001_dwi.nii.gz")
    src = tmp_path / "dwi.nii.gz"
    shutil.copy(p, src)
    pre = Compose(
        [
            LoadImaged("img", reader=SimpleITKReader()),
            EnsureChannelFirstd("img"),
            Orientationd("img", axcodes="RAS", labels=None),
            Spacingd("img", pixdim=(3.0, 3.0, 3.0), mode="bilinear"),
        ]
    )
    d = pre({"img": str(src)})
    assert nib.aff2axcodes(d["img"].affine.numpy()) == ("R", "A", "S")
    assert d["img"].shape[1] < 112  # resampled to 3 mm
    d["pred"] = d["img"].clone()
    post = Compose(
        [
            Invertd("pred", transform=pre, orig_keys="img", nearest_interp=False),
            SaveImaged("pred", output_dir=tmp_path / "out", output_postfix="inv", separate_folder=False,
                       resample=False, print_log=False),
        ]
    )
    post(d)
    out = nib.load(tmp_path / "out" / "dwi_inv.nii.gz")
    ref = nib.load(src)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-3)
    # content comes back approximately (two linear resamplings)
    a, b = np.asarray(out.dataobj, float), np.asarray(ref.dataobj, float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    assert torch.equal(torch.as_tensor(np.asarray(nib.load(p).dataobj)), torch.as_tensor(np.asarray(ref.dataobj)))


def test_nan_and_inf_voxels_are_kept(tmp_path):
    """ITK's NIfTI reader turns NaN/Inf into 0; the reader must not hide them from the checks."""
    a = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    a[1, 2, 3] = np.nan
    a[2, 2, 2] = np.inf
    p = _write_nifti(tmp_path / "nan.nii.gz", a, np.eye(4))
    out = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    assert int(torch.isnan(out).sum()) == 1 and int(torch.isinf(out).sum()) == 1
    np.testing.assert_array_equal(np.nan_to_num(out.numpy(), posinf=7), np.nan_to_num(a, posinf=7))


# ---------------------------------------------------------------- review fixes (vendor tags, NIfTI xforms, ...)

#: vendor b-value tags as the scanners write them: (group, private creator, element, VR, value for b)
_VENDOR_B_TAGS = {
    "Siemens": (0x0019, "SIEMENS MR HEADER", 0x0C, "IS", lambda b: str(b)),
    "GE": (0x0043, "GEMS_PARM_01", 0x39, "IS", lambda b: [str(1000000000 + b), "8", "0", "0"]),
    "Philips": (0x2001, "Philips Imaging DD 001", 0x03, "FL", lambda b: float(b)),
}


def _rewrite_real_series(src, dst, edit):
    """Write the real series' files into ``dst`` after ``edit(index, dataset)`` (pydicom); returns ``dst``."""
    pydicom = pytest.importorskip("pydicom")
    dst.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(src.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        edit(i, ds)
        ds.save_as(dst / f.name)
    return dst


@pytest.mark.parametrize("vendor", sorted(_VENDOR_B_TAGS))
def test_real_dicom_series_with_only_a_vendor_b_value_tag(shared_path_fn, tmp_path, vendor):
    """The real MR series written as a b0 + b1000 DWI series carrying only the vendor's private b-value tag (no
    DiffusionBValue), as Siemens, GE and Philips scanners write it: ``b_value`` selects each volume."""
    pydicom = pytest.importorskip("pydicom")
    group, creator, elem, vr, value = _VENDOR_B_TAGS[vendor]
    src = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    dst = tmp_path / vendor
    dst.mkdir()
    for f in sorted(src.glob("*.dcm")):
        for b in (0, 1000):
            ds = pydicom.dcmread(f)
            ds.private_block(group, creator, create=True).add_new(elem, vr, value(b))
            if b:
                ds.SOPInstanceUID = ds.SOPInstanceUID + ".1000"
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
            ds.save_as(dst / f"b{b}_{f.name}")
    reference = LoadImage(reader=SimpleITKReader(), image_only=True)(src).numpy()
    _assert_clean_error(dst, "pass b_value= one of ['0', '1000']")
    files, _ = dicom_series_files(dst, b_value=1000)
    assert len(files) == 6 and all(Path(f).name.startswith("b1000_") for f in files)
    for b, expected in ((0, reference), (1000, reference // 2)):
        out = LoadImage(reader=SimpleITKReader(b_value=b), image_only=True)(dst)
        np.testing.assert_array_equal(out.numpy(), expected)


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
    (ITK's pixdim grid; nibabel's 'best affine' there is a made-up centred one, not in the file)."""
    arr = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    p = _xform_nifti(tmp_path / "q.nii.gz", arr, _SFORM, np.eye(4), qform_code=1, sform_code=0)
    a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), _SFORM, atol=1e-4)
    b = LoadImage(reader=NibabelReader(), image_only=True)(p)
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
    p = _xform_nifti(tmp_path / "none.nii.gz", arr, _QFORM, _SFORM, qform_code=0, sform_code=0)
    a = LoadImage(reader=SimpleITKReader(), image_only=True)(p)
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
    _assert_clean_error(p, "axes not orthogonal")


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
    out = LoadImage(reader=SimpleITKReader(), image_only=True)(_write_nifti(tmp_path / "nan4d.nii.gz", a, np.eye(4)))
    assert tuple(out.shape) == (4, 5, 6, 3)
    np.testing.assert_array_equal(out.numpy(), a)  # NaN compares equal to NaN in assert_array_equal


def test_nan_voxels_of_a_singleton_4d_nifti_are_kept(tmp_path):
    """An (x, y, z, 1) float NIfTI: ITK drops the singleton axis; its NaN must still come back (not as 0)."""
    b = np.random.default_rng(0).random((4, 5, 6, 1)).astype(np.float32)
    b[0, 1, 2, 0] = np.nan
    out = LoadImage(reader=SimpleITKReader(), image_only=True)(_write_nifti(tmp_path / "nan_t1.nii.gz", b, np.eye(4)))
    assert tuple(out.shape) == (4, 5, 6) and bool(np.isnan(out.numpy()[0, 1, 2]))
    np.testing.assert_array_equal(out.numpy(), b[..., 0])


def test_dicom_series_meta_has_the_first_slice_tags_and_collates(shared_path_fn, tmp_path):
    """A DICOM series folder keeps the tags of its first slice (like MONAI's ``ITKReader``); items from two
    series with different tag sets still collate into a batch (MONAI keeps the tags they share)."""
    from monai.data import decollate_batch, list_data_collate
    from monai.transforms import Resized

    folder = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    _write_dicom_series(tmp_path / "s", [0.0, 3.0, 6.0])
    pre = Compose([LoadImaged("x", reader=SimpleITKReader()), EnsureChannelFirstd("x"), Resized("x", (8, 8, 3))])
    a, b = pre({"x": str(folder)}), pre({"x": str(tmp_path / "s")})
    first = sitk.ImageFileReader()
    first.SetFileName(dicom_series_files(folder)[0][0])
    first.ReadImageInformation()
    for key in ("0008|0060", "0020|0032", "0020|000e"):  # modality, first position, series
        assert a["x"].meta[key] == first.GetMetaData(key)
    assert not any(k.startswith("0029|") for k in a["x"].meta)  # no private tags (Siemens CSA: ~100 kB), as ITKReader
    assert b["x"].meta["0020|0032"].strip() == "0\\0\\0"
    assert set(a["x"].meta) != set(b["x"].meta)
    batch = list_data_collate([a, b])
    assert tuple(batch["x"].shape) == (2, 1, 8, 8, 3)
    assert list(batch["x"].meta["0008|0060"]) == ["MR", "MR"]
    items = decollate_batch(batch)
    assert items[0]["x"].meta["0020|000e"] == first.GetMetaData("0020|000e")


@pytest.mark.parametrize("tag", ["InstanceNumber", "ImagePositionPatient"])
def test_real_dicom_series_with_an_empty_type2_tag_in_one_slice(shared_path_fn, tmp_path, tag):
    """InstanceNumber and ImagePositionPatient are type 2 (may be present but empty): an empty one is missing."""
    src = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    dst = _rewrite_real_series(src, tmp_path / "s", lambda i, ds: setattr(ds, tag, None) if i == 2 else None)
    reference = LoadImage(reader=SimpleITKReader(), image_only=True)(src)
    if tag == "InstanceNumber":
        out = LoadImage(reader=SimpleITKReader(), image_only=True)(dst)
        np.testing.assert_array_equal(out.numpy(), reference.numpy())
        np.testing.assert_allclose(out.affine.numpy(), reference.affine.numpy(), atol=1e-4)
    else:  # one slice without a position: the slice positions (hence the geometry) are unknown
        _assert_clean_error(dst, "ImagePositionPatient")


@pytest.mark.parametrize("tag, name", [(b"\x20\x00\x32\x00DS", "ImagePositionPatient"),
                                       (b"\x20\x00\x13\x00IS", "InstanceNumber")], ids=["IPP", "instance"])  # fmt: skip
def test_real_dicom_series_with_an_unparsable_tag_is_refused(shared_path_fn, tmp_path, tag, name):
    """A slice whose position or instance number is not a number (its bytes edited: pydicom refuses to write it)
    is refused with a message naming that file and the tag, not a bare ``ValueError``."""
    src = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    dst = tmp_path / "s"
    dst.mkdir()
    for i, f in enumerate(sorted(src.glob("*.dcm"))):
        raw = bytearray(f.read_bytes())
        if i == 2:  # explicit VR little endian: tag, VR, 2-byte length, value; its first character becomes "x"
            at = raw.index(tag) + 8
            raw[at : at + 1] = b"x"
            bad = f.name
        (dst / f.name).write_bytes(bytes(raw))
    _assert_clean_error(dst, f"cannot parse {name}")
    _assert_clean_error(dst, f"{dst / bad}: ")  # the message names the file


def test_channel_mismatch_errors_name_both_files(tmp_path):
    a = _write_nifti(tmp_path / "dwi_case7.nii.gz", np.zeros((4, 4, 3), np.float32), np.eye(4))
    b = _write_nifti(tmp_path / "adc_case7.nii.gz", np.zeros((4, 4, 2), np.float32), np.eye(4))
    c = _write_nifti(tmp_path / "adc2_case7.nii.gz", np.zeros((4, 4, 3), np.float32), np.diag([2.0, 1, 1, 1]))
    for other, what in ((b, "shape"), (c, "affine")):
        with pytest.raises(DataError, match=what) as info:
            LoadImaged("img", reader=SimpleITKReader())({"img": [str(a), str(other)]})
        assert str(a) in str(info.value) and str(other) in str(info.value)


#: non-image DICOM objects that share folders with image series (SOP Class UIDs)
_NON_IMAGE_OBJECTS = {
    "basic_text_sr": "1.2.840.10008.5.1.4.1.1.88.11",
    "key_objects": "1.2.840.10008.5.1.4.1.1.88.59",
    "grayscale_presentation_state": "1.2.840.10008.5.1.4.1.1.11.1",
    "encapsulated_pdf": "1.2.840.10008.5.1.4.1.1.104.1",
    "rt_structure_set": "1.2.840.10008.5.1.4.1.1.481.3",
    "rt_plan": "1.2.840.10008.5.1.4.1.1.481.5",
    "raw_data": "1.2.840.10008.5.1.4.1.1.66",
}


def test_real_dicom_series_with_non_image_objects_in_the_folder(shared_path_fn, tmp_path, caplog):
    """Reports, presentation states, key objects, PDFs, RT structure sets/plans and raw data next to the slices are
    skipped (logged by name); a truncated image slice in the same folder is still refused."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    src = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    dst = tmp_path / "s"
    dst.mkdir()
    for f in src.glob("*.dcm"):
        shutil.copy(f, dst)
    ref = pydicom.dcmread(next(src.glob("*.dcm")), stop_before_pixels=True)
    for name, sop_class in _NON_IMAGE_OBJECTS.items():
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.PatientID, ref.StudyInstanceUID, generate_uid()
        if name == "encapsulated_pdf":
            ds.MIMETypeOfEncapsulatedDocument, ds.EncapsulatedDocument = "application/pdf", b"%PDF-1.4\n%%EOF\n"
        ds.save_as(dst / f"{name}.dcm", enforce_file_format=True)
    reference = LoadImage(reader=SimpleITKReader(), image_only=True)(src)
    with caplog.at_level("INFO", logger="monai_patcher.data.readers"):
        out = LoadImage(reader=SimpleITKReader(), image_only=True)(dst)
    np.testing.assert_array_equal(out.numpy(), reference.numpy())
    assert all(f"{name}.dcm" in caplog.text for name in _NON_IMAGE_OBJECTS)
    raw = sorted(src.glob("*.dcm"))[0].read_bytes()
    (dst / "cut.dcm").write_bytes(raw[: len(raw) // 3])
    _assert_clean_error(dst, "belong to no readable series")
    _assert_clean_error(dst, "cut.dcm")


# ---------------------------------------------------------------- loading speed (NIfTI decompressed once), .mha


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
    from monai_patcher.data import readers

    fast = 0
    for p in _nifti_variants(tmp_path):
        header = readers._header(str(p))
        img = readers._nifti_from_memory(readers._check_complete(str(p)), header)
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
    from monai_patcher.data import readers

    a = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    a[1, 2, 3] = np.nan
    p = _write_nifti(tmp_path / "once.nii.gz", a, np.eye(4))
    calls = {"decompress": 0}
    decompress = gzip.decompress

    def counting(data):
        calls["decompress"] += 1
        return decompress(data)

    def no_voxels(*args, **kwargs):
        raise AssertionError("ITK read the voxels again")

    monkeypatch.setattr(readers.gzip, "decompress", counting)
    monkeypatch.setattr(readers.sitk, "ReadImage", no_voxels)
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
    _assert_clean_error(p, "corrupt")  # by ITK reading the header, or by the full decompression


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_mha_says_truncated_not_an_os_error(tmp_path, compressed):
    """A cut .mha was refused with ITK's stale errno text ("Reason: No such file or directory"); now the message
    says it is truncated, by how much, and names the file."""
    img = sitk.GetImageFromArray(np.random.default_rng(0).random((10, 12, 14)).astype(np.float32))
    full = tmp_path / "full.mha"
    sitk.WriteImage(img, str(full), useCompression=compressed)
    raw = full.read_bytes()
    p = tmp_path / "cut.mha"
    p.write_bytes(raw[:-500])
    with pytest.raises(DataError) as info:
        SimpleITKReader().read_image(p)
    message = str(info.value)
    assert message.startswith(f"{p}: truncated MetaImage file: ")
    assert "only" in message and "No such file" not in message
    # the full file still loads
    np.testing.assert_array_equal(sitk.GetArrayFromImage(SimpleITKReader().read_image(full)), sitk.GetArrayFromImage(img))


def test_sitk_message_drops_stale_os_reasons():
    from monai_patcher.data.readers import _sitk_message

    err = RuntimeError(
        "Exception thrown in SimpleITK ImageFileReader_Execute: .../itkMetaImageIO.cxx:490:\n"
        "ITK ERROR: MetaImageIO(0x5639ec9a0e40): File cannot be read: /x/a.mha for reading.\n"
        "Reason: No such file or directory"
    )
    assert _sitk_message(err) == "File cannot be read: /x/a.mha for reading."


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
    _assert_clean_error(p, f"truncated NIfTI file: {len(raw)} bytes expected")


def test_reverse_indexing_channel_dim_of_4d_and_vector_images(tmp_path):
    """With ``reverse_indexing`` a 4D image comes back ``(t, z, y, x)``, so its channel axis is 0 (-1 would make
    ``EnsureChannelFirst`` move ``x`` to the front); vector components stay last, ``(z, y, x, c)``; without it both
    are last, ``(x, y, z, t)`` / ``(x, y, z, c)``."""
    from monai.transforms import EnsureChannelFirst

    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(5, 4, 3, 2)  # x, y, z, t
    path = _write_nifti(tmp_path / "four_d.nii.gz", a, np.eye(4))
    vec = sitk.GetImageFromArray(np.arange(3 * 4 * 5 * 2, dtype=np.float32).reshape(3, 4, 5, 2), isVector=True)
    vec_path = tmp_path / "vector.mha"
    sitk.WriteImage(vec, str(vec_path))
    for reverse, four_d, vector in ((True, (2, 3, 4, 5), (3, 4, 5, 2)), (False, (5, 4, 3, 2), (5, 4, 3, 2))):
        reader = SimpleITKReader(reverse_indexing=reverse)
        for p, shape, channels in ((path, four_d, 2), (vec_path, vector, 2)):
            out = LoadImage(reader=reader, image_only=True)(p)
            assert tuple(out.shape) == shape, (p, reverse)
            first = EnsureChannelFirst()(out)
            assert first.shape[0] == channels, (p, reverse, tuple(first.shape))
    out = EnsureChannelFirst()(LoadImage(reader=SimpleITKReader(reverse_indexing=True), image_only=True)(path))
    np.testing.assert_array_equal(out.numpy(), a.transpose(3, 2, 1, 0))

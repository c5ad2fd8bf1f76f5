"""DICOM series discovery, ordering and checks (monai_patcher/data/readers/dicom.py), synthetic and real series."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged

from monai_patcher.data import DataError, SimpleITKReader, dicom_series_files
from readers_helpers import assert_clean_error, load_image, load_item, write_dicom_series


def test_dicom_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_clean_error(tmp_path, "no DICOM images")


def test_dicom_series_sorted_by_position_not_instance(tmp_path):
    positions = [5.0, -1.0, 2.0, 8.0]  # file order and instance numbers are not geometric order
    write_dicom_series(tmp_path / "s", positions)
    out = load_item(tmp_path / "s")["x"]
    assert tuple(out.shape) == (8, 6, 4)
    got = out[0, 0, :].numpy()
    expected = 100 + np.argsort(positions)  # values in ascending z
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(out.meta["spacing"], [0.8, 0.9, 3.0], atol=1e-4)
    np.testing.assert_allclose(out.affine.numpy()[2, 3], -1.0, atol=1e-4)


def test_dicom_folder_with_two_series(tmp_path, caplog):
    write_dicom_series(tmp_path / "s", [0.0, 1.0, 2.0], uid="1.2.3.4.1")
    write_dicom_series(tmp_path / "s", [0.0, 2.0], uid="1.2.3.4.2")
    with caplog.at_level("INFO"):
        files, uid = dicom_series_files(tmp_path / "s")
    assert uid == "1.2.3.4.1" and len(files) == 3
    assert "1.2.3.4.1" in caplog.text
    out = load_item(tmp_path / "s", series_uid="1.2.3.4.2")["x"]
    assert out.shape[-1] == 2
    assert_clean_error(tmp_path / "s", "no DICOM series with SeriesInstanceUID", series_uid="9.9")


def test_dicom_series_holding_two_b_values_names_them(tmp_path):
    """A DWI series with its b = 0 and b = 1000 images (same positions) is refused; the message says which tag
    tells the volumes apart, so the user knows how to split them."""
    positions = [0.0, 3.0, 6.0]
    write_dicom_series(tmp_path / "s", positions, extra={"0018|9087": "0"}, start=0)
    write_dicom_series(tmp_path / "s", positions, extra={"0018|9087": "1000"}, start=10, prefix="b1000_")
    assert_clean_error(tmp_path / "s", "several slices at the same position (6 files, 3 positions)")
    assert_clean_error(tmp_path / "s", "DiffusionBValue ['0', '1000']")
    assert_clean_error(tmp_path / "s", "pass b_value= one of ['0', '1000']")


def test_dicom_series_b_value_selects_one_volume(tmp_path):
    positions = [0.0, 3.0, 6.0]
    write_dicom_series(tmp_path / "s", positions, extra={"0018|9087": "0"}, start=0)
    write_dicom_series(tmp_path / "s", positions, extra={"0018|9087": "1000"}, start=10, prefix="b1000_")
    for b in (0, 1000):
        files, _ = dicom_series_files(tmp_path / "s", b_value=b)
        assert len(files) == 3 and all(Path(f).name.startswith("b1000_") == (b == 1000) for f in files)
        out = load_item(tmp_path / "s", b_value=b)["x"]
        assert tuple(out.shape) == (8, 6, 3)
        np.testing.assert_allclose(out.meta["spacing"][2], 3.0, atol=1e-4)
    assert_clean_error(tmp_path / "s", "holds images of the b-values ['0', '1000'], none of b = 500", b_value=500)
    # vendor tags: Siemens B_value, Philips, GE (first value; 10^9 added by some versions)
    from monai_patcher.data.readers.dicom import b_value_of

    assert b_value_of({"0019|100c": "1000 "}) == 1000 and b_value_of({"2001|1003": "500.0"}) == 500
    assert b_value_of({"0043|1039": "1000000800\\8\\0\\0"}) == 800 and b_value_of({"0008|0008": "ORIGINAL"}) is None
    # a series of one volume: b_value has no effect (an ADC map read with the DWI's reader settings)
    write_dicom_series(tmp_path / "adc", positions, extra={"0018|9087": "1000"})
    assert tuple(load_item(tmp_path / "adc", b_value=0)["x"].shape) == (8, 6, 3)


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path, caplog):
    write_dicom_series(tmp_path / "s", [0.0, 3.0, 6.0, 12.0, 15.0])  # the slice at 9 mm is missing
    assert_clean_error(tmp_path / "s", "gaps in its slice positions")
    assert_clean_error(tmp_path / "s", "6.00 -> 12.00 mm")
    with caplog.at_level("WARNING"):
        out = load_item(tmp_path / "s", allow_slice_gaps=True)["x"]  # on request: read, with a warning
    assert out.shape[-1] == 5 and "allow_slice_gaps" in caplog.text
    np.testing.assert_allclose(out.meta["spacing"][2], 15.0 / 4, rtol=1e-4)  # the mean step: approximate
    write_dicom_series(tmp_path / "three", [0.0, 3.0, 9.0])  # 3 slices, the middle step missing one
    assert_clean_error(tmp_path / "three", "3.00 -> 9.00 mm")


def test_dicom_series_with_jittered_positions_is_read(tmp_path):
    write_dicom_series(tmp_path / "s", [0.0, 3.01, 5.98, 9.02, 12.0])  # rounding in the headers, not a gap
    out = load_item(tmp_path / "s")["x"]
    assert out.shape[-1] == 5
    np.testing.assert_allclose(out.meta["spacing"][2], 3.0, atol=1e-2)


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
    assert_clean_error(dst, "pass b_value= one of ['0', '1000']")
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
    assert_clean_error(dst, "gaps in its slice positions")
    out = load_item(dst, allow_slice_gaps=True)["x"]
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
    assert_clean_error(folder, "-99.48 -> 103.02 mm")
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
    assert_clean_error(mr, "geometry")


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
    assert_clean_error(dst, "pass b_value= one of ['0', '1000']")
    files, _ = dicom_series_files(dst, b_value=1000)
    assert len(files) == 6 and all(Path(f).name.startswith("b1000_") for f in files)
    for b, expected in ((0, reference), (1000, reference // 2)):
        out = LoadImage(reader=SimpleITKReader(b_value=b), image_only=True)(dst)
        np.testing.assert_array_equal(out.numpy(), expected)


def test_dicom_series_meta_has_the_first_slice_tags_and_collates(shared_path_fn, tmp_path):
    """A DICOM series folder keeps the tags of its first slice (like MONAI's ``ITKReader``); items from two
    series with different tag sets still collate into a batch (MONAI keeps the tags they share)."""
    from monai.data import decollate_batch, list_data_collate
    from monai.transforms import Resized

    folder = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    write_dicom_series(tmp_path / "s", [0.0, 3.0, 6.0])
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
        assert_clean_error(dst, "ImagePositionPatient")


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
    assert_clean_error(dst, f"cannot parse {name}")
    assert_clean_error(dst, f"{dst / bad}: ")  # the message names the file


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
    assert_clean_error(dst, "belong to no readable series")
    assert_clean_error(dst, "cut.dcm")


def test_dicom_files_are_told_by_name_or_preamble(tmp_path):
    """One sniffing rule for the reader, the series scan and case discovery: a DICOM suffix or ``DICM`` at byte 128."""
    from monai_patcher.data.readers import holds_dicom_files, is_dicom_file

    write_dicom_series(tmp_path / "s", [0.0, 1.0])
    named = sorted((tmp_path / "s").iterdir())[0]
    bare = tmp_path / "bare" / "IM0001"  # scanners often write files without a suffix
    bare.parent.mkdir()
    bare.write_bytes(named.read_bytes())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not DICOM " * 20)
    assert is_dicom_file(named) and is_dicom_file(bare)
    assert not is_dicom_file(tmp_path / "notes" / "a.txt") and not is_dicom_file(tmp_path / "missing.dcm")
    assert holds_dicom_files(tmp_path / "s") and holds_dicom_files(tmp_path / "bare")
    assert not holds_dicom_files(tmp_path / "notes")


# ------------------------------------------------------------------- through the reader (issue 20)


def _rewrite(src: Path, dst: Path, edit) -> Path:
    pydicom = pytest.importorskip("pydicom")
    dst.mkdir(parents=True)
    for i, f in enumerate(sorted(src.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        edit(i, ds)
        ds.save_as(dst / f.name, enforce_file_format=False)
    return dst


def test_dicom_series_without_positions_is_refused_unless_allowed(shared_path_fn, tmp_path):
    src = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    dst = _rewrite(src, tmp_path / "nopos", lambda i, ds: delattr(ds, "ImagePositionPatient"))
    with pytest.raises(DataError, match=r"nopos: series .*: none of its 6 slices has an ImagePositionPatient.*"
                                        r"allow_missing_geometry=True"):  # fmt: skip
        load_image(dst)  # was stacked 1 mm apart with only a warning
    assert tuple(load_image(dst, allow_missing_geometry=True).shape) == (256, 256, 6)


def test_dicom_series_slices_must_share_their_pixel_description(shared_path_fn, tmp_path):
    src = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")

    def rgb_slice(i, ds):
        if i == 3:
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit, ds.PixelRepresentation = 7, 0
            ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), np.uint8).tobytes()

    dst = _rewrite(src, tmp_path / "rgb", rgb_slice)
    with pytest.raises(DataError, match=r"SamplesPerPixel = 3, but .* of the same series has 1"):
        load_image(dst)  # was accepted


def test_single_dicom_geometry_and_frames(shared_path_fn, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    mr = shared_path_fn("package-bundled-samples", "pydicom", "data", "test_files", "MR_small.dcm")
    ds = pydicom.dcmread(mr)
    ds.NumberOfFrames = 2  # one frame of pixels: the second slice was read from outside the buffer
    ds.save_as(tmp_path / "frames.dcm", enforce_file_format=False)
    with pytest.raises(DataError, match=r"frames\.dcm: invalid DICOM pixel description: PixelData holds 8192 bytes"):
        load_image(tmp_path / "frames.dcm")
    ds = pydicom.dcmread(mr)
    del ds.PixelSpacing
    ds.save_as(tmp_path / "nospacing.dcm", enforce_file_format=False)
    with pytest.raises(DataError, match=r"nospacing\.dcm: DICOM image without PixelSpacing: its geometry is unknown"):
        load_image(tmp_path / "nospacing.dcm")
    assert tuple(load_image(tmp_path / "nospacing.dcm", allow_missing_geometry=True).shape) == (64, 64, 1)
    ds = pydicom.dcmread(mr)
    ds.RescaleIntercept, ds.RescaleSlope = "nan", 1
    ds.save_as(tmp_path / "rescale.dcm", enforce_file_format=False)
    with pytest.raises(DataError, match=r"rescale\.dcm: invalid DICOM pixel description: RescaleIntercept = \[nan\]"):
        load_image(tmp_path / "rescale.dcm")
    del ds.RescaleSlope  # GDCM applies a lone intercept, pydicom does not
    ds.RescaleIntercept = 10
    ds.save_as(tmp_path / "lone.dcm", enforce_file_format=False)
    with pytest.raises(DataError, match=r"lone\.dcm: .*RescaleIntercept without RescaleSlope"):
        load_image(tmp_path / "lone.dcm")


def test_damaged_sop_class_uid_and_itk_geometry_safety_net(shared_path_fn, tmp_path):
    """Found by --seed 23: one flipped byte in SOPClassUID made GDCM drop the CT's PixelSpacing (read as 1 mm, and
    SpacingBetweenSlices as 1) while the file still said 0.66 mm. Refused as an invalid UID; and whatever ITK reads
    is compared with what the file states (a safety net behind the validation)."""
    from monai_patcher.data.readers.dicom import check_itk_geometry
    from monai_patcher.data.readers.dicom_header import read_dicom_info

    ct = shared_path_fn("package-bundled-samples", "pydicom", "data", "test_files", "CT_small.dcm")
    data = bytearray(ct.read_bytes())
    at = data.index(b"1.2.840.10008.5.1.4.1.1.2\x00", 300)  # the data set's SOPClassUID (CT Image Storage)
    data[at + 16] = 0xAE
    (tmp_path / "uid.dcm").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"uid\.dcm: invalid DICOM UID: SOPClassUID = '1\.2\.840\.10008\.5\.\xae\.4\.1"):
        load_image(tmp_path / "uid.dcm")
    info = read_dicom_info(ct)
    img = SimpleITKReader().read_image(ct)
    check_itk_geometry(str(ct), img, info)  # what ITK read is what the file says
    img.SetSpacing((1.0, 1.0, 1.0))
    with pytest.raises(DataError, match=r"CT_small\.dcm: ITK read the spacing \[1\.0, 1\.0\], but the file's PixelSpacing"):
        check_itk_geometry(str(ct), img, info)

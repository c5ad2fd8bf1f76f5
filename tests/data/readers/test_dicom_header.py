"""DICOM validation without GDCM (monai_patcher.data.readers.dicom_header): the data set walk and the pixel description."""

from __future__ import annotations

import numpy as np
import pytest

from monai_patcher.data import DataError
from monai_patcher.data.readers.dicom_header import check_dicom_file, check_dicom_series, read_dicom_info

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (  # noqa: E402
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)


def _dataset(rows=6, cols=5, frames=None, spp=1, bits=16, photometric="MONOCHROME2", pixels=None,
             transfer_syntax=ExplicitVRLittleEndian, z=0.0) -> Dataset:  # fmt: skip
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "MR", "1.2.3", "1.2.3.4"
    item, inner = Dataset(), Dataset()
    inner.CodeMeaning = "nested"
    item.ConceptNameCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds["ReferencedImageSequence"].is_undefined_length = True  # walked item by item, to its delimiter
    for it in ds.ReferencedImageSequence:
        it.is_undefined_length_sequence_item = True
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, z], [1, 0, 0, 0, 1, 0], [0.8, 0.8]
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, spp, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if spp > 1:
        ds.PlanarConfiguration = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    n = rows * cols * spp * (frames or 1)
    ds.PixelData = pixels if pixels is not None else np.arange(n, dtype=f"u{bits // 8}").tobytes()
    return ds


def _save(ds: Dataset, path):
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian])  # fmt: skip
def test_every_encoding_is_walked_to_its_pixel_data(tmp_path, syntax):
    path = _save(_dataset(transfer_syntax=syntax), tmp_path / "x.dcm")
    info = check_dicom_file(path)
    assert (info.get("Rows"), info.get("Columns"), info.frames, info.pixel_length) == (6, 5, 1, 60)
    assert info.get("ImagePositionPatient") == (0.0, 0.0, 0.0) and info.get("SeriesInstanceUID") == "1.2.3.4"
    if syntax == ExplicitVRLittleEndian:
        assert b"\xfe\xff\xdd\xe0" in path.read_bytes()  # the sequence really has an undefined length


def test_real_files_pass(shared_path_fn):
    series = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    infos = {str(f): check_dicom_file(f) for f in sorted(series.glob("*.dcm"))}
    check_dicom_series(series, infos)
    mr = shared_path_fn("package-bundled-samples", "pydicom", "data", "test_files", "MR_small.dcm")
    assert check_dicom_file(mr).get("Rows") == 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        # one frame of pixels, two declared: GDCM returned a second slice read from outside the buffer
        ({"frames": 2, "pixels": np.arange(30, dtype="u2").tobytes()}, "PixelData holds 60 bytes, but .* 6 x 5 x 2 x 1 x 16 bits = 120 bytes"),
        ({"pixels": np.arange(60, dtype="u2").tobytes()}, "PixelData holds 120 bytes, but .* = 60 bytes"),  # an extra frame
        ({"spp": 3}, "SamplesPerPixel = 3 contradicts PhotometricInterpretation = MONOCHROME2"),
        ({"bits": 12, "pixels": bytes(60)}, "BitsAllocated = 12"),
        ({"rows": 0, "pixels": b""}, "Rows x Columns = 0 x 5"),
        ({"photometric": "CMYK"}, "PhotometricInterpretation = 'CMYK' is not a known one"),
    ],
)
def test_pixel_description_must_match_the_pixel_data(tmp_path, kwargs, message):
    path = _save(_dataset(**kwargs), tmp_path / "bad.dcm")
    with pytest.raises(DataError, match=f"^{path}: invalid DICOM pixel description: {message}"):
        check_dicom_file(path)


@pytest.mark.parametrize("name", ["SamplesPerPixel", "PhotometricInterpretation", "BitsStored", "PixelRepresentation"])
def test_type_1_pixel_attributes_must_be_present(tmp_path, name):
    """Found by the fuzz campaign (--seed 23): a flipped tag left CT_small without SamplesPerPixel; GDCM assumed 1,
    pydicom refused the file."""
    ds = _dataset()
    delattr(ds, name)
    path = _save(ds, tmp_path / "missing.dcm")
    with pytest.raises(DataError, match=f"missing.dcm: invalid DICOM pixel description: {name} is missing"):
        check_dicom_file(path)


def test_padding_shorter_than_a_frame_is_accepted(tmp_path):
    path = _save(_dataset(pixels=np.arange(30, dtype="u2").tobytes() + bytes(8)), tmp_path / "padded.dcm")
    assert check_dicom_file(path).pixel_length == 68


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ImagePositionPatient", ["nan", 0, 0], r"ImagePositionPatient = \[nan, 0.0, 0.0\]"),
        ("ImagePositionPatient", [1e300, 0, 0], "ImagePositionPatient"),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "two orthogonal unit vectors expected"),
        ("PixelSpacing", [0, 0.8], "must be positive"),
    ],
)
def test_garbage_geometry_is_refused(tmp_path, field, value, message):
    ds = _dataset()
    setattr(ds, field, value)
    path = _save(ds, tmp_path / "geom.dcm")
    with pytest.raises(DataError, match=f"invalid DICOM geometry: .*{message}"):
        check_dicom_file(path)


def test_malformed_data_sets_name_the_byte(tmp_path):
    data = _save(_dataset(), tmp_path / "ok.dcm").read_bytes()
    pixel = data.rindex(b"\xe0\x7f\x10\x00")
    (tmp_path / "cut.dcm").write_bytes(data[: pixel + 20])
    with pytest.raises(DataError, match=r"cut\.dcm: malformed DICOM data set: element \(7FE0,0010\) of 60 bytes at byte"):
        read_dicom_info(tmp_path / "cut.dcm")
    seq_end = data.index(b"\xfe\xff\xdd\xe0")
    (tmp_path / "open_seq.dcm").write_bytes(data[:seq_end])
    with pytest.raises(DataError, match=r"open_seq\.dcm: malformed DICOM data set: .*runs past the end of the file"):
        read_dicom_info(tmp_path / "open_seq.dcm")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.dcm: file is empty"):
        read_dicom_info(tmp_path / "empty.dcm")
    no_pixels = _dataset()
    del no_pixels.PixelData
    with pytest.raises(DataError, match="without PixelData: not an image"):
        check_dicom_file(_save(no_pixels, tmp_path / "nopix.dcm"))


def test_series_slices_must_share_their_pixel_description(tmp_path):
    files = {str(p): check_dicom_file(_save(_dataset(z=2.0 * k), p))
             for k, p in enumerate(tmp_path / f"s{k}.dcm" for k in range(3))}  # fmt: skip
    check_dicom_series(tmp_path, files)
    rgb = _save(_dataset(spp=3, photometric="RGB", bits=8, z=6.0), tmp_path / "rgb.dcm")
    with pytest.raises(DataError, match=r"rgb\.dcm: SamplesPerPixel = 3, but s0\.dcm of the same series has 1"):
        check_dicom_series(tmp_path, {**files, str(rgb): check_dicom_file(rgb)})
    bits8 = _save(_dataset(bits=8, z=6.0), tmp_path / "b8.dcm")
    with pytest.raises(DataError, match=r"b8\.dcm: BitsAllocated = 8, but s0\.dcm"):
        check_dicom_series(tmp_path, {**files, str(bits8): check_dicom_file(bits8)})
    with pytest.raises(DataError, match=r"the DICOM series \(3 slices\) declares 180 bytes of decoded data"):
        check_dicom_series(tmp_path, files, max_bytes=100)


def test_series_slices_must_share_their_rescale(tmp_path):
    """Found by the campaign's --seed 24: one slice of a series with RescaleIntercept = -1024, the others without
    rescaling. ITK read every slice as the first one's uint16, so that slice's values wrapped around (65473)."""
    files = {str(p): check_dicom_file(_save(_dataset(z=2.0 * k), p))
             for k, p in enumerate(tmp_path / f"s{k}.dcm" for k in range(3))}  # fmt: skip
    same = _dataset(z=6.0)
    same.RescaleSlope, same.RescaleIntercept = 1, 0  # what no rescaling means: accepted
    same = _save(same, tmp_path / "same.dcm")
    check_dicom_series(tmp_path, {**files, str(same): check_dicom_file(same)})
    other = _dataset(z=6.0)
    other.RescaleSlope, other.RescaleIntercept = 1, -1024
    other = _save(other, tmp_path / "other.dcm")
    with pytest.raises(DataError, match=r"other\.dcm: RescaleSlope/RescaleIntercept = \(1\.0, -1024\.0\), but s0\.dcm "
                                        r"of the same series has \(1\.0, 0\.0\): ITK reads every slice"):  # fmt: skip
        check_dicom_series(tmp_path, {**files, str(other): check_dicom_file(other)})

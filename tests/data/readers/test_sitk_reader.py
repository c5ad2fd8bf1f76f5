"""SimpleITKReader (monai_patcher/data/readers/sitk_reader.py): round trips, channels, registration, bad input."""

from __future__ import annotations

import shutil

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

from monai_patcher.data import DataError, SimpleITKReader
from readers_helpers import assert_clean_error, write_nifti


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
    a = write_nifti(tmp_path / "a.nii", np.ones((4, 4, 3), np.float32), aff)
    b = write_nifti(tmp_path / "b.nii", np.zeros((4, 4, 3), np.float32), aff)
    out = LoadImage(reader=SimpleITKReader(), image_only=True)([a, b])
    assert tuple(out.shape) == (2, 4, 4, 3)
    c = write_nifti(tmp_path / "c.nii", np.zeros((4, 4, 2), np.float32), aff)
    with pytest.raises(DataError, match="shape"):
        LoadImage(reader=SimpleITKReader(), image_only=True)([a, c])
    d = write_nifti(tmp_path / "d.nii", np.zeros((4, 4, 3), np.float32), np.diag([2.0, 1, 1, 1]))
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


def test_missing_file(tmp_path):
    assert_clean_error(tmp_path / "nope.nii.gz", "does not exist")


def test_unreadable_file(tmp_path):
    p = tmp_path / "junk.nii.gz"
    p.write_bytes(b"not an image at all")
    before = p.read_bytes()
    assert_clean_error(p, "not a readable image")
    assert p.read_bytes() == before


def test_empty_file(tmp_path):
    p = tmp_path / "empty.nii"
    p.write_bytes(b"")
    assert_clean_error(p, "empty")


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


def test_channel_mismatch_errors_name_both_files(tmp_path):
    a = write_nifti(tmp_path / "dwi_case7.nii.gz", np.zeros((4, 4, 3), np.float32), np.eye(4))
    b = write_nifti(tmp_path / "adc_case7.nii.gz", np.zeros((4, 4, 2), np.float32), np.eye(4))
    c = write_nifti(tmp_path / "adc2_case7.nii.gz", np.zeros((4, 4, 3), np.float32), np.diag([2.0, 1, 1, 1]))
    for other, what in ((b, "shape"), (c, "affine")):
        with pytest.raises(DataError, match=what) as info:
            LoadImaged("img", reader=SimpleITKReader())({"img": [str(a), str(other)]})
        assert str(a) in str(info.value) and str(other) in str(info.value)


def test_reverse_indexing_channel_dim_of_4d_and_vector_images(tmp_path):
    """With ``reverse_indexing`` a 4D image comes back ``(t, z, y, x)``, so its channel axis is 0 (-1 would make
    ``EnsureChannelFirst`` move ``x`` to the front); vector components stay last, ``(z, y, x, c)``; without it both
    are last, ``(x, y, z, t)`` / ``(x, y, z, c)``."""
    from monai.transforms import EnsureChannelFirst

    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(5, 4, 3, 2)  # x, y, z, t
    path = write_nifti(tmp_path / "four_d.nii.gz", a, np.eye(4))
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


# ------------------------------------------------------------------- through the reader (issue 20)


def test_unsupported_formats_never_reach_itk(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32)), str(tmp_path / "v.vtk"))
    with pytest.raises(DataError, match=r"v\.vtk: unsupported file type"):
        SimpleITKReader().read_image(tmp_path / "v.vtk")

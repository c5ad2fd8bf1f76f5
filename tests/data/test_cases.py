"""Case discovery (monai_patcher/data/cases.py): stroke inference inputs, labels, 2-channel files, image folders."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_patcher.data.cases import find_cases, split_two_channel, stroke_inference_datalist, stroke_output_name


def test_one_label_file_for_several_cases_is_refused(tmp_path):
    """A single --label file was given to every case of a folder (overlays coloured against the wrong mask)."""
    from monai_patcher.data.cases import image_datalist, stroke_inference_datalist
    from monai_patcher.data import write_demo_dataset

    write_demo_dataset(tmp_path / "demo", num_cases=3)
    label = tmp_path / "demo" / "case000" / "label.nii.gz"
    with pytest.raises(ValueError, match="one label file but --input .* holds 3 cases"):
        stroke_inference_datalist(tmp_path / "demo", label=label)
    (item,) = stroke_inference_datalist(tmp_path / "demo" / "case000", label=label)  # one case: fine
    assert item["label"] == str(label)
    for name in ("a.png", "b.png"):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="one mask file but --input .* holds 2 images"):
        image_datalist(tmp_path / "img", label=tmp_path / "img" / "a.png")


def test_label_folder_matches_case_folders_by_folder_name(tmp_path):
    """Case-folder layout (case003/dwi.nii.gz + adc.nii.gz): the case is its folder's name, so a label folder
    works (every case was named 'dwi' and no label could match)."""
    import shutil

    from monai_patcher.data.cases import stroke_inference_datalist
    from monai_patcher.data import write_demo_dataset

    write_demo_dataset(tmp_path / "demo", num_cases=3)
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(tmp_path / "demo" / "case000" / "label.nii.gz", labels / "case000.nii.gz")
    shutil.copy(tmp_path / "demo" / "case001" / "label.nii.gz", labels / "case001_seg.nii.gz")
    shutil.copy(tmp_path / "demo" / "case002" / "label.nii.gz", labels / "case002_msk.nii.gz")
    items = stroke_inference_datalist(tmp_path / "demo", label=labels)
    got = {Path(i["dwi"]).parent.name: Path(i["label"]).name for i in items}
    assert got == {"case000": "case000.nii.gz", "case001": "case001_seg.nii.gz", "case002": "case002_msk.nii.gz"}
    (labels / "case002_msk.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no label found for case 'case002'"):
        stroke_inference_datalist(tmp_path / "demo", label=labels)


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 4.0, 1.0]) if affine is None else affine), str(path))
    return path


def test_find_cases_pairs_dwi_and_adc_by_stem_whatever_the_case_or_suffix(tmp_path):
    """``<case>_dwi`` + ``<case>_adc`` pair whatever the letter case and the suffix of each (NIfTI, MHA, NRRD);
    a DWI without ADC is a case with its problem; labels and hidden files are no cases; ``dwi.nii.gz`` alone is
    a (2-channel) case named ``dwi``."""
    for name in ("Case1_DWI.nii.gz", "case1_adc.mha", "b_dwi.nrrd", "b_adc.nrrd", "c_dwi.nii", "c_msk.nii.gz",
                 ".hidden_dwi.nii.gz", "dwi.nii.gz"):
        (tmp_path / name).write_bytes(b"not read")  # discovery never reads image data
    cases = {c.name: c for c in find_cases(tmp_path)}
    assert sorted(cases) == ["Case1", "b", "c", "dwi"]
    assert Path(cases["Case1"].dwi).name == "Case1_DWI.nii.gz" and Path(cases["Case1"].adc).name == "case1_adc.mha"
    assert Path(cases["b"].adc).name == "b_adc.nrrd" and cases["b"].problem is None
    assert cases["c"].problem == f"{tmp_path / 'c_dwi.nii'}: no ADC file (c_adc.nii) next to this DWI file"
    assert cases["dwi"].two_channel == str(tmp_path / "dwi.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no case found"):
        find_cases(tmp_path / "empty")


def test_split_two_channel_keeps_the_geometry_and_names_bad_files(tmp_path):
    affine = np.array([[-1.5, 0, 0, 30.0], [0, 1.5, 0, -20.0], [0, 0, 4.0, 5.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((5, 6, 3, 2)).astype(np.float32)
    src = _nifti(tmp_path / "case7.nii.gz", data, affine)
    out = split_two_channel(src, tmp_path / "work", ("adc", "dwi"))
    assert {k: Path(v).name for k, v in out.items()} == {"adc": "case7_adc.nii.gz", "dwi": "case7_dwi.nii.gz"}
    for c, key in enumerate(("adc", "dwi")):
        img = nib.load(out[key])
        np.testing.assert_array_equal(np.asarray(img.dataobj), data[..., c])
        np.testing.assert_allclose(img.affine, affine)
    one = _nifti(tmp_path / "one.nii.gz", data[..., 0])
    with pytest.raises(ValueError, match=r"one.nii.gz: expected a 2-channel volume .*got shape \(5, 6, 3\)"):
        split_two_channel(one, tmp_path / "work")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(src.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut.nii.gz: cannot read this 2-channel NIfTI file"):
        split_two_channel(cut, tmp_path / "work")
    with pytest.raises(ValueError, match="must be a 2-channel NIfTI"):
        split_two_channel(tmp_path / "scan.mha", tmp_path / "work")
    with pytest.raises(ValueError, match="two_channel_order must name 'dwi' and 'adc' once each"):
        split_two_channel(src, tmp_path / "work", ("dwi", "dwi"))


def test_bundle_datalist_and_output_names(tmp_path):
    """The bundle's datalist finds the same DWI/ADC pairs as the batch CLI (``*_dwi`` + ``*_adc``, here in a BIDS-like
    tree), and names its outputs after the case, not the ADC file."""
    vol = np.ones((4, 4, 2), np.float32)
    sub = tmp_path / "sub-1" / "ses-1" / "dwi"
    sub.mkdir(parents=True)
    for kind in ("dwi", "adc"):
        _nifti(sub / f"sub-1_ses-1_{kind}.nii.gz", vol)
    (item,) = stroke_inference_datalist(tmp_path)
    assert Path(item["dwi"]).name == "sub-1_ses-1_dwi.nii.gz" and Path(item["adc"]).name == "sub-1_ses-1_adc.nii.gz"
    assert stroke_output_name({"filename_or_obj": item["adc"]}, None)["subject"] == "sub-1_ses-1"
    assert stroke_output_name({"filename_or_obj": "/x/case3/ADC"}, None)["subject"] == "case3"  # a DICOM folder
    # a DICOM series read by SimpleITKReader (it records series_uid): named after the series, not the folder
    series = {"filename_or_obj": "/x/case3/ADC", "series_uid": "1.2.840.1", "0008|103e": " ep2d_diff/3scan ADC "}
    assert stroke_output_name(series, None)["subject"] == "ep2d_diff_3scan"
    assert stroke_output_name({**series, "0008|103e": ""}, None)["subject"] == "1.2.840.1"
    with pytest.raises(ValueError, match="a DWI file needs its ADC: no lonely_adc.nii.gz next to it"):
        stroke_inference_datalist(_nifti(tmp_path / "lonely_dwi.nii.gz", vol))

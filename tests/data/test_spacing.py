"""The median in-plane voxel size of a datalist (monai_patcher.data.spacing), in the pipeline's RAS axes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_patcher.data import DataError
from monai_patcher.data.spacing import inplane_spacing, main, median_inplane_spacing, ras_spacing

REPO_ROOT = Path(__file__).resolve().parents[2]


def _nifti(path, spacing, axcodes=("R", "A", "S"), shape=(6, 5, 4)):
    """A file stored with voxel axes along ``axcodes`` and voxel sizes ``spacing`` (in that storage order)."""
    ornt = nib.orientations.axcodes2ornt(axcodes)
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    for j, (axis, flip) in enumerate(ornt):
        affine[int(axis), j] = flip * spacing[j]
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), affine), str(path))
    return str(path)


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("A", "S", "L"), ("S", "R", "P")])
def test_ras_spacing_follows_orientation(tmp_path, axcodes):
    """The voxel sizes come back in RAS order (as Orientationd sees the volume), whatever the storage order."""
    stored = {"R": 0.5, "L": 0.5, "A": 0.8, "P": 0.8, "S": 3.0, "I": 3.0}
    path = _nifti(tmp_path / "x.nii.gz", [stored[c] for c in axcodes], axcodes)
    assert ras_spacing(path) == pytest.approx((0.5, 0.8, 3.0))
    assert inplane_spacing(path) == pytest.approx((0.5, 0.8))
    assert inplane_spacing(path, slice_axis=0) == pytest.approx((0.8, 3.0))
    mha = tmp_path / "x.mha"  # the same geometry through SimpleITK's header reader
    import SimpleITK as sitk

    sitk.WriteImage(sitk.ReadImage(path), str(mha))
    assert ras_spacing(mha) == pytest.approx((0.5, 0.8, 3.0))


def test_median_and_errors(tmp_path):
    items = [{"dwi": _nifti(tmp_path / f"c{i}.nii.gz", s)} for i, s in enumerate([(1, 1, 5), (2, 0.5, 5), (3, 2, 5)])]
    median, each = median_inplane_spacing(items)
    assert median == (2.0, 1.0)
    np.testing.assert_allclose(each, [[1, 1], [2, 0.5], [3, 2]])
    with pytest.raises(DataError, match="item 1 has no 'dwi'"):
        median_inplane_spacing([items[0], {"adc": items[0]["dwi"]}])
    with pytest.raises(DataError, match="gone.nii.gz: no such file"):
        median_inplane_spacing([{"dwi": str(tmp_path / "gone.nii.gz")}])
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.nii.gz: cannot read the image header"):
        median_inplane_spacing([{"dwi": str(tmp_path / "bad.nii.gz")}])
    with pytest.raises(DataError, match="no items"):
        median_inplane_spacing([])


def test_cli_writes_the_bundle_configs(tmp_path, capsys):
    """The command writes its median into copies of the stroke bundle's configs, which then preprocess with it."""
    from monai.bundle import ConfigParser

    files = [_nifti(tmp_path / f"c{i}.nii.gz", s) for i, s in enumerate([(1.5, 1.5, 5), (1.5, 1.5, 4), (0.75, 1.0, 5)])]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"dwi": f"c{i}.nii.gz"} for i in range(3)]}))
    for name in ("train.json", "inference.json"):
        shutil.copy(REPO_ROOT / "bundles" / "patcher_stroke" / "configs" / name, tmp_path / name)
    before = (tmp_path / "train.json").read_text()
    # inference.json reads inplane_spacing from the checkpoint's record: refused, and nothing is written at all
    both = ["--config_file", str(tmp_path / "train.json"), "--config_file", str(tmp_path / "inference.json")]
    assert main(["--datalist", str(tmp_path / "datalist.json"), *both]) == 2
    err = capsys.readouterr().err
    assert "inference.json: its inplane_spacing is computed" in err and "train.json only" in err, err
    assert (tmp_path / "train.json").read_text() == before
    assert main(["--datalist", str(tmp_path / "datalist.json"), "--config_file", str(tmp_path / "train.json")]) == 0
    out = capsys.readouterr().out
    assert "3 cases" in out and "median [1.5, 1.5] mm" in out and '--inplane_spacing "[1.5, 1.5]"' in out
    parser = ConfigParser()
    parser.read_config(str(tmp_path / "train.json"))
    parser["bundle_root"] = str(REPO_ROOT / "bundles" / "patcher_stroke")  # as MONAI's tools set it
    assert parser["inplane_spacing"] == [1.5, 1.5] and parser.get_parsed_content("inplane_mode") == "spacing"
    assert parser.get_parsed_content("model_record#inplane_spacing") == [1.5, 1.5]  # what the checkpoints carry
    original = json.loads((REPO_ROOT / "bundles" / "patcher_stroke" / "configs" / "train.json").read_text())
    written = json.loads((tmp_path / "train.json").read_text())
    assert {k: v for k, v in written.items() if k != "inplane_spacing"} == {
        k: v for k, v in original.items() if k != "inplane_spacing"}
    assert main(["--datalist", str(tmp_path / "datalist.json"), "--key", "flair"]) == 2
    assert "choose the image with --key" in capsys.readouterr().err
    assert main(["--datalist", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_real_isles22_and_brats(shared_path_fn):
    """The bundle's default ``inplane_spacing`` [2.0, 2.0] is the ISLES'22 value; BraTS is 1 mm."""
    isles = shared_path_fn("ISLES-2022-case0001", "data", "sub-strokecase0001_ses-0001_dwi.nii.gz")
    brats = shared_path_fn("BraTS2015-DeepMedic-examples", "train")
    assert median_inplane_spacing([{"dwi": str(isles)}])[0] == (2.0, 2.0)
    flair = [{"dwi": str(p)} for p in sorted(brats.glob("*/Flair_subtrMeanDivStd.nii.gz"))]
    assert len(flair) == 2 and median_inplane_spacing(flair)[0] == (1.0, 1.0)
    from monai.bundle import ConfigParser

    bundle = REPO_ROOT / "bundles" / "patcher_stroke"
    config = json.loads((bundle / "configs" / "train.json").read_text())  # what training uses and records
    assert config["inplane_spacing"] == list(median_inplane_spacing([{"dwi": str(isles)}])[0])
    parser = ConfigParser()  # inference: the record's spacing, this default for a checkpoint without a record
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"], parser["ckpt_path"] = str(bundle), ""
    assert list(parser.get_parsed_content("inplane_spacing")) == config["inplane_spacing"]

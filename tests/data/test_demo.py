"""The synthetic demo dataset: deterministic, labelled SYNTHETIC, loadable by the stroke pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist

from monai_patcher.data import make_demo_case, write_demo_dataset
from monai_patcher.transforms import stroke_val_transforms


def test_demo_case_deterministic_and_lesion_contrast():
    a, b = make_demo_case(5), make_demo_case(5)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(make_demo_case(6)["dwi"], a["dwi"])
    lab = a["label"].astype(bool)
    brain = a["adc"] > 0
    assert lab.any() and (lab <= brain).all()
    assert a["dwi"][lab].mean() > 1.5 * a["dwi"][brain & ~lab].mean()  # bright on DWI
    assert a["adc"][lab].mean() < 0.7 * a["adc"][brain & ~lab].mean()  # dark on ADC
    assert 0.3 < np.median(a["adc"][brain]) < 3  # 1e-3 mm^2/s like ISLES'22


def test_demo_dataset_layout_and_pipeline(demo_dataset):
    root = demo_dataset.parent
    assert "SYNTHETIC" in (root / "README.txt").read_text()
    dl = json.loads(demo_dataset.read_text())
    assert dl["synthetic"] is True and {"training", "validation", "test"} <= set(dl)
    assert all(len(dl[k]) >= 1 for k in ("training", "validation", "test"))
    item = load_decathlon_datalist(demo_dataset, data_list_key="training")[0]
    img = nib.load(item["dwi"])
    assert img.shape == (64, 64, 16) and "SYNTHETIC" in img.header["descrip"].tobytes().decode()
    d = stroke_val_transforms(spatial_size=64)(item)
    assert tuple(d["image"].shape) == (2, 64, 64, 16) and float(d["label"].sum()) > 0


def test_demo_dataset_reproducible(tmp_path, demo_dataset):
    again = write_demo_dataset(tmp_path / "again", num_cases=3, seed=0)
    assert json.loads(again.read_text()) == json.loads(demo_dataset.read_text())
    a = nib.load(again.parent / "case001" / "adc.nii.gz").get_fdata()
    b = nib.load(demo_dataset.parent / "case001" / "adc.nii.gz").get_fdata()
    np.testing.assert_array_equal(a, b)


def test_demo_dataset_is_rewritten_for_other_settings(tmp_path):
    """ensure_demo_dataset reused the first dataset whatever num_cases/seed were asked for later."""
    from monai_patcher.data.demo import ensure_demo_dataset

    def cases(path):
        d = json.loads(Path(path).read_text())
        return sorted(i["dwi"] for v in d.values() if isinstance(v, list) for i in v)

    first = ensure_demo_dataset(tmp_path, num_cases=4, seed=0)
    assert len(cases(first)) == 4 and ensure_demo_dataset(tmp_path, num_cases=4, seed=0) == first
    again = ensure_demo_dataset(tmp_path, num_cases=3, seed=1)
    assert len(cases(again)) == 3

"""Datalist builders: ISLES'22 BIDS, case folders, Kvasir-SEG; splits by case, reproducible."""

from __future__ import annotations

import json
import os

import pytest
from monai.data import load_decathlon_datalist

from monai_patcher.data import DataError, build_case_folder_datalist, build_isles22_datalist, build_kvasir_datalist, split_cases
from monai_patcher.data.datalists import main


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


@pytest.fixture
def bids(tmp_path):
    root = tmp_path / "ISLES-2022"
    for i in range(1, 11):
        c = f"sub-strokecase{i:04d}"
        _touch(root / c / "ses-0001" / "dwi" / f"{c}_ses-0001_dwi.nii.gz")
        _touch(root / c / "ses-0001" / "dwi" / f"{c}_ses-0001_adc.nii.gz")
        _touch(root / c / "ses-0001" / "anat" / f"{c}_ses-0001_FLAIR.nii.gz")
        _touch(root / "derivatives" / c / "ses-0001" / f"{c}_ses-0001_msk.nii.gz")
    return root


def test_split_cases_reproducible_disjoint():
    cases = [{"case": f"c{i}"} for i in range(10)]
    a = split_cases(cases, 0.2, 0.1, seed=1)
    b = split_cases(list(reversed(cases)), 0.2, 0.1, seed=1)
    assert a == b
    assert [len(a[k]) for k in ("training", "validation", "test")] == [7, 2, 1]
    names = [c["case"] for k in a for c in a[k]]
    assert sorted(names) == sorted(c["case"] for c in cases)
    assert split_cases(cases, 0.2, 0.1, seed=2) != a
    with pytest.raises(ValueError):
        split_cases(cases, 0.6, 0.5)


def test_isles22_datalist(bids, tmp_path):
    out = tmp_path / "dl" / "isles.json"
    split = build_isles22_datalist(bids, out, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert [len(split[k]) for k in ("training", "validation", "test")] == [6, 2, 2]
    for item in split["training"]:
        c = item["case"]
        assert item["dwi"].endswith(f"{c}_ses-0001_dwi.nii.gz") and item["adc"].endswith("_adc.nii.gz")
        assert "derivatives" in item["label"] and c in item["label"]
    loaded = load_decathlon_datalist(out, data_list_key="validation")
    assert all(str(bids) in v["dwi"] for v in loaded)  # relative paths resolve back to the files
    assert not json.loads(out.read_text())["training"][0]["dwi"].startswith("/")


def test_isles22_missing_mask_and_empty(bids, tmp_path):
    (bids / "derivatives" / "sub-strokecase0003" / "ses-0001" / "sub-strokecase0003_ses-0001_msk.nii.gz").unlink()
    with pytest.raises(DataError, match="sub-strokecase0003 has no label"):
        build_isles22_datalist(bids)
    split = build_isles22_datalist(bids, require_label=False, val_fraction=0, test_fraction=0)
    assert len(split["training"]) == 10
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no ISLES"):
        build_isles22_datalist(tmp_path / "empty")


def test_case_folder_datalist(tmp_path):
    for i in range(5):
        d = tmp_path / "cases" / f"p{i}"
        _touch(d / "Flair.nii.gz")
        _touch(d / "T1c.nii.gz")
        _touch(d / "seg.nii.gz")
    split = build_case_folder_datalist(tmp_path / "cases", {"image": "Flair*", "t1c": "T1c*", "label": "seg*"},
                                       val_fraction=0.2, test_fraction=0.2)
    assert sum(len(v) for v in split.values()) == 5
    _touch(tmp_path / "cases" / "p9" / "Flair.nii.gz")
    with pytest.raises(DataError, match="p9: no t1c"):
        build_case_folder_datalist(tmp_path / "cases", {"image": "Flair*", "t1c": "T1c*"})


def test_kvasir_layouts_and_cli(tmp_path, capsys):
    flat = tmp_path / "flat"
    for i in range(20):
        _touch(flat / "images" / f"im{i}.jpg")
        _touch(flat / "masks" / f"im{i}.jpg")
    split = build_kvasir_datalist(flat, seed=0)
    assert [len(split[k]) for k in ("training", "validation", "test")] == [16, 2, 2]
    assert all(i["image"].replace("images", "masks") == i["label"] for v in split.values() for i in v)
    main(["kvasir", str(flat), "--out", str(tmp_path / "k.json")])
    assert "training 16" in capsys.readouterr().out
    _touch(flat / "images" / "orphan.jpg")
    with pytest.raises(DataError, match="orphan.jpg: no mask"):
        build_kvasir_datalist(flat)


def test_real_kvasir_presplit(shared_path_fn):
    root = shared_path_fn("Kvasir-SEG")
    split = build_kvasir_datalist(root)
    assert len(split["training"]) == 800 and len(split["validation"]) == 100 and split["test"] == []


def test_real_brats_case_folders(shared_path_fn):
    root = shared_path_fn("BraTS2015-DeepMedic-examples")
    split = build_case_folder_datalist(root, {"flair": "Flair*.nii.gz", "t1c": "T1c*.nii.gz",
                                              "label": "OTMultiClass*.nii.gz"}, val_fraction=0.25, test_fraction=0.25)
    cases = sorted(c["case"] for v in split.values() for c in v)
    assert len(cases) == 4 and all("brats_2013_pat000" in c for c in cases)


def _case_tree(root, names, files=("Flair.nii.gz", "seg.nii.gz")):
    for n in names:
        for f in files:
            _touch(root / n / f)
    return root


def test_symlinked_case_folders_are_found(tmp_path):
    # a subset made of `ln -s /big/dataset/case_x subset/` (Path.rglob of Python 3.11 does not descend into these)
    store = _case_tree(tmp_path / "store", ["caseA", "caseB", "caseC"])
    sub = tmp_path / "subset"
    sub.mkdir()
    for n in ("caseA", "caseB"):
        (sub / n).symlink_to(store / n, target_is_directory=True)
    (sub / "twin").symlink_to(store / "caseA", target_is_directory=True)  # same real folder twice: kept once
    (sub / "local").mkdir()
    for f in ("Flair.nii.gz", "seg.nii.gz"):
        (sub / "local" / f).symlink_to(store / "caseC" / f)
    (sub / "local" / "loop").symlink_to(sub, target_is_directory=True)  # a symlink loop must not hang or duplicate
    split = build_case_folder_datalist(sub, {"image": "Flair*", "label": "seg*"}, val_fraction=0, test_fraction=0)
    items = sorted(split["training"], key=lambda c: c["case"])
    assert [c["case"] for c in items] == ["caseA", "caseB", "local"]
    assert all(c["image"].startswith(str(sub)) for c in items)  # paths through the subset, as the user laid it out
    assert build_case_folder_datalist(sub, {"image": "Flair*", "label": "seg*"}, seed=3) == \
        build_case_folder_datalist(sub, {"image": "Flair*", "label": "seg*"}, seed=3)


def test_isles22_symlinked_case_folders(bids, tmp_path):
    sub = tmp_path / "isles_subset"
    (sub / "derivatives").mkdir(parents=True)
    for c in ("sub-strokecase0002", "sub-strokecase0005"):
        (sub / c).symlink_to(bids / c, target_is_directory=True)
        (sub / "derivatives" / c).symlink_to(bids / "derivatives" / c, target_is_directory=True)
    split = build_isles22_datalist(sub, val_fraction=0, test_fraction=0)
    assert sorted(c["case"] for c in split["training"]) == ["sub-strokecase0002", "sub-strokecase0005"]


def test_real_brats_symlinked_subset(shared_path_fn, tmp_path):
    src = shared_path_fn("BraTS2015-DeepMedic-examples")
    sub = tmp_path / "subset"
    sub.mkdir()
    cases = sorted(src.glob("*/brats_*"))
    for c in cases:
        (sub / c.name).symlink_to(c, target_is_directory=True)
    split = build_case_folder_datalist(sub, {"flair": "Flair*.nii.gz", "label": "OTMultiClass*.nii.gz"},
                                       val_fraction=0, test_fraction=0)
    assert sorted(c["case"] for c in split["training"]) == sorted(c.name for c in cases) and len(cases) == 4


@pytest.fixture
def annexed(tmp_path):
    """Case folders whose files are relative symlinks to extension-less blobs (DVC / git-annex / datalad)."""
    import nibabel as nib
    import numpy as np

    store = tmp_path / ".annex" / "objects"
    store.mkdir(parents=True)
    root = tmp_path / "ds"
    for i in range(3):
        for k in ("Flair", "seg"):
            blob = store / f"MD5E-s{i}{k}--0a1b2c"
            nib.save(nib.Nifti1Image(np.full((4, 5, 3), i, np.float32), np.eye(4)), str(blob) + ".nii.gz")
            (store / f"MD5E-s{i}{k}--0a1b2c.nii.gz").rename(blob)  # the blob keeps no name or extension
            (root / f"case{i}").mkdir(parents=True, exist_ok=True)
            (root / f"case{i}" / f"{k}.nii.gz").symlink_to(os.path.relpath(blob, root / f"case{i}"))
    return root


def test_symlinked_files_keep_their_names(annexed, tmp_path):
    from monai.transforms import LoadImaged

    pats = {"image": "Flair*.nii.gz", "label": "seg*.nii.gz"}
    out = annexed / "lists" / "dl.json"
    build_case_folder_datalist(annexed, pats, out_json=out, val_fraction=0, test_fraction=0)
    raw = json.loads(out.read_text())["training"]
    assert {c["image"] for c in raw} == {f"../case{i}/Flair.nii.gz" for i in range(3)}  # relative, via the links
    absolute = tmp_path / "abs.json"
    build_case_folder_datalist(annexed, pats, out_json=absolute, val_fraction=0, test_fraction=0, relative=False)
    assert {c["label"] for c in json.loads(absolute.read_text())["training"]} == \
        {str(annexed / f"case{i}" / "seg.nii.gz") for i in range(3)}
    loaded = load_decathlon_datalist(out, data_list_key="training")
    assert all(v["image"].endswith(".nii.gz") and ".annex" not in v["image"] for v in loaded)
    d = LoadImaged(["image", "label"], image_only=True)(loaded[0])  # a reader is chosen by the .nii.gz suffix
    assert tuple(d["image"].shape) == (4, 5, 3)


def test_case_id_stays_an_id_after_loading(tmp_path):
    from monai_patcher.data.datalists import load_datalist

    root = _case_tree(tmp_path / "BraTS", ["pat1", "pat2", "pat3"])
    out = root / "datalist.json"  # the JSON in the dataset root: "case" == a folder name next to it
    build_case_folder_datalist(root, {"image": "Flair*", "label": "seg*"}, out_json=out, val_fraction=0,
                               test_fraction=0)
    # MONAI 1.6.1 load_decathlon_datalist joins every string that exists as a path below the JSON's folder
    # (image/label always), so there the case id becomes a path; documented in docs/data.md
    monai_items = load_decathlon_datalist(out, data_list_key="training")
    assert {v["case"] for v in monai_items} == {str(root / f"pat{i}") for i in (1, 2, 3)}
    items = load_datalist(out, "training")
    assert sorted(v["case"] for v in items) == ["pat1", "pat2", "pat3"]
    assert [{k: v for k, v in a.items() if k != "case"} for a in items] == \
        [{k: v for k, v in a.items() if k != "case"} for a in monai_items]  # the file paths as MONAI makes them
    other = tmp_path / "elsewhere"
    assert load_datalist(out, "training", base_dir=other)[0]["image"].startswith(str(other))


def test_builders_return_absolute_paths_for_a_relative_root(bids, tmp_path, monkeypatch):
    """The builders document absolute paths; a relative root gave cwd-relative ones (wrong once the cwd changes)."""
    for i in range(3):
        _touch(tmp_path / "cases" / f"p{i}" / "Flair.nii.gz")
        _touch(tmp_path / "kv" / "images" / f"im{i}.jpg")
        _touch(tmp_path / "kv" / "masks" / f"im{i}.jpg")
    monkeypatch.chdir(tmp_path)
    splits = [
        build_isles22_datalist(os.path.relpath(bids, tmp_path)),
        build_case_folder_datalist("cases", {"image": "Flair*"}, val_fraction=0, test_fraction=0),
        build_kvasir_datalist("kv", val_fraction=0, test_fraction=0),
    ]
    paths = [v for split in splits for items in split.values() for item in items for k, v in item.items() if k != "case"]
    assert len(paths) == 10 * 3 + 3 + 3 * 2
    assert all(os.path.isabs(p) and os.path.exists(p) for p in paths)

"""monai_patcher.bundle_utils: what only the bundles need (insert_after, check_bundle_root)."""

import json
from pathlib import Path

import pytest
from monai.transforms import CopyItemsd, EnsureChannelFirstd, Orientationd

from monai_patcher.bundle_utils import insert_after


def test_insert_after_by_class_name():
    first, second = EnsureChannelFirstd(keys="image"), Orientationd(keys="image", axcodes="RAS")
    copy = CopyItemsd(keys="label", names="scan_label")
    out = insert_after([first, second], "EnsureChannelFirstd", copy)
    assert out == [first, copy, second]
    assert insert_after([first, second], "Orientationd", copy, copy) == [first, second, copy, copy]


def test_insert_after_missing_class_names_what_is_there():
    with pytest.raises(ValueError, match=r"no CheckGeometryd in the transforms \(EnsureChannelFirstd\)"):
        insert_after([EnsureChannelFirstd(keys="image")], "CheckGeometryd", CopyItemsd(keys="a", names="b"))


def _bundle_folder(root: Path, name) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(name if isinstance(name, str) else json.dumps(name))
    return root


def test_check_bundle_root_accepts_the_bundle_folder_and_returns_it_unchanged(tmp_path, monkeypatch):
    from monai_patcher.bundle_utils import check_bundle_root

    folder = _bundle_folder(tmp_path / "b", {"name": "Stroke"})
    assert check_bundle_root(str(folder), name="Stroke") == str(folder)
    monkeypatch.chdir(folder)
    assert check_bundle_root(".", name="Stroke") == "."  # relative stays relative (logs show ./models/...)


def test_check_bundle_root_refuses_a_folder_that_is_not_a_bundle(tmp_path, monkeypatch):
    """The repository root (or any other working directory) under the '.' default: no configs/metadata.json."""
    from monai_patcher.bundle_utils import check_bundle_root

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"bundle_root '\.' \({tmp_path}\) is not a bundle folder: "
                                         r"configs/metadata\.json does not exist\. .*--bundle_root"):
        check_bundle_root(".", name="Stroke")


def test_check_bundle_root_refuses_another_bundle(tmp_path):
    from monai_patcher.bundle_utils import check_bundle_root

    other = _bundle_folder(tmp_path / "polyp", {"name": "Polyp"})
    with pytest.raises(ValueError, match=r"is the folder of the bundle 'Polyp', not of 'Stroke'\. .*--bundle_root"):
        check_bundle_root(other, name="Stroke")
    broken = _bundle_folder(tmp_path / "broken", "{not json")
    with pytest.raises(ValueError, match=r"metadata\.json is not a JSON object"):
        check_bundle_root(broken, name="Stroke")
    listed = _bundle_folder(tmp_path / "listed", ["Stroke"])
    with pytest.raises(ValueError, match=r"metadata\.json is not a JSON object"):
        check_bundle_root(listed, name="Stroke")


def test_report_errors_plainly_ends_with_the_wrapped_clear_error(monkeypatch, capsys):
    import sys

    from monai_patcher.bundle_utils import report_errors_plainly
    from monai_patcher.data import DataError

    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: printed.append(exc[1]))  # stands in for Python's traceback
    report_errors_plainly()
    report_errors_plainly()  # a second call adds nothing
    try:
        try:
            raise DataError("/data/x_dwi.nii.gz: a DWI file needs its ADC;\n  pass --input_adc.")
        except DataError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from inner
    except RuntimeError as outer:
        sys.excepthook(type(outer), outer, outer.__traceback__)
        wrapped = outer
    assert printed == [wrapped]  # the traceback as before
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: /data/x_dwi.nii.gz: a DWI file needs its ADC; pass --input_adc."  # one line, last
    sys.excepthook(ZeroDivisionError, ZeroDivisionError("x"), None)  # not ours: nothing added
    assert capsys.readouterr().err == ""

"""monai_patcher.bundle_utils: what only the bundles need (insert_after; find_bundle_root is tested through the bundles)."""

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

"""MetaImage files (monai_patcher/data/readers/metaimage.py): truncated voxel data named as such."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk

from monai_patcher.data import DataError, SimpleITKReader


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

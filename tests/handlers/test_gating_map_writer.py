"""Pictures of the gating maps (monai_patcher/handlers/gating_map_writer.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from handlers_helpers import sagittal_stored_case
from monai_patcher.handlers import GatingMapWriter


def test_gating_map_writer(tmp_path):
    from monai.data import MetaTensor

    from monai_patcher.handlers import GatingMapWriter

    g = torch.softmax(torch.rand(4, 5, 6, 3), dim=0)
    item = {"gating": MetaTensor(g, meta={"filename_or_obj": "/x/c1.nii.gz"}), "image": torch.rand(2, 5, 6, 3)}
    paths = GatingMapWriter(tmp_path, every=2).write(item)
    assert [p.split("/")[-1] for p in paths] == ["slice_000.png", "slice_002.png"] and "c1_gating" in paths[0]
    paths2d = GatingMapWriter(tmp_path).write({"gating": g[..., 0]})
    assert paths2d[0].endswith("_gating.png")


def _changed_pixels(png: str, background) -> set[tuple[int, int]]:
    from PIL import Image

    rgb = np.asarray(Image.open(png))
    return {(int(r), int(c)) for r, c in zip(*np.nonzero((rgb != np.asarray(background, np.uint8)).any(-1)))}


@pytest.mark.parametrize("slice_axis", [2, 1, 0])
def test_gating_map_writer_aligns_image_and_gating(tmp_path, slice_axis):
    """An image blob and a gating blob at the same voxel land on the same pixel of the picture (the image under
    the colours is oriented as the maps are); the blob is off-centre in both in-plane axes, so a flip or a
    transpose of only one of them moves it elsewhere."""
    from monai_patcher.handlers import GatingMapWriter

    shape = (7, 6, 5)
    voxel = {2: (1, 4, 2), 1: (1, 2, 4), 0: (2, 1, 4)}[slice_axis]  # low on one in-plane axis, high on the other
    g = torch.zeros(4, *shape)
    g[0] = 1.0  # expert 1 everywhere ...
    g[(0, *voxel)], g[(1, *voxel)] = 0.0, 1.0  # ... but expert 2 at the blob
    img = torch.zeros(2, *shape)
    img[(1, *voxel)] = 10.0  # a bright voxel on an otherwise black image (channel 1 shown)
    paths = GatingMapWriter(tmp_path / str(slice_axis), image_channel=1, slice_axis=slice_axis).write(
        {"gating": MetaTensor(g, meta={"filename_or_obj": "/x/c2.nii.gz"}), "image": img})
    k = voxel[slice_axis]
    assert len(paths) == shape[slice_axis] and Path(paths[k]).name == f"slice_{k:03d}.png"
    expert1, expert2 = np.array([230, 25, 75]), np.array([60, 180, 75])  # see tests/test_visualize.py
    background = np.round(0.5 * expert1)  # black image under expert 1, alpha 0.5
    (pixel,) = _changed_pixels(paths[k], background)  # exactly one pixel differs: image and gating blob coincide
    from PIL import Image

    assert tuple(np.asarray(Image.open(paths[k]))[pixel]) == tuple(np.round(0.5 * 255 + 0.5 * expert2))
    for j, p in enumerate(paths):
        if j != k:
            assert _changed_pixels(p, background) == set()
    # 2D (E x H x W): the same
    g2, img2 = g.select(1 + slice_axis, k), img.select(1 + slice_axis, k)
    (p2d,) = GatingMapWriter(tmp_path / f"{slice_axis}_2d", image_channel=1).write({"gating": g2, "image": img2})
    (pixel2d,) = _changed_pixels(p2d, background)
    assert tuple(np.asarray(Image.open(p2d))[pixel2d]) == tuple(np.round(0.5 * 255 + 0.5 * expert2))


def test_gating_map_writer_anatomical_plane_of_a_sagittal_stored_volume(tmp_path):
    """``slice_axis="axial"`` (the stroke bundle's setting) cuts maps inverted to a sagittal-stored scan's grid across
    its axial axis, as OverlayWriter does: the same pictures as the same maps stored in RAS, cut along axis 2."""
    from PIL import Image

    case = sagittal_stored_case()
    g = torch.zeros(4, *case["pred"].shape[1:])
    g[0] = 1.0 - case["pred"][0]
    g[1] = case["pred"][0]  # expert 2 where the prediction's block is: off-centre in every axis
    gating = MetaTensor(g, affine=case["pred"].affine, meta=dict(case["pred"].meta))
    paths = GatingMapWriter(tmp_path, image_channel=1, slice_axis="axial").write({"gating": gating, "image": case["image"]})
    assert len(paths) == 8 and Image.open(paths[0]).size == (12, 10)  # 8 S-I slices of L-R x A-P
    ras_g = torch.flip(g.permute(0, 3, 1, 2), dims=[2, 3])  # PIR -> RAS (as in test_overlay_writer.py)
    ras_img = torch.flip(case["image"].as_tensor().permute(0, 3, 1, 2), dims=[2, 3])
    ras_paths = GatingMapWriter(tmp_path / "ras", image_channel=1, slice_axis=2).write(
        {"gating": MetaTensor(ras_g, meta=dict(case["pred"].meta)), "image": ras_img})
    for p in paths:  # the scan's slice k along S-I is slice 7 - k along I-S
        twin = Path(ras_paths[0]).parent / f"slice_{7 - int(Path(p).stem[-3:]):03d}.png"
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(twin)))
    with pytest.raises(ValueError, match="needs gating maps with an affine"):
        GatingMapWriter(tmp_path, slice_axis="axial").write({"gating": g})
    with pytest.raises(ValueError, match="slice_axis must be"):
        GatingMapWriter(tmp_path, slice_axis="transverse")

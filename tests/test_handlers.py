"""Per-slice metrics and the overlay writer."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_patcher.handlers import OverlayWriter, SliceDiceMetric, SliceIoUMetric, SliceMeanDice, SliceMeanIoU


def _volumes():
    y = torch.zeros(1, 1, 4, 4, 3)
    p = torch.zeros(1, 1, 4, 4, 3)
    y[0, 0, :2, :2, 0] = 1  # slice 0: perfect
    p[0, 0, :2, :2, 0] = 1
    y[0, 0, :2, :2, 1] = 1  # slice 1: half overlap
    p[0, 0, :2, 0, 1] = 1
    p[0, 0, 3, 3, 2] = 1  # slice 2: no lesion in the ground truth -> ignored
    return p, y


def test_slice_dice_per_axial_slice():
    p, y = _volumes()
    m = SliceDiceMetric()
    m(p, y)
    buf = m.get_buffer()
    assert buf.shape == (3, 1)  # one row per slice
    assert buf[0, 0] == 1.0 and math.isclose(float(buf[1, 0]), 2 * 2 / (2 + 4), rel_tol=1e-6) and torch.isnan(buf[2, 0])
    assert math.isclose(float(m.aggregate()), (1.0 + 2 / 3) / 2, rel_tol=1e-6)


def test_slice_iou_and_other_axis():
    p, y = _volumes()
    m = SliceIoUMetric()
    m(p, y)
    assert math.isclose(float(m.get_buffer()[1, 0]), 2 / 4, rel_tol=1e-6)
    m0 = SliceDiceMetric(slice_axis=0)
    m0(p, y)
    assert m0.get_buffer().shape == (4, 1)


def _np_slice_scores(pred: np.ndarray, label: np.ndarray, axis: int) -> tuple[list[float], list[float]]:
    """Dice and IoU of every 2D slice (along ``axis``) of two boolean ``X x Y x Z`` arrays, in plain numpy;
    slices with an empty ground truth are skipped (``ignore_empty=True``)."""
    dices, ious = [], []
    for k in range(label.shape[axis]):
        p, y = np.take(pred, k, axis=axis), np.take(label, k, axis=axis)
        if not y.any():
            continue
        inter, union = (p & y).sum(), (p | y).sum()
        dices.append(2 * inter / (p.sum() + y.sum()))
        ious.append(inter / union)
    return dices, ious


def test_slice_mean_dice_and_iou_handlers_on_an_engine():
    """Both ignite handlers, attached to an Engine fed two hand-made cases (one per iteration, as an evaluator
    with ``from_engine(["pred", "label"])``): the mean over all slices of both cases of the per-slice Dice and IoU,
    computed here in numpy; Dice and IoU differ on these cases, so one handler computing the other's metric fails."""
    from ignite.engine import Engine
    from monai.handlers import from_engine

    shape = (6, 5, 4)
    cases = []
    # case 1: slice 0 perfect, slice 1 half overlap, slice 2 FP only (empty truth: skipped), slice 3 one-third
    y1, p1 = np.zeros(shape, bool), np.zeros(shape, bool)
    y1[1:3, 1:3, 0] = p1[1:3, 1:3, 0] = True
    y1[0:2, 0:2, 1] = True
    p1[0:2, 0, 1] = True
    p1[4, 4, 2] = True
    y1[2:5, 2, 3] = True
    p1[2, 2:5, 3] = True
    cases.append((p1, y1))
    # case 2: slice 0 missed entirely, slice 1 over-segmented, slices 2-3 empty truth and empty prediction
    y2, p2 = np.zeros(shape, bool), np.zeros(shape, bool)
    y2[3, 3, 0] = True
    y2[1:3, 1:3, 1] = True
    p2[0:4, 0:4, 1] = True
    cases.append((p2, y2))

    dices, ious = [], []
    for p, y in cases:
        d, i = _np_slice_scores(p, y, axis=2)
        dices += d
        ious += i
    assert len(dices) == 5 and not np.allclose(dices, ious)
    assert np.allclose(dices, [1.0, 2 / 3, 1 / 3, 0.0, 0.4]) and np.allclose(ious, [1.0, 0.5, 0.2, 0.0, 0.25])

    data = [{"pred": [torch.tensor(p[None], dtype=torch.float32)], "label": [torch.tensor(y[None], dtype=torch.float32)]}
            for p, y in cases]
    engine = Engine(lambda e, batch: batch)
    SliceMeanDice(output_transform=from_engine(["pred", "label"]), save_details=True).attach(engine, "slice_dice")
    SliceMeanIoU(output_transform=from_engine(["pred", "label"])).attach(engine, "slice_iou")
    engine.run(data, max_epochs=1)
    assert engine.state.metrics["slice_dice"] == pytest.approx(np.mean(dices), abs=1e-6)
    assert engine.state.metrics["slice_iou"] == pytest.approx(np.mean(ious), abs=1e-6)
    details = engine.state.metric_details["slice_dice"]  # one row per slice of every case, NaN for empty truth
    assert details.shape == (2 * shape[2], 1)
    assert np.allclose(details[~torch.isnan(details)].numpy(), dices, atol=1e-6)

    # along another axis (the handler passes slice_axis to its metric)
    d0, i0 = [], []
    for p, y in cases:
        d, i = _np_slice_scores(p, y, axis=0)
        d0 += d
        i0 += i
    engine0 = Engine(lambda e, batch: batch)
    SliceMeanDice(slice_axis=0, output_transform=from_engine(["pred", "label"])).attach(engine0, "slice_dice")
    SliceMeanIoU(slice_axis=0, output_transform=from_engine(["pred", "label"])).attach(engine0, "slice_iou")
    engine0.run(data, max_epochs=1)
    assert engine0.state.metrics["slice_dice"] == pytest.approx(np.mean(d0), abs=1e-6)
    assert engine0.state.metrics["slice_iou"] == pytest.approx(np.mean(i0), abs=1e-6)


def _reoriented(x: torch.Tensor, affine: torch.Tensor):
    """``x`` (B x C x X x Y x Z, identity affine) in another voxel order: axes (Z, X, Y), the new Y flipped.

    Returns the same voxels as a MetaTensor whose affine maps the new indices to the same world points.
    """
    from monai.data import MetaTensor

    moved = torch.flip(x.permute(0, 1, 4, 2, 3), dims=[4])  # new (a, b, c) = old (b, Y-1-c, a)
    ny = x.shape[3]
    to_old = torch.tensor([[0, 1, 0, 0], [0, 0, -1, ny - 1], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    return MetaTensor(moved, affine=affine.double() @ to_old)


def test_slice_metrics_by_anatomical_plane():
    """``slice_axis="axial"`` cuts along the array axis pointing inferior-superior, wherever it is."""
    p, y = _volumes()
    eye = torch.eye(4)
    axial = SliceDiceMetric(slice_axis="axial")
    axial(_reoriented(p, eye), _reoriented(y, eye))  # axial is now array axis 0, and comes as a MetaTensor
    ref = SliceDiceMetric(slice_axis=2)
    ref(p, y)
    torch.testing.assert_close(axial.get_buffer(), ref.get_buffer(), equal_nan=True)
    # an oblique affine: the axis closest to superior wins; sagittal and coronal are the other two
    theta = math.radians(20)
    rot = torch.tensor([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0], [0, math.sin(theta), math.cos(theta), 0],
                        [0, 0, 0, 1]]) @ torch.diag(torch.tensor([0.9, 0.9, 3.0, 1.0]))
    for plane, n_slices in (("sagittal", 4), ("coronal", 4), ("axial", 3)):
        m = SliceIoUMetric(slice_axis=plane)
        m(*(_reoriented(t, rot) for t in (p, y)))
        assert m.get_buffer().shape == (n_slices, 1), plane


def test_slice_metric_plane_errors():
    import pytest

    with pytest.raises(ValueError, match="slice_axis must be"):
        SliceDiceMetric(slice_axis="transverse")
    with pytest.raises(ValueError, match="slice_axis must be"):
        SliceDiceMetric(slice_axis=3)
    p, y = _volumes()
    with pytest.raises(ValueError, match="needs predictions with an affine"):
        SliceDiceMetric(slice_axis="axial")(p, y)  # a plain tensor has no orientation


def test_overlay_writer_3d_and_2d(tmp_path):
    from monai.data import MetaTensor

    img = MetaTensor(torch.rand(2, 4, 4, 3), meta={"filename_or_obj": "/x/case7_adc.nii.gz"})
    p, y = _volumes()
    w = OverlayWriter(tmp_path, image_channel=1)
    paths = w.write({"image": img, "pred": MetaTensor(p[0], meta=dict(img.meta)), "label": y[0]})
    assert sorted(x.split("/")[-1] for x in paths) == ["slice_000.png", "slice_001.png", "slice_002.png"]
    assert all("case7_adc" in x for x in paths)
    img2 = MetaTensor(torch.rand(3, 6, 5), meta={"filename_or_obj": "/x/polyp1.jpg"})
    out = OverlayWriter(tmp_path).write({"image": img2, "pred": torch.ones(1, 6, 5)})
    from PIL import Image

    assert out[0].endswith("polyp1_overlay.png") and Image.open(out[0]).size == (6, 5)  # (W, H) of the (W, H) array
    assert np.asarray(Image.open(out[0])).shape == (5, 6, 3)


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


def _sagittal_stored_case():
    """A PIR-stored volume (array axes: anterior->posterior, superior->inferior, left->right), as a sagittal
    scan is after ``Invertd`` back to its own grid: the prediction is a block on the array's axis 1 (slices
    3 and 4), in the anterior part (low axis-0 index) and at low axis-2 indices."""
    from monai.data import MetaTensor

    affine = torch.tensor([[0.0, 0, 1, -10], [-1, 0, 0, 20], [0, -1, 0, 30], [0, 0, 0, 1]])  # columns: P, I, R
    shape = (10, 8, 12)  # 10 A-P, 8 S-I, 12 L-R voxels
    pred = torch.zeros(1, *shape)
    pred[0, 1:4, 3:5, 1:4] = 1
    meta = {"filename_or_obj": "/x/sag_case.nii.gz"}
    noise = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    image = MetaTensor(noise, affine=affine, meta=dict(meta))
    return {"image": image, "pred": MetaTensor(pred, affine=affine, meta=dict(meta))}


@pytest.mark.parametrize("plane, files, size", [
    ("axial", ["slice_003.png", "slice_004.png"], (12, 10)),
    ("coronal", ["slice_001.png", "slice_002.png", "slice_003.png"], (12, 8)),
    ("sagittal", ["slice_001.png", "slice_002.png", "slice_003.png"], (10, 8)),
])
def test_overlay_writer_anatomical_plane_of_a_sagittal_stored_volume(tmp_path, plane, files, size):
    from PIL import Image

    paths = OverlayWriter(tmp_path, image_channel=1, label_key=None, slice_axis=plane).write(_sagittal_stored_case())
    assert sorted(Path(p).name for p in paths) == files  # the scan's own slice indices along the plane's axis
    assert Image.open(paths[0]).size == size  # (width, height): L-R x A-P, L-R x S-I, A-P x S-I
    if plane == "axial":  # the same pictures as of the same case stored in RAS, cut along its axis 2 (S)
        case = _sagittal_stored_case()
        ras = {k: torch.flip(v.permute(0, 3, 1, 2), dims=[2, 3]) for k, v in case.items()}  # PIR -> RAS
        ras_paths = OverlayWriter(tmp_path / "ras", image_channel=1, label_key=None, slice_axis=2).write(ras)
        assert sorted(Path(p).name for p in ras_paths) == ["slice_003.png", "slice_004.png"]  # 7 - 4, 7 - 3
        for p in paths:  # the scan's slice k along S-I is slice 7 - k along I-S
            twin = Path(ras_paths[0]).parent / f"slice_{7 - int(Path(p).stem[-3:]):03d}.png"
            assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(twin)))


def test_stroke_inference_overlays_are_axial(tmp_path):
    """inference.json's OverlayWriter settings on a sagittal-stored scan: PNGs are axial slices."""
    import json

    configs = Path(__file__).resolve().parents[1] / "bundles" / "patcher_stroke" / "configs"
    cfg = json.loads((configs / "inference.json").read_text())
    entry = next(h for h in cfg["handlers"] if h.get("_target_", "").endswith("OverlayWriter"))
    paths = OverlayWriter(tmp_path, label_key=None, slice_axis=entry["slice_axis"]).write(_sagittal_stored_case())
    assert sorted(Path(p).name for p in paths) == ["slice_003.png", "slice_004.png"]


def test_plane_axis_is_the_axis_orientationd_slices_along():
    """On oblique scans the anatomical plane must map to the array axis MONAI's Orientationd (nibabel's
    io_orientation) puts there, i.e. the axis the network sliced along; a per-row argmax of the affine
    disagreed on ~5 % of random rotations (some at 45 degrees) and could give two planes the same axis."""
    from monai.transforms import Orientation

    from monai_patcher.handlers import _plane_axis

    rng = np.random.default_rng(0)
    for _ in range(200):
        q, _r = np.linalg.qr(rng.normal(size=(3, 3)))
        affine = np.eye(4)
        affine[:3, :3] = q @ np.diag([1.0, 1.0, 3.0])
        ras = Orientation("RAS")(MetaTensor(torch.zeros(1, 5, 6, 7), affine=torch.tensor(affine)))
        for plane, ras_axis in (("sagittal", 0), ("coronal", 1), ("axial", 2)):
            assert (5, 6, 7)[_plane_axis(torch.tensor(affine), plane)] == ras.shape[1 + ras_axis], (plane, affine)


@pytest.mark.parametrize("ignore_empty", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_dice_equals_monai_dice_metric_on_the_cut_slices(ignore_empty, include_background, axis):
    """SliceDiceMetric fed case by case (as the ignite handler does) equals MONAI's DiceMetric on the explicitly cut
    2D slices, for several cases and channels, empty ground-truth slices, with and without background."""
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(axis)
    shape = (3, 2, 5, 6, 7)  # B x C x X x Y x Z
    y = torch.tensor((rng.random(shape) < 0.05).astype(np.float32))
    p = torch.tensor((rng.random(shape) < 0.05).astype(np.float32))
    y[..., 3] = 0  # some empty ground-truth slices
    y[:, :, 1] = 0
    rest = [s for i, s in enumerate(shape[2:]) if i != axis]
    cut = lambda t: torch.movedim(t, 2 + axis, 1).reshape(-1, shape[1], *rest)  # noqa: E731 - (B*n) x C x 2D
    expected = DiceMetric(include_background=include_background, ignore_empty=ignore_empty)
    expected(cut(p), cut(y))
    got = SliceDiceMetric(include_background=include_background, ignore_empty=ignore_empty, slice_axis=axis)
    for b in range(shape[0]):
        got([p[b]], [y[b]])
    assert math.isclose(float(got.aggregate()), float(expected.aggregate()), rel_tol=1e-6)

"""ComputeEADCd and the stroke pipelines (synthetic + ISLES'22 + BraTS), including their refusal of bad input.

The input checks' own tests (CheckVolumed, CheckGeometryd) are in test_checks.py.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose, ConcatItemsd, EnsureChannelFirstd, LoadImaged, NormalizeIntensityd

from monai_patcher.data import DataError, SimpleITKReader
from monai_patcher.transforms import (
    CheckGeometryd,
    ComputeEADCd,
    RandSliced,
    detect_adc_unit,
    stroke_inference_transforms,
    stroke_train_transforms,
    stroke_val_transforms,
)


@pytest.mark.parametrize("unit, scale", [("mm2/s", 1e-3), ("1e-3mm2/s", 1.0), ("1e-6mm2/s", 1e3)])
def test_eadc_units_detected_and_formula(unit, scale):
    adc_1e3 = torch.tensor([[0.0, 0.5, 0.8, 1.0, 3.0, -0.1]])  # in 1e-3 mm^2/s
    adc = adc_1e3 * scale
    assert detect_adc_unit(adc) == unit
    out = ComputeEADCd("adc", "eadc")({"adc": adc})["eadc"][0]
    expected = [0.0] + [math.exp(-1000 * v * 1e-3) for v in (0.5, 0.8, 1.0, 3.0)] + [0.0]  # negative: background
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5)
    given = ComputeEADCd("adc", "eadc", unit=unit)({"adc": adc})["eadc"]
    torch.testing.assert_close(given, out[None])


def test_eadc_b_value_background_and_meta():
    adc = MetaTensor(torch.tensor([[0.0, 1.0]]), meta={"filename_or_obj": "adc.nii"})
    out = ComputeEADCd("adc", b_value=500, zero_background=False)({"adc": adc})["adc"]
    np.testing.assert_allclose(out.numpy(), [[1.0, math.exp(-0.5)]], rtol=1e-6)
    assert out.meta["adc_unit"] == "1e-3mm2/s" and out.meta["filename_or_obj"] == "adc.nii"
    with pytest.raises(ValueError):
        ComputeEADCd("adc", unit="furlongs")


def test_eadc_negative_adc_is_background_not_brightest():
    """Negative ADC (interpolation artefacts on the brain's edge) must not become eADC = 1, the channel maximum."""
    adc = torch.tensor([[0.0, -0.05, -2.0, 0.8]])  # 1e-3 mm^2/s
    out = ComputeEADCd("adc", "e")({"adc": adc})["e"][0]
    np.testing.assert_allclose(out.numpy(), [0.0, 0.0, 0.0, math.exp(-0.8)], rtol=1e-6)
    # raw formula: negatives look like the (exp(0) = 1) background around them, never brighter; still in [0, 1]
    raw = ComputeEADCd("adc", "e", zero_background=False)({"adc": adc})["e"][0]
    np.testing.assert_allclose(raw.numpy(), [1.0, 1.0, 1.0, math.exp(-0.8)], rtol=1e-6)


@pytest.mark.parametrize("given, scale", [("1e-3mm2/s", 1e3), ("1e-6mm2/s", 1.0), ("mm2/s", 1.0)])
def test_eadc_warns_when_given_unit_disagrees(caplog, given, scale):
    """ISLES'22 as released is in 1e-6 mm^2/s: forcing 1e-3 mm^2/s gives exp(-800) = 0, an empty eADC channel."""
    adc = MetaTensor(torch.tensor([[0.0, 0.6, 0.8, 1.0, 3.0]]) * scale, meta={"filename_or_obj": "/d/case7_adc.nii.gz"})
    with caplog.at_level("WARNING", logger="monai_patcher.transforms.stroke"):
        ComputeEADCd("adc", "eadc", unit=given)({"adc": adc})
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(msgs) == 1, msgs
    assert "/d/case7_adc.nii.gz" in msgs[0] and "'adc'" in msgs[0] and repr(given) in msgs[0]
    assert repr(detect_adc_unit(adc)) in msgs[0]


def test_eadc_no_warning_when_given_unit_agrees(caplog):
    adc = torch.tensor([[0.0, 0.6, 0.8, 1.0, 3.0]])
    with caplog.at_level("WARNING", logger="monai_patcher.transforms.stroke"):
        ComputeEADCd("adc", unit="1e-3mm2/s")({"adc": adc})
        ComputeEADCd("adc", unit="1e-3mm2/s")({"adc": torch.zeros(1, 3)})  # nothing to detect from: no warning
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_eadc_rejects_nan_and_empty():
    with pytest.raises(DataError, match="NaN"):
        ComputeEADCd("adc")({"adc": torch.tensor([[1.0, float("nan")]])})
    with pytest.raises(DataError, match="no positive"):
        ComputeEADCd("adc")({"adc": torch.zeros(1, 3)})


def _write(path, arr, affine=np.eye(4)):
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return str(path)


@pytest.fixture
def case(tmp_path):
    rng = np.random.default_rng(1)
    brain = np.zeros((20, 24, 6), bool)
    brain[3:17, 4:20, :] = True
    adc = np.where(brain, rng.uniform(0.6, 1.0, brain.shape), 0).astype(np.float32)
    dwi = np.where(brain, rng.uniform(400, 600, brain.shape), 0).astype(np.float32)
    lab = np.zeros(brain.shape, np.uint8)
    lab[8:12, 8:12, 4] = 1
    return {
        "dwi": _write(tmp_path / "dwi.nii.gz", dwi),
        "adc": _write(tmp_path / "adc.nii.gz", adc),
        "label": _write(tmp_path / "label.nii.gz", lab),
    }


def test_stroke_val_pipeline(case):
    d = stroke_val_transforms(spatial_size=32)(case)
    img, lab = d["image"], d["label"]
    assert tuple(img.shape) == (2, 32, 32, 6) and tuple(lab.shape) == (1, 32, 32, 6)
    assert img.dtype == torch.float32
    assert set(lab.unique().tolist()) == {0.0, 1.0}
    for c in range(2):  # normalised inside the brain (the in-plane resize afterwards smooths the noise)
        nz = img[c] != 0
        assert abs(float(img[c][nz].mean())) < 0.05 and 0.3 < float(img[c][nz].std()) < 1.05
    assert sorted(d) == ["image", "label"]
    assert int(torch.nonzero(lab.sum(dim=(0, 1, 2))).flatten()[0]) == 4  # lesion stays on slice 4


def test_stroke_inference_pipeline_keeps_a_label_in_the_scan_grid(case, tmp_path):
    """``stroke_inference_transforms(label_key=...)`` (the bundle's inference, for overlays): the label is loaded and
    checked but stays in the scan's own grid, next to the same image as without it; an item without a label is
    fine; a label on another grid is refused."""
    with_label = stroke_inference_transforms(label_key="label", spatial_size=32)(case)
    without = stroke_inference_transforms(spatial_size=32)({k: case[k] for k in ("dwi", "adc")})
    assert sorted(with_label) == ["image", "label"] and sorted(without) == ["image"]
    assert torch.equal(with_label["image"], without["image"]) and tuple(with_label["image"].shape) == (2, 32, 32, 6)
    assert tuple(with_label["label"].shape) == (1, 20, 24, 6)  # as stored, not resized
    assert float(with_label["label"][0, 9, 9, 4]) == 1.0
    no_label = {k: case[k] for k in ("dwi", "adc")}
    assert sorted(stroke_inference_transforms(label_key="label", spatial_size=32)(no_label)) == ["image"]
    moved = _write(tmp_path / "moved.nii.gz", np.zeros((20, 24, 6), np.uint8), np.diag([2.0, 1, 1, 1]))
    with pytest.raises(Exception) as info:  # Compose wraps the transform's DataError
        stroke_inference_transforms(label_key="label", spatial_size=32)({**case, "label": moved})
    assert isinstance(info.value.__cause__, DataError) and "moved.nii.gz (key 'label') has a different affine" in str(
        info.value.__cause__)
    with pytest.raises(ValueError, match="not both"):
        stroke_val_transforms(scan_label_key="scan_label")


def test_stroke_train_pipeline_cached(case):
    xf = stroke_train_transforms(spatial_size=32, num_samples=3, pos_ratio=1.0)
    ds = CacheDataset([case], xf, progress=False)
    s1 = ds[0]
    assert len(s1) == 3
    for s in s1:
        assert tuple(s["image"].shape) == (2, 32, 32) and tuple(s["label"].shape) == (1, 32, 32)
        assert s["label"].meta["slice_index"] == 4  # pos_ratio 1: always the lesion slice
    # the cache holds the processed volume, so slicing does not re-read files
    assert tuple(ds._cache[0]["image"].shape) == (2, 32, 32, 6)


@pytest.mark.parametrize(
    "mutate, match",
    [
        ("nan", "NaN"),
        ("shape", "spatial shape"),
        ("affine", "affine"),
        ("empty", "empty"),
        ("2d", "volume"),
    ],
)
def test_stroke_pipeline_bad_input(case, tmp_path, mutate, match):
    bad = dict(case)
    target = "label" if mutate == "shape" else "adc"
    arr = np.asarray(nib.load(case[target]).dataobj).astype(np.float32)
    aff = np.eye(4)
    if mutate == "nan":
        arr[5, 5, 2] = np.nan
    elif mutate == "shape":
        arr = arr[:, :, :5]
    elif mutate == "affine":
        aff = np.diag([2.0, 1, 1, 1])
    elif mutate == "empty":
        arr[:] = 0
    elif mutate == "2d":
        arr = arr[:, :, 0]
    bad[target] = _write(tmp_path / f"bad_{target}.nii.gz", arr, aff)
    before = {k: open(v, "rb").read() for k, v in bad.items()}
    with pytest.raises(Exception) as info:
        stroke_val_transforms(spatial_size=32)(bad)
    root = info.value
    while root.__cause__ is not None:
        root = root.__cause__
    assert isinstance(root, DataError), repr(root)
    assert match in str(root) and "bad_" in str(root)
    assert before == {k: open(v, "rb").read() for k, v in bad.items()}  # user files untouched


def test_4d_dwi_with_several_b_values_is_named_as_such(case, tmp_path):
    """A DWI file holding its b = 0, 500 and 1000 volumes said "Patcher was built for 2 input channels, got 4"."""
    dwi = np.asarray(nib.load(case["dwi"]).dataobj)
    bad = dict(case, dwi=_write(tmp_path / "dwi_3b.nii.gz", np.stack([dwi, dwi / 2, dwi / 3], axis=-1)))
    with pytest.raises(Exception) as info:
        stroke_inference_transforms(spatial_size=32)({k: bad[k] for k in ("dwi", "adc")})
    root = info.value
    while root.__cause__ is not None:
        root = root.__cause__
    assert isinstance(root, DataError), repr(root)
    assert "dwi_3b.nii.gz (key 'dwi'): expected 1 channel(s), got 3: the file holds 3 volumes" in str(root)
    assert "several b-values" in str(root) and "b = 1000" in str(root)


def test_real_isles_eadc_and_inference_chain(shared_path_fn):
    base = shared_path_fn("ISLES-2022-case0001", "data")
    item = {"dwi": str(base / "sub-strokecase0001_ses-0001_dwi.nii.gz"),
            "adc": str(base / "sub-strokecase0001_ses-0001_adc.nii.gz")}
    d = Compose([LoadImaged("adc", reader=SimpleITKReader()), EnsureChannelFirstd("adc"), ComputeEADCd("adc", "eadc")])(item)
    e, adc = d["eadc"], d["adc"]
    assert e.meta["adc_unit"] == "1e-3mm2/s"
    assert float(e.min()) >= 0 and float(e.max()) <= 1
    assert torch.all(e[adc == 0] == 0)
    assert int((adc < 0).sum()) > 50 and torch.all(e[adc < 0] == 0)  # negative ADC (brain edge): background
    inside = adc > 0.5
    np.testing.assert_allclose(e[inside].numpy(), np.exp(-adc[inside].numpy()), rtol=1e-5)
    # at the native in-plane size (112: Resized is an identity) the negative-ADC voxels stay 0 after the
    # normalisation, instead of the channel's maximum z-score (a lesion-like rim)
    native = stroke_inference_transforms(spatial_size=112)(item)["image"][0]
    neg_ras = torch.flip(adc[0] < 0, dims=(0,))  # the file is LAS: Orientationd(RAS) flips axis 0
    assert torch.all(native[neg_ras] == 0) and float(native.max()) > 3
    out = stroke_inference_transforms()(item)
    assert tuple(out["image"].shape) == (2, 256, 256, 73) and out["image"].dtype == torch.float32
    assert [op["class"] for op in out["image"].applied_operations] == ["Orientation", "Resize"]


def test_real_brats_2d_sample(shared_path_fn):
    case = shared_path_fn("BraTS2015-DeepMedic-examples", "train", "brats_2013_pat0005_1")
    item = {"flair": str(case / "Flair_subtrMeanDivStd.nii.gz"), "t1c": str(case / "T1c_subtrMeanDivStd.nii.gz"),
            "label": str(case / "OTMultiClass.nii.gz")}
    from monai.transforms import AsDiscreted, Resized

    xf = Compose(
        [
            LoadImaged(["flair", "t1c", "label"], reader=SimpleITKReader()),
            EnsureChannelFirstd(["flair", "t1c", "label"]),
            CheckGeometryd(["flair", "t1c", "label"]),
            ConcatItemsd(["flair", "t1c"], "image"),
            AsDiscreted("label", threshold=0.5),
            RandSliced(["image", "label"], "label", pos_ratio=1.0, num_samples=2, image_key="image"),
            NormalizeIntensityd("image", nonzero=True, channel_wise=True),  # per slice here: keeps the test fast
            Resized(["image", "label"], spatial_size=(256, 256), mode=["bilinear", "nearest"]),
        ]
    )
    xf.set_random_state(0)
    samples = xf(item)
    for s in samples:
        img, lab = s["image"], s["label"]
        assert tuple(img.shape) == (2, 256, 256) and tuple(lab.shape) == (1, 256, 256)
        assert img.dtype == torch.float32
        assert set(lab.unique().tolist()) == {0.0, 1.0}  # positive slice, binary
        assert torch.isfinite(img).all() and -10 < float(img.min()) < 0 < float(img.max()) < 30
        assert s["label"].meta["filename_or_obj"].endswith("OTMultiClass.nii.gz")


def test_bundle_json_chain_from_docs(case):
    """The training chain printed in docs/data.md parses with MONAI's ConfigParser and runs."""
    import json
    import re
    from pathlib import Path

    from monai.bundle import ConfigParser

    text = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    block = re.search(r"<!-- stroke-train-json -->\s*```json\n(.*?)```", text, re.S).group(1)
    cfg = json.loads(block)
    cfg["imports"] = ["$import monai_patcher.data", "$import monai_patcher.transforms"]
    parser = ConfigParser(cfg)
    xf = Compose(parser.get_parsed_content("train_transforms"))
    xf.set_random_state(0)
    out = xf(case)
    assert len(out) == 4
    for s in out:
        assert tuple(s["image"].shape) == (2, 256, 256) and tuple(s["label"].shape) == (1, 256, 256)


def test_docs_json_chain_has_the_code_order():
    """docs/data.md's JSON chain is the code's chain: same transforms, same order, same keys (``Orientationd``
    after stacking, on ``image``: with the channels reoriented before ``ConcatItemsd``, ``Invertd`` flips masks)."""
    import json
    import re
    from pathlib import Path

    from monai.bundle import ConfigParser

    text = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    cfg = json.loads(re.search(r"<!-- stroke-train-json -->\s*```json\n(.*?)```", text, re.S).group(1))
    cfg["imports"] = ["$import monai_patcher.data", "$import monai_patcher.transforms"]
    docs = ConfigParser(cfg).get_parsed_content("train_transforms")
    code = stroke_train_transforms().transforms

    def sig(t):
        return type(t).__name__, tuple(getattr(t, "keys", ()))

    assert [sig(t) for t in docs] == [sig(t) for t in code]


def _blobs(shape, centres, width=2.5):
    """A smooth, asymmetric volume: Gaussian blobs at the given voxel centres (so a flip of any axis shows)."""
    grid = np.indices(shape).astype(np.float32)
    out = np.zeros(shape, np.float32)
    for i, c in enumerate(centres):
        out += (1 + i) * np.exp(-sum((g - ci) ** 2 for g, ci in zip(grid, c)) / (2 * width**2))
    return out


def _flip_margin(back, ref):
    """Correlation of ``back`` with ``ref``, and the highest correlation with ``ref`` flipped along any axis."""
    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    return corr(back, ref), max(corr(back, np.flip(ref, ax)) for ax in range(ref.ndim))


def test_invertd_on_stacked_image_restores_non_ras_geometry(tmp_path):
    """Reorientation/resize happen after stacking, so Invertd on ``image`` goes back to the scan's own grid:
    same shape and affine, and the same voxels (no flip: the content is asymmetric along every axis)."""
    from monai.transforms import Invertd

    from monai_patcher.transforms import stroke_volume_transforms

    las = np.diag([-2.0, 2.0, 3.0, 1.0])
    las[:3, 3] = [40.0, -20.0, 5.0]
    shape = (20, 24, 6)
    rng = np.random.default_rng(0)
    adc = rng.uniform(0.5, 1.0, shape).astype(np.float32)
    dwi = 100 + 300 * _blobs(shape, [(4, 6, 0), (14, 17, 5), (6, 19, 1)], width=2.0)
    data = {"dwi": _write(tmp_path / "dwi.nii.gz", dwi, las), "adc": _write(tmp_path / "adc.nii.gz", adc, las)}
    xf = stroke_volume_transforms(label_key=None, spatial_size=32)
    out = xf(data)
    assert tuple(out["image"].shape) == (2, 32, 32, 6)
    back = Invertd("image", transform=xf, orig_keys="image", nearest_interp=False)(out)["image"]
    assert tuple(back.shape) == (2, 20, 24, 6)
    np.testing.assert_allclose(np.asarray(back.affine), las, atol=1e-5)
    same, flipped = _flip_margin(back[1].numpy(), dwi)
    assert same > 0.98 and flipped < same - 0.3, f"inverted DWI vs DWI: corr {same:.3f}, vs a flipped DWI {flipped:.3f}"


def test_spacing_mode_resamples_in_plane_only(case):
    """``inplane_mode="spacing"``: Spacingd of the two in-plane axes to ``inplane_spacing``; the slice axis keeps its
    voxels (the lesion stays on slice 4) and its spacing; the label stays binary (nearest)."""
    from monai_patcher.transforms import stroke_volume_transforms

    d = stroke_volume_transforms(inplane_mode="spacing", inplane_spacing=(2.0, 0.5))(case)  # the case: 1 mm
    img, lab = d["image"], d["label"]
    assert tuple(img.shape) == (2, 10, 47, 6) and tuple(lab.shape) == (1, 10, 47, 6)
    np.testing.assert_allclose(img.pixdim.numpy(), [2.0, 0.5, 1.0])
    assert set(lab.unique().tolist()) == {0.0, 1.0}
    assert int(torch.nonzero(lab.sum(dim=(0, 1, 2))).flatten()[0]) == 4
    assert [op["class"] for op in img.applied_operations] == ["Orientation", "SpatialResample"]
    # along the slice axis nothing is interpolated: every slice is the same as the resampled scan's one
    axis0 = stroke_volume_transforms(label_key=None, axis=0, inplane_mode="spacing", inplane_spacing=(2.0, 0.5))(
        {k: case[k] for k in ("dwi", "adc")})["image"]
    assert tuple(axis0.shape) == (2, 20, 12, 11)  # axis 0 kept; 24 mm / 2 mm, 6 mm / 0.5 mm
    resize = stroke_volume_transforms(spatial_size=32, inplane_spacing=(2.0, 0.5))(case)  # resize ignores the spacing
    assert tuple(resize["image"].shape) == (2, 32, 32, 6)


@pytest.mark.parametrize("kwargs, match", [
    ({"inplane_mode": "zoom"}, "inplane_mode must be one of"),
    ({"inplane_mode": "spacing"}, "needs inplane_spacing"),
    ({"inplane_mode": "spacing", "inplane_spacing": (1.0,)}, "needs inplane_spacing"),
    ({"inplane_mode": "spacing", "inplane_spacing": (1.0, 0.0)}, "needs inplane_spacing"),
    ({"axis": 3}, "axis must be"),
])
def test_inplane_mode_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stroke_val_transforms(**kwargs)


@pytest.mark.parametrize("mode, network_shape", [("spacing", (113, 113)), ("resize", (256, 256))])
def test_real_isles_512_scan_round_trip(isles22_512, mode, network_shape):
    """The real ISLES'22 case upsampled to a 512 x 512 scan (conftest): spacing mode resamples it to 2 mm (the
    training grid), resize mode to 256 x 256; either way the probabilities inverted with ``Invertd`` are on the
    scan's grid (512 x 512 x 24, its affine), and the inverted DWI channel is the scan's DWI (no flip, no shift)."""
    from monai.transforms import Invertd

    item = {k: str(v) for k, v in isles22_512.items()}
    xf = stroke_inference_transforms(spatial_size=256, inplane_mode=mode, inplane_spacing=(2.0, 2.0))
    d = xf(item)
    assert tuple(d["image"].shape) == (2, *network_shape, 24)
    d["pred"] = d["image"][1:2].clone()
    back = Invertd("pred", transform=xf, orig_keys="image", nearest_interp=False)(d)["pred"]
    scan = nib.load(item["dwi"])
    assert tuple(back.shape) == (1, 512, 512, 24) == (1, *scan.shape)
    np.testing.assert_allclose(np.asarray(back.affine), scan.affine, atol=1e-5)
    dwi, out = np.asanyarray(scan.dataobj), back[0].numpy()

    def corr(ref):  # over the brain of the scan and of ``ref``: a flipped result is judged on its own voxels too
        m = (dwi != 0) | (ref != 0)
        return float(np.corrcoef(out[m], ref[m])[0, 1])

    same, flipped = corr(dwi), max(corr(np.flip(dwi, ax)) for ax in range(3))
    assert same > 0.9 and flipped < same - 0.2, f"corr {same:.3f} vs flipped {flipped:.3f}"


def test_detect_adc_unit_is_the_median_rule_at_the_thresholds():
    """The unit is decided by counting voxels below the thresholds instead of sorting for the median; the answer is
    the median rule's (median of the positive voxels < 0.03 / < 30, compared as Python floats) also when voxels sit
    on a threshold's float32 neighbours (float32(0.03) is below 0.03, so a plain ``t < 0.03`` would move it)."""
    import random

    def by_median(values):
        t = torch.tensor(values, dtype=torch.float32)
        med = float(t[torch.isfinite(t) & (t > 0)].median())
        return "mm2/s" if med < 0.03 else "1e-3mm2/s" if med < 30 else "1e-6mm2/s"

    lo = torch.tensor(0.03, dtype=torch.float32)
    near = [float(torch.nextafter(lo, torch.tensor(-1.0))), float(lo), float(torch.nextafter(lo, torch.tensor(1.0))),
            29.999998, 30.0, 30.000002, 0.5, 0.001, 100.0, -1.0, 0.0, float("nan")]
    assert by_median([0.01, 0.03, 0.05]) == "mm2/s"  # float32(0.03) < 0.03: the case a float32 comparison gets wrong
    rng = random.Random(0)
    cases = [[0.01, 0.03, 0.05], [0.03, 0.03]] + [[rng.choice(near) for _ in range(rng.randint(1, 7))]
                                                  for _ in range(2000)]
    checked = 0
    for values in cases:
        if not any(v > 0 for v in values):
            continue
        for dtype in (torch.float32, torch.float64):
            assert detect_adc_unit(torch.tensor(values, dtype=dtype)) == by_median(values), (values, dtype)
        checked += 1
    assert checked > 1000

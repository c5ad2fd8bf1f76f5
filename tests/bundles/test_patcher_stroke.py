"""End-to-end tests of bundles/patcher_stroke through the real ``python -m monai.bundle`` entry point.

Tiny preset, 64 x 64 slices and the 3-case synthetic demo dataset, so the whole file runs in about a
minute on 2 CPU cores. Real-data tests (ISLES'22 case, DICOM series) skip when ../shared/data is absent.
``torchrun`` (``multi_gpu_train.json``, ``multi_gpu_evaluate.json``) is tested in test_model_zoo_ci.py, for both
bundles; the metadata and ``verify_net_in_out`` in test_verify_bundle.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_cli import (  # noqa: E402
    FAST, REPO_ROOT, bundle_copy, bundle_error, dice, evaluate_in_process, resume_keeps_best_model, run_bundle,
)

BUNDLE = REPO_ROOT / "bundles" / "patcher_stroke"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.json")


FAST_KW = {"network_def#name": "tiny", "spatial_size": 64, "num_workers": 0}


def run_inprocess(run_id: str | None, config_file, **override):
    """``monai.bundle.run`` in this process (the same entry point without a new interpreter: saves start-up time)."""
    from monai.bundle import run

    run(run_id, config_file=config_file, logging_file=False, **{**FAST_KW, **override})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dataset):
    """One training epoch (with validation) from a foreign working directory; returns the run folders."""
    root = tmp_path_factory.mktemp("stroke_train")
    out, ckpt = root / "eval", root / "models"
    proc = run_bundle(
        "run", "training", "--config_file", TRAIN, "--dataset_dir", str(Path(demo_dataset).parent),
        "--max_epochs", "1", "--val_interval", "1", "--output_dir", str(out), "--ckpt_dir", str(ckpt), *FAST,
        cwd=root,
    )
    return {"root": root, "out": out, "ckpt": ckpt, "data": Path(demo_dataset).parent, "log": proc.stdout + proc.stderr}


def test_train_one_epoch(trained):
    assert (trained["ckpt"] / "model.pt").is_file(), "best-by-validation-Dice checkpoint missing"
    assert (trained["ckpt"] / "checkpoint_epoch=1.pt").is_file(), "last checkpoint (resume) missing"
    assert list(trained["out"].glob("events.out.tfevents.*")), "no TensorBoard events"
    assert "val_mean_dice" in trained["log"] and "val_mean_iou" in trained["log"]
    last = torch.load(trained["ckpt"] / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert set(last) >= {"model", "optimizer", "lr_scheduler", "trainer"}
    assert last["trainer"]["iteration"] // last["trainer"]["epoch_length"] == 1  # ignite stores iterations


def test_checkpoints_carry_the_model_record(trained):
    """model.pt and the last-epoch checkpoint say which network they hold and how its inputs were made."""
    from monai_patcher.io import read_model_record

    for name in ("model.pt", "checkpoint_epoch=1.pt"):
        content = torch.load(trained["ckpt"] / name, map_location="cpu", weights_only=True)
        assert {"model", "model_record"} <= set(content), name
        record = read_model_record(trained["ckpt"] / name)
        assert record.network == {"preset": "tiny", "in_channels": 2, "out_channels": 1, "overrides": {}}, name
        assert (record.channels, record.inplane_mode, record.spatial_size, record.slice_axis) == (
            ["eADC", "DWI"], "spacing", 64, 2), name
        assert record.inplane_spacing == [2.0, 2.0], name  # the bundle's default, what training resampled to
        assert record.normalization["transform"] == "NormalizeIntensityd" and record.b_value == 1000.0


def test_resume_continues_epoch_count(trained, tmp_path):
    import shutil

    ckpt = tmp_path / "models"  # a copy: the other tests keep the fixture's files as they are
    shutil.copytree(trained["ckpt"], ckpt)
    first = torch.load(ckpt / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    iters_per_epoch = first["trainer"]["iteration"]
    # as written before "best_metric" was in save_dict: such checkpoints must still resume (optional_keys)
    del first["best_metric"]
    torch.save(first, ckpt / "checkpoint_epoch=1.pt")
    proc = run_bundle(  # plain `run` (no run_id): the same workflow as `run training`
        "run", "--config_file", TRAIN, "--dataset_dir", str(trained["data"]), "--max_epochs", "2",
        "--val_interval", "1", "--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(ckpt),
        "--resume", "true", *FAST, cwd=trained["root"],
    )
    log = proc.stdout + proc.stderr
    assert "Restored all variables from" in log and "checkpoint_epoch=1.pt" in log
    assert "has no ['best_metric']" in log
    second = torch.load(ckpt / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    assert second["trainer"]["iteration"] == 2 * iters_per_epoch  # epoch 2 of 2, not epoch 1 again
    # the LR schedule continued (stepped once per iteration over both runs), it did not restart
    assert second["lr_scheduler"]["last_epoch"] == 2 * iters_per_epoch
    assert second["best_metric"]["best_metric_epoch"] == 2  # the best metric started afresh, as before


def test_resume_keeps_best_model(trained, tmp_path):
    """After ``--resume true`` the best Dice so far is restored: a worse validation does not replace model.pt."""
    resume_keeps_best_model(TRAIN, trained["ckpt"], tmp_path, "--dataset_dir", str(trained["data"]), *FAST)


def test_evaluate_writes_csv(trained, tmp_path):
    out = tmp_path / "eval"
    run_inprocess(None, [TRAIN, str(CONFIGS / "evaluate.json")], dataset_dir=str(trained["data"]),
                  ckpt_dir=str(trained["ckpt"]), output_dir=str(out))
    metrics = dict(line.split(",") for line in (out / "metrics.csv").read_text().split())
    assert set(metrics) == {"val_mean_dice", "val_mean_iou", "val_slice_dice", "val_slice_iou"}
    assert all(0.0 <= float(v) <= 1.0 for v in metrics.values())
    raw = (out / "val_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0].startswith("filename") and len(raw) == 2  # one test case
    test_case = json.loads(Path(trained["data"], "datalist.json").read_text())["test"][0]["case"]
    assert raw[1].split("\t")[0].split(",")[0] == test_case, raw  # the row is named by the case id, not a path
    assert (out / "val_mean_iou_summary.csv").is_file()


class _DWILogits(torch.nn.Module):
    """A stand-in "network" segmenting whatever is brighter than average in the normalised DWI channel."""

    def forward(self, x):
        return 20.0 * x[:, 1:2] - 1.0  # z-score 0 (outside the normalised region) -> background


def _iou(p, y) -> float:
    """IoU (Jaccard) of two boolean numpy arrays (both empty: 1), independent of the package's metrics."""
    union = (p | y).sum()
    return float((p & y).sum() / union) if union else 1.0


def _evaluate_in_process(tmp_path, datalist: dict, network=None, **override):
    """``evaluate.json`` over ``train.json`` on ``datalist``, in this process (see ``bundle_cli.evaluate_in_process``)."""
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    overrides = {**FAST_KW, "dataset_dir": str(tmp_path), "datalist": str(tmp_path / "datalist.json"),
                 "output_dir": str(tmp_path / "eval"), **override}
    return evaluate_in_process([TRAIN, str(CONFIGS / "evaluate.json")], overrides, network)


def test_evaluate_scores_on_the_scan_grid(tmp_path, demo_dataset):
    """Scores are computed against the label as stored, on the scan's own grid (here 16 x 70 x 64, axial first,
    flipped), not on the network's RAS 64 x 64 grid; the slice metrics cut along the scan's axial axis."""
    import nibabel as nib

    case = sorted(p for p in Path(demo_dataset).parent.iterdir() if p.is_dir())[0]
    label = nib.load(str(case / "label.nii.gz"))
    lesion = np.asanyarray(label.dataobj) > 0.5
    assert lesion.any()
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(label.affine),
                                           nib.orientations.axcodes2ornt(("S", "L", "P")))
    files = {}
    for key, arr in {"dwi": 1.0 + 2.0 * lesion, "adc": np.full(lesion.shape, 0.8), "label": lesion}.items():
        padded = np.pad(arr.astype(np.float32), ((0, 6), (0, 0), (0, 0)))  # 70 x 64 x 16: not the network's size
        img = nib.Nifti1Image(padded, label.affine).as_reoriented(ornt)
        nib.save(img, str(tmp_path / f"{key}.nii.gz"))
        files[key] = f"{key}.nii.gz"
    scan = nib.load(str(tmp_path / "label.nii.gz"))
    assert scan.shape == (16, 70, 64) and nib.aff2axcodes(scan.affine) == ("S", "L", "P")

    # the paper's resize to 64 x 64 (not the identity resampling of the default spacing mode at this scan's 2 mm): its
    # smoothing of the lesion border makes Dice and IoU differ, which the last assertion needs
    evaluator, items = _evaluate_in_process(tmp_path, {"test": [files]}, network=_DWILogits(), inplane_mode="resize")
    (item,) = items
    truth = np.asanyarray(scan.dataobj) > 0.5
    assert item["label"].shape == (1, *scan.shape) and item["pred"].shape == (1, *scan.shape)
    np.testing.assert_array_equal(item["label"][0].numpy() > 0.5, truth)  # the stored label, not a resampled one
    np.testing.assert_allclose(np.asarray(item["pred"].affine), scan.affine, atol=1e-4)
    pred = item["pred"][0].numpy() > 0.5
    # the DWI-bright "network" finds the lesion where the label has it: the geometry of the way back is right
    assert dice(pred, truth) > 0.9
    metrics = evaluator.state.metrics
    assert metrics["val_mean_dice"] == pytest.approx(dice(pred, truth), abs=1e-5)
    per_slice = [dice(pred[z], truth[z]) for z in range(truth.shape[0]) if truth[z].any()]  # axial = axis 0 here
    assert metrics["val_slice_dice"] == pytest.approx(np.mean(per_slice), abs=1e-5)
    assert metrics["val_mean_iou"] == pytest.approx(_iou(pred, truth), abs=1e-5)
    per_slice_iou = [_iou(pred[z], truth[z]) for z in range(truth.shape[0]) if truth[z].any()]
    assert metrics["val_slice_iou"] == pytest.approx(np.mean(per_slice_iou), abs=1e-5)
    # Dice and IoU differ on these slices (IoU < Dice unless perfect), so the two slice metrics cannot stand in for
    # each other unnoticed
    assert abs(np.mean(per_slice) - np.mean(per_slice_iou)) > 1e-3


def test_evaluate_real_brats_case_on_its_grid(trained, tmp_path, shared_path_fn):
    """The trained demo checkpoint scored on a real BraTS volume (240 x 240 x 155, LPS) as stored."""
    import nibabel as nib

    case = shared_path_fn("BraTS2015-DeepMedic-examples", "validation", "brats_2013_pat0003_1")
    files = {"dwi": str(case / "Flair_subtrMeanDivStd.nii.gz"), "adc": str(case / "T1c_subtrMeanDivStd.nii.gz"),
             "label": str(case / "OTMultiClass.nii.gz")}
    evaluator, items = _evaluate_in_process(
        tmp_path, {"test": [files]}, ckpt_path=str(trained["ckpt"] / "model.pt"),
        **{"train#deterministic_transforms": "$[monai.transforms.CopyItemsd(keys='adc', names='eadc') if type(t).__name__ "
           "== 'ComputeEADCd' else t for t in @train#volume_transforms.transforms]"},
    )  # BraTS has no ADC: T1c stands in and is copied as is, in place of ComputeEADCd (benchmarks/brats_bundle.py)
    (item,) = items
    ref = nib.load(files["label"])
    truth = np.asanyarray(ref.dataobj) > 0.5
    assert item["pred"].shape == (1, *ref.shape) == (1, 240, 240, 155)
    np.testing.assert_array_equal(item["label"][0].numpy() > 0.5, truth)
    np.testing.assert_allclose(np.asarray(item["pred"].affine), np.asarray(item["label"].affine), atol=1e-4)
    pred = item["pred"][0].numpy() > 0.5
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(dice(pred, truth), abs=1e-5)


def _check_same_grid(out_file: Path, shape, affine):
    import nibabel as nib

    img = nib.load(str(out_file))
    assert img.shape[:3] == tuple(shape)
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    return img


def test_inference_real_isles_case(trained, tmp_path, shared_path_fn):
    import nibabel as nib

    dwi = shared_path_fn("ISLES-2022-case0001", "data", "sub-strokecase0001_ses-0001_dwi.nii.gz")
    out = tmp_path / "pred"
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(dwi), ckpt_path=str(trained["ckpt"] / "model.pt"),
                  output_dir=str(out), save_prob=True, save_gating=True)
    ref = nib.load(str(dwi))
    seg = _check_same_grid(out / "sub-strokecase0001_ses-0001_seg.nii.gz", ref.shape, ref.affine)
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1}
    prob = np.asanyarray(_check_same_grid(out / "sub-strokecase0001_ses-0001_prob.nii.gz", ref.shape, ref.affine).dataobj)
    assert prob.min() >= 0 and prob.max() <= 1
    gating = nib.load(str(out / "sub-strokecase0001_ses-0001_gating.nii.gz"))
    assert gating.shape == (*ref.shape, 4)
    np.testing.assert_allclose(gating.affine, ref.affine, atol=1e-4)
    np.testing.assert_allclose(np.asanyarray(gating.dataobj).sum(-1), 1.0, atol=1e-3)
    pngs = sorted((out / "gating" / "sub-strokecase0001_ses-0001_gating").glob("slice_*.png"))  # GatingMapWriter
    assert len(pngs) == ref.shape[2] and pngs[0].name == "slice_000.png"  # every axial slice of the LAS scan


@pytest.mark.parametrize("save_gating", [False, True])
def test_inference_asks_for_gating_only_when_it_saves_it(save_gating, tmp_path):
    """``save_gating`` false (the default): the network returns its logits only and nothing in the post-processing
    touches gating maps; true: the network returns ``(logits, gating)`` (its own output, at the input's size), which
    the post-processing splits, inverts, saves, and ``GatingMapWriter`` draws."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["save_gating"], parser["network_def#name"] = save_gating, "tiny"
    parser["output_dir"] = str(tmp_path)  # the default is built on bundle_root '.', refused outside the bundle
    parser["ckpt_path"] = ""  # no checkpoint: no model record (its default path is built on bundle_root too)
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 2, 40, 36))
    assert isinstance(out, tuple) is save_gating
    if save_gating:
        assert tuple(out[1].shape) == (1, 4, 40, 36)
    post = parser.get_parsed_content("postprocessing").transforms
    invert = next(t for t in post if type(t).__name__ == "Invertd")
    assert ("gating" in invert.keys) is save_gating and "pred" in invert.keys
    # the image goes back to the scan's grid only for the pictures drawn over it (gating maps here, no label so no
    # overlays): inverting 2 channels of a 512 x 512 x 150 scan costs twice the prediction's inversion
    assert ("image" in invert.keys) is save_gating
    parser["save_overlays"] = True
    assert "image" in next(t for t in parser.get_parsed_content("postprocessing", lazy=False).transforms
                           if type(t).__name__ == "Invertd").keys
    assert sum(type(t).__name__ == "Lambdad" for t in post) == (2 if save_gating else 0)
    saved = [t.keys for t in post if type(t).__name__ == "SaveImaged"]
    assert (("gating",) in saved) is save_gating
    handlers = [h for h in parser.get_parsed_content("handlers") if h is not None]
    assert any(type(h).__name__ == "GatingMapWriter" for h in handlers) is save_gating


def test_inference_real_dicom_series(trained, tmp_path, shared_path_fn):
    import nibabel as nib
    from monai.transforms import LoadImage

    from monai_patcher.data import SimpleITKReader

    series = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    out = tmp_path / "pred"
    # the only real DICOM series at hand is one T1 series: it stands in for both DWI and ADC (a geometry test)
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(series), input_adc=str(series),
                  ckpt_path=str(trained["ckpt"] / "model.pt"), output_dir=str(out))
    ref = LoadImage(reader=SimpleITKReader(), image_only=True)(str(series))
    files = list(out.glob("*_seg.nii.gz"))
    # named after the series (its SeriesDescription), not after the folder ("data")
    assert len(files) == 1 and files[0].name == "MEMPRAGE_4e_p2_1mm_iso_RMS_seg.nii.gz", files
    seg = nib.load(str(files[0]))
    assert seg.shape == tuple(ref.shape)
    np.testing.assert_allclose(seg.affine, np.asarray(ref.affine), atol=1e-3)


def test_inference_dwi_series_holding_b0_and_b1000(trained, tmp_path, shared_path_fn, two_b_value_dwi_series):
    """A DWI DICOM series with its b = 0 and b = 1000 images (the real MR series, retagged: conftest): the bundle
    reads the b = 1000 images (its ``b_value``) and writes the mask in their grid."""
    import nibabel as nib
    from monai.transforms import LoadImage

    from monai_patcher.data import SimpleITKReader

    adc = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    out = tmp_path / "pred"
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(two_b_value_dwi_series), input_adc=str(adc),
                  ckpt_path=str(trained["ckpt"] / "model.pt"), output_dir=str(out))
    ref = LoadImage(reader=SimpleITKReader(b_value=1000), image_only=True)(two_b_value_dwi_series)
    (seg,) = [nib.load(str(f)) for f in out.glob("*_seg.nii.gz")]
    assert seg.shape == tuple(ref.shape) == (256, 256, 6)
    np.testing.assert_allclose(seg.affine, np.asarray(ref.affine), atol=1e-3)


def test_inference_geometry_round_trip(shared_path_fn):
    """The configured preprocessing + Invertd bring a network-space volume back onto the input DWI voxels.

    Flip-sensitive: a brain is nearly left-right symmetric (the brain masks of the ISLES'22 DWI and its LR
    mirror have Dice 0.97), so the inverted DWI channel must correlate with the DWI clearly better than with
    the DWI flipped along any axis."""
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch, list_data_collate
    from monai.transforms import Invertd
    import nibabel as nib

    dwi = shared_path_fn("ISLES-2022-case0001", "data", "sub-strokecase0001_ses-0001_dwi.nii.gz")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)  # as MONAI's tools set it: the default '.' is refused outside the bundle
    parser["input"] = str(dwi)
    parser["spatial_size"] = 64
    pre = parser.get_parsed_content("preprocessing")
    item = parser.get_parsed_content("dataset")[0]
    batch = list_data_collate([item])
    batch["pred"] = batch["image"][:, 1:2].clone()  # the normalised DWI channel, in network space
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(decollate_batch(batch)[0])
    back = inv["pred"][0].numpy()
    orig = np.asanyarray(nib.load(str(dwi)).dataobj)
    assert back.shape == orig.shape
    brain_back, brain = np.abs(back) > 1e-3, orig != 0
    dice = 2 * (brain_back & brain).sum() / (brain_back.sum() + brain.sum())
    assert dice > 0.9, f"the inverted volume does not overlap the input's brain (Dice {dice:.3f}): geometry is off"

    def corr(ref):  # over the DWI's brain and its mirror images, so a flipped result is judged on its own voxels
        m = brain | (ref != 0)
        return float(np.corrcoef(back[m], ref[m])[0, 1])

    same = corr(orig)
    flipped = {ax: corr(np.flip(orig, ax)) for ax in range(3)}
    assert same > 0.85 and max(flipped.values()) < same - 0.2, (
        f"inverted DWI channel vs the DWI: corr {same:.3f}; vs the DWI flipped along axis 0/1/2: "
        + ", ".join(f"{v:.3f}" for v in flipped.values()) + " (a flip on the way back?)")


@pytest.mark.parametrize("mode, size, inplane", [(None, 112, "SpatialResample"), ("resize", 256, "Resize")])
def test_inference_preprocessing_of_the_bundle_and_the_batch_cli_is_identical(shared_path_fn, tmp_path, mode, size,
                                                                              inplane):
    """``inference.json`` and ``python -m monai_patcher.batch_inference`` build their preprocessing from one definition
    (``stroke_inference_transforms``): on the real ISLES'22 case they give the same tensor, voxel for voxel, with the
    same affine and the same recorded transforms (so ``Invertd`` undoes the same steps); ``train.json``'s volume
    transforms (up to the slice sampler) give the same image. With the defaults (``inplane_mode`` "spacing", 2 mm:
    the case's own voxel size) and with ``inplane_mode`` "resize" (the paper's 256 x 256)."""
    import nibabel as nib
    from monai.bundle import ConfigParser

    from monai_patcher.batch_inference import BatchPredictor
    from monai_patcher.networks import patcher_preset

    data = shared_path_fn("ISLES-2022-case0001", "data")
    item = {k: str(data / f"sub-strokecase0001_ses-0001_{k}.nii.gz") for k in ("dwi", "adc")}
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)  # as MONAI's tools set it: the default '.' is refused outside the bundle
    train = ConfigParser()
    train.read_config(TRAIN)
    cli_kw = {}
    if mode:
        parser["inplane_mode"] = train["inplane_mode"] = cli_kw["inplane_mode"] = mode
    bundle = parser.get_parsed_content("preprocessing")(dict(item))["image"]
    cli = BatchPredictor(None, network=patcher_preset("tiny", in_channels=2, out_channels=1), **cli_kw)
    cli = cli.preprocessing(dict(item))["image"]
    assert tuple(bundle.shape) == tuple(cli.shape) == (2, size, size, 73)
    assert torch.equal(bundle.as_tensor(), cli.as_tensor())
    assert torch.equal(bundle.affine, cli.affine)
    assert [op["class"] for op in bundle.applied_operations] == [op["class"] for op in cli.applied_operations]
    assert [op["class"] for op in cli.applied_operations] == ["Orientation", inplane]  # something to invert
    dwi = nib.load(item["dwi"])  # the case ships without its mask: a made-up one, on the scans' grid
    mask = (np.asanyarray(dwi.dataobj) > np.percentile(np.asanyarray(dwi.dataobj), 99)).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, dwi.affine, dwi.header), str(tmp_path / "msk.nii.gz"))
    labelled = {**item, "label": str(tmp_path / "msk.nii.gz")}
    out = train.get_parsed_content("train#volume_transforms")(labelled)
    assert torch.equal(out["image"].as_tensor(), cli.as_tensor())
    assert tuple(out["label"].shape) == (1, size, size, 73)


def test_window_parameters_reach_the_inferers_and_crops():
    """The bundle parameters ``roi_size`` (from ``spatial_size``), ``sw_overlap``, ``sw_mode`` and ``skip_empty`` are
    what inference, validation and the training crops use."""
    from monai.bundle import ConfigParser

    from monai_patcher.inferers import SkipEmptySliceInferer

    for config in ("inference.json", "train.json"):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / config))
        parser["bundle_root"] = str(BUNDLE)  # as MONAI's tools set it: the default '.' is refused outside the bundle
        assert parser.get_parsed_content("inplane_mode") == "spacing" and parser["sw_mode"] == "gaussian"
        parser["spatial_size"], parser["sw_overlap"], parser["skip_empty"] = 96, 0.5, False
        inferer = parser.get_parsed_content("inferer" if config == "inference.json" else "validate#inferer")
        assert isinstance(inferer, SkipEmptySliceInferer)
        assert tuple(inferer.orig_roi_size) == (96, 96) and inferer.overlap == 0.5 and inferer.mode == "gaussian"
        assert inferer.skip_empty is False
    crops = {type(t).__name__: t for t in parser.get_parsed_content("train#random_transforms")}
    assert list(crops["SpatialPadd"].padder.spatial_size) == [96, 96]
    assert list(crops["RandSpatialCropd"].cropper.roi_size) == [96, 96]


def test_inference_512_scan_is_tiled_and_keeps_its_grid(trained, tmp_path, isles22_512):
    """The real ISLES'22 case upsampled to a 512 x 512 scan (conftest): the bundle resamples it to 2 mm (113 x 113),
    tiles each slice with 64 x 64 windows (the test's ``spatial_size``; Gaussian blending), and writes the mask and
    probabilities on the scan's 512 x 512 x 24 grid with its affine."""
    import nibabel as nib

    out = tmp_path / "pred"
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(isles22_512["dwi"]),
                  input_adc=str(isles22_512["adc"]), ckpt_path=str(trained["ckpt"] / "model.pt"), output_dir=str(out),
                  save_prob=True)
    ref = nib.load(str(isles22_512["dwi"]))
    assert ref.shape == (512, 512, 24)
    seg = _check_same_grid(out / "case512_seg.nii.gz", ref.shape, ref.affine)
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1}
    prob = np.asanyarray(_check_same_grid(out / "case512_prob.nii.gz", ref.shape, ref.affine).dataobj)
    assert 0 <= prob.min() and prob.max() <= 1


def test_inference_overlays_with_label(trained, tmp_path):
    case = sorted(p for p in Path(trained["data"]).iterdir() if p.is_dir())[0]
    out = tmp_path / "pred"
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(case / "dwi.nii.gz"), input_adc=str(case / "adc.nii.gz"),
                  label=str(case / "label.nii.gz"), ckpt_path=str(trained["ckpt"] / "model.pt"), output_dir=str(out))
    assert (out / f"{case.name}_seg.nii.gz").is_file()
    pngs = list((out / "overlays" / case.name).glob("slice_*.png"))
    assert pngs, "no overlay PNGs written although a label was given"
    from PIL import Image

    assert min(Image.open(pngs[0]).size) >= 256  # the 64 x 64 demo slices, enlarged to be read (min_size)


def test_verify_net_in_out_and_ckpt_export(trained, tmp_path):
    from monai.bundle import ckpt_export, verify_net_in_out

    common = {"meta_file": str(CONFIGS / "metadata.json"), "config_file": str(CONFIGS / "inference.json"),
              "network_def#name": "tiny", "bundle_root": str(BUNDLE)}  # as model-zoo's CI passes it
    verify_net_in_out("network_def", **common)
    ts = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(ts), ckpt_file=str(trained["ckpt"] / "model.pt"), key_in_ckpt="model",
                **common)
    net = torch.jit.load(str(ts))
    assert net(torch.zeros(1, 2, 64, 48)).shape == (1, 1, 64, 48)
    # the network built from the checkpoint's record (--ckpt_path) without naming the preset
    common.pop("network_def#name")
    ckpt = str(trained["ckpt"] / "model.pt")
    ckpt_export("network_def", filepath=str(ts), ckpt_file=ckpt, key_in_ckpt="model", ckpt_path=ckpt, **common)
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    scripted = torch.jit.load(str(ts)).state_dict()
    assert all(torch.equal(scripted[k], v) for k, v in weights.items())


def test_inference_two_channel_nifti(trained, tmp_path):
    """A single 4D NIfTI holding DWI and ADC as two channels: mask in its 3D grid, named after the file."""
    import nibabel as nib

    case = sorted(p for p in Path(trained["data"]).iterdir() if p.is_dir())[0]
    dwi, adc = nib.load(str(case / "dwi.nii.gz")), nib.load(str(case / "adc.nii.gz"))
    both = nib.Nifti1Image(np.stack([dwi.get_fdata(), adc.get_fdata()], axis=-1).astype(np.float32), dwi.affine)
    nib.save(both, str(tmp_path / "both.nii.gz"))
    out = tmp_path / "pred"
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(tmp_path / "both.nii.gz"),
                  ckpt_path=str(trained["ckpt"] / "model.pt"), output_dir=str(out))
    _check_same_grid(out / "both_seg.nii.gz", dwi.shape, dwi.affine)


def test_front_door_errors_end_with_the_file_and_the_fix(trained, tmp_path):
    """The common mistakes, through ``python -m monai.bundle run``: the last line names the file and the fix (not
    MONAI's "Failed to evaluate <expression>", not a list of missing keys)."""
    import shutil

    infer = str(CONFIGS / "inference.json")
    case = trained["data"] / json.loads((trained["data"] / "datalist.json").read_text())["test"][0]["case"]
    ckpt = str(trained["ckpt"] / "model.pt")
    lonely = tmp_path / "x_dwi.nii.gz"
    shutil.copy(case / "dwi.nii.gz", lonely)
    missing = tmp_path / "nowhere" / "model.pt"
    (tmp_path / "configs").mkdir()  # tmp_path is the bundle folder of these runs (bundle_root '.'): outputs go there
    shutil.copy(CONFIGS / "metadata.json", tmp_path / "configs" / "metadata.json")
    cases = [  # (arguments, what the last line must contain)
        (["--config_file", infer, "--input", str(case), "--ckpt_path", str(missing), *FAST],
         [f"error: {missing}: checkpoint file does not exist", "--ckpt_path"]),
        (["--config_file", infer, "--input", str(tmp_path / "no_scan.nii.gz"), "--ckpt_path", ckpt, *FAST],
         [f"error: --input {tmp_path / 'no_scan.nii.gz'}: no such file or folder; pass a DWI file"]),
        (["--config_file", infer, "--input", str(lonely), "--ckpt_path", ckpt, *FAST],
         [f"error: {lonely}: a DWI file needs its ADC", "pass --input_adc"]),
        (["--config_file", TRAIN, "--dataset_dir", str(tmp_path), *FAST],
         [f"error: {tmp_path / 'datalist.json'}: datalist file does not exist", "--dataset_dir"]),
        (["--config_file", infer, "--input", str(case), "--ckpt_path", ckpt, *FAST[2:], "--network_def#name", "small"],
         [f"error: {ckpt} holds a 'tiny' Patcher", "'small' preset is asked for", "drop --network_def#name"]),
    ]
    root = str(bundle_copy("patcher_stroke", tmp_path / "bundle"))  # run from elsewhere, as users do: --bundle_root
    for args, expected in cases:
        last = bundle_error("run", *args, "--bundle_root", root, cwd=tmp_path)
        assert all(e in last for e in expected), (args, last)
        assert "Missing key" not in last and "Failed to" not in last, last


@pytest.mark.parametrize("progress", [True, False])
def test_inference_progress_bar_can_be_switched_off_and_each_case_logs_a_summary(trained, tmp_path, capsys, caplog, progress):
    import logging

    case = sorted(p for p in Path(trained["data"]).iterdir() if p.is_dir())[0]
    caplog.set_level(logging.INFO, logger="monai_patcher.handlers.case_summary")
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(case), ckpt_path=str(trained["ckpt"] / "model.pt"),
                  output_dir=str(tmp_path / "pred"), progress=progress)
    err = capsys.readouterr().err
    assert ("100%|" in err) == progress, err[-2000:]  # SliceInferer's tqdm bar of the case's slices
    (line,) = [r.getMessage() for r in caplog.records if r.name == "monai_patcher.handlers.case_summary"]
    assert line.startswith(f"{case.name}: ") and " s, " in line and "voxels segmented" in line, line

"""End-to-end tests of bundles/patcher_polyp through the real ``python -m monai.bundle`` entry point.

Tiny preset, 64 x 64 inputs, a few synthetic Kvasir-style JPEG pairs; inference also on real Kvasir-SEG
images when ../shared/data is there.
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

BUNDLE = REPO_ROOT / "bundles" / "patcher_polyp"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.json")


def write_kvasir_like(root: Path, n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """Synthetic Kvasir-SEG layout: ``{train,val}/{images,masks}/*.jpg`` (red discs on noise, JPEG masks)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = 60 + 4 * i, 80
            yy, xx = np.mgrid[:h, :w]
            cy, cx, r = rng.integers(15, h - 15), rng.integers(15, w - 15), rng.integers(6, 12)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            img = rng.integers(60, 120, (h, w, 3)).astype(np.uint8)
            img[m] = [200, 80, 80]
            Image.fromarray(img).save(root / split / "images" / f"img{i}.jpg")
            Image.fromarray((m * 255).astype(np.uint8)).save(root / split / "masks" / f"img{i}.jpg")
    return root


FAST_KW = {"network_def#name": "tiny", "spatial_size": 64, "num_workers": 0}


def run_inprocess(run_id: str | None, config_file, **override):
    """``monai.bundle.run`` in this process (the same entry point without a new interpreter: saves start-up time)."""
    from monai.bundle import run

    run(run_id, config_file=config_file, logging_file=False, **{**FAST_KW, **override})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("polyp_train")
    data = write_kvasir_like(root / "data")
    out, ckpt = root / "eval", root / "models"
    proc = run_bundle(
        "run", "training", "--config_file", TRAIN, "--dataset_dir", str(data), "--max_epochs", "1",
        "--batch_size", "2", "--output_dir", str(out), "--ckpt_dir", str(ckpt), *FAST, cwd=root,
    )
    return {"root": root, "data": data, "out": out, "ckpt": ckpt, "log": proc.stdout + proc.stderr}


def test_train_one_epoch(trained):
    assert (trained["ckpt"] / "model.pt").is_file()
    last = torch.load(trained["ckpt"] / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert set(last) >= {"model", "optimizer", "lr_scheduler", "trainer"}
    assert "val_mean_dice" in trained["log"] and "val_mean_iou" in trained["log"]


def test_checkpoints_carry_the_model_record(trained):
    """model.pt and the last-epoch checkpoint say which network they hold and how its images were made."""
    from monai_patcher.io import read_model_record

    for name in ("model.pt", "checkpoint_epoch=1.pt"):
        content = torch.load(trained["ckpt"] / name, map_location="cpu", weights_only=True)
        assert {"model", "model_record"} <= set(content), name
        record = read_model_record(trained["ckpt"] / name)
        assert record.network == {"preset": "tiny", "in_channels": 3, "out_channels": 1, "overrides": {}}, name
        assert (record.channels, record.inplane_mode, record.spatial_size, record.slice_axis) == (
            ["R", "G", "B"], "resize", 64, None), name
        assert record.normalization["subtrahend"] == [0.485, 0.456, 0.406] and record.b_value is None


def test_inference_builds_the_network_from_the_record(trained, tmp_path):
    """Inference with no preset and no size given builds the trained 'tiny' network at 64 x 64 from model.pt's
    record (the config's defaults are 'paper' and 256); a preset or a size that disagrees is one sentence."""
    from monai.bundle import ConfigWorkflow

    from monai_patcher.io import ModelRecordMismatchError
    from monai_patcher.networks import PATCHER_PRESETS

    ckpt = str(trained["ckpt"] / "model.pt")
    images = trained["data"] / "val" / "images"
    common = {"input": str(images), "ckpt_path": ckpt, "num_workers": 0}
    wf = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), logging_file=False, workflow_type="infer",
                        output_dir=str(tmp_path / "pred"), **common)
    wf.initialize()
    assert wf.parser.get_parsed_content("spatial_size") == 64
    net = wf.parser.get_parsed_content("network_def")
    assert list(net.config["embed_dims"]) == list(PATCHER_PRESETS["tiny"]["embed_dims"])
    wf.run()
    assert len(list((tmp_path / "pred").glob("*_mask.png"))) == len(list(images.glob("*.jpg")))
    for override, words in (({"network_def#name": "small"}, ["holds a 'tiny' Patcher", "drop --network_def#name"]),
                            ({"spatial_size": 128}, ["trained with spatial_size 64 but 128", "--spatial_size"])):
        wf = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), logging_file=False, workflow_type="infer",
                            output_dir=str(tmp_path / "other"), **common, **override)
        with pytest.raises(Exception) as err:
            wf.initialize()
            wf.parser.get_parsed_content("network_def")
        chain, e = [], err.value
        while e is not None:
            chain.append(e)
            e = e.__cause__ or e.__context__
        mismatch = [e for e in chain if isinstance(e, ModelRecordMismatchError)]
        assert mismatch, chain
        msg = str(mismatch[0])
        assert ckpt in msg and all(w in msg for w in words) and "\n" not in msg, msg


def test_ckpt_export_of_the_trained_checkpoint(trained, tmp_path):
    """The command of the bundle's README: ``ckpt_export --key_in_ckpt model`` of model.pt (weights next to the
    record), the network built from the record (no preset named): the TorchScript file holds the trained weights."""
    from monai.bundle import ckpt_export

    ckpt = str(trained["ckpt"] / "model.pt")
    ts = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(ts), ckpt_file=ckpt, key_in_ckpt="model", ckpt_path=ckpt,
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"),
                bundle_root=str(BUNDLE))
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    scripted = torch.jit.load(str(ts))
    assert set(scripted.state_dict()) == set(weights)
    assert all(torch.equal(scripted.state_dict()[k], v) for k, v in weights.items())
    assert scripted(torch.zeros(1, 3, 64, 48)).shape == (1, 1, 64, 48)


def test_resume_keeps_best_model(trained, tmp_path):
    """After ``--resume true`` the best Dice so far is restored: a worse validation does not replace model.pt."""
    cfg = json.loads(Path(TRAIN).read_text())
    assert "best_metric" in cfg["train"]["checkpoint_loader"]["optional_keys"]  # old checkpoints still resume
    resume_keeps_best_model(TRAIN, trained["ckpt"], tmp_path, "--dataset_dir", str(trained["data"]),
                            "--batch_size", "2", *FAST)


def test_evaluate_writes_csv(trained, tmp_path):
    out = tmp_path / "eval"
    run_inprocess(None, [TRAIN, str(CONFIGS / "evaluate.json")], dataset_dir=str(trained["data"]),
                  ckpt_dir=str(trained["ckpt"]), output_dir=str(out))
    metrics = dict(line.split(",") for line in (out / "metrics.csv").read_text().split())
    assert set(metrics) == {"val_mean_dice", "val_mean_iou"}
    assert len((out / "val_mean_dice_raw.csv").read_text().splitlines()) == 1 + 2  # header + 2 val images


class _RedLogits(torch.nn.Module):
    """A stand-in "network" segmenting what is red (the synthetic polyps are red discs on grey noise)."""

    def forward(self, x):
        return 20.0 * (x[:, :1] - 0.6)  # ImageNet-normalised red: about 1.3 on the discs, at most 0 around them


def _mask(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("L")) > 127


def _evaluate(folder: Path, tmp_path: Path, **kw):
    overrides = {**FAST_KW, "eval_dir": str(folder), "output_dir": str(tmp_path / "eval"), **kw.pop("override", {})}
    return evaluate_in_process([TRAIN, str(CONFIGS / "evaluate.json")], overrides, **kw)


def test_evaluate_scores_at_the_image_size(trained, tmp_path):
    """Dice is computed against each mask as stored (60 x 80 and 64 x 80 here), not on the 64 x 64 network grid.

    (MONAI's ``PILReader`` gives ``W x H`` arrays, hence the transposes.)
    """
    folder = trained["data"] / "val"
    evaluator, items = _evaluate(folder, tmp_path, network=_RedLogits())
    masks = [_mask(p) for p in sorted((folder / "masks").glob("*.jpg"))]
    assert [tuple(it["label"].shape) for it in items] == [(1, *m.T.shape) for m in masks] == [(1, 80, 60), (1, 80, 64)]
    dices = []
    for it, m in zip(items, masks):
        assert it["pred"].shape == it["label"].shape
        np.testing.assert_array_equal(it["label"][0].numpy().T > 0.5, m)  # the stored mask, not a resampled one
        dices.append(dice(it["pred"][0].numpy() > 0.5, it["label"][0].numpy() > 0.5))
    assert min(dices) > 0.85  # the red-disc "network" finds each disc where its mask has it
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(np.mean(dices), abs=1e-5)


@pytest.mark.parametrize("scale", [255, 1], ids=["0-255", "0-1"])
def test_bundle_chain_reads_0_255_and_0_1_png_masks(tmp_path, scale):
    """The bundle's deterministic training chain on a PNG mask stored as 0/255 and as 0/1: the same, non-empty
    label (0/1 masks used to come out empty, silently: threshold 127). No training: cheap."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose
    from PIL import Image

    write_kvasir_like(tmp_path / "data", n_train=1, n_val=0)
    img = tmp_path / "data" / "train" / "images" / "img0.jpg"
    disc = np.asarray(Image.open(tmp_path / "data" / "train" / "masks" / "img0.jpg")) > 127
    Image.fromarray(disc.astype(np.uint8) * scale).save(tmp_path / "mask.png")
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser["spatial_size"] = 64
    xf = Compose(parser.get_parsed_content("train#deterministic_transforms"))
    lab = xf({"image": str(img), "label": str(tmp_path / "mask.png")})["label"]
    ref = xf({"image": str(img), "label": str(tmp_path / "data" / "train" / "masks" / "img0.jpg")})["label"]
    assert tuple(lab.shape) == (1, 64, 64) and float(lab.sum()) > 20
    assert float((lab == ref).float().mean()) > 0.98


def test_evaluate_real_kvasir_images_at_their_size(trained, tmp_path, shared_path_fn):
    folder = shared_path_fn("Kvasir-SEG-5-samples-original-encoding", "Kvasir-SEG")  # images/ + masks/
    evaluator, items = _evaluate(folder, tmp_path, override={"ckpt_path": str(trained["ckpt"] / "model.pt")})
    masks = [_mask(p) for p in sorted((folder / "masks").glob("*.jpg"))]
    assert len(items) == len(masks) == 4
    dices = []
    for it, m in zip(items, masks):
        assert it["pred"].shape == it["label"].shape
        np.testing.assert_array_equal(it["label"][0].numpy().T > 0.5, m)  # the stored mask, not a resampled one
        dices.append(dice(it["pred"][0].numpy() > 0.5, it["label"][0].numpy() > 0.5))
    assert evaluator.state.metrics["val_mean_dice"] == pytest.approx(np.mean(dices), abs=1e-5)


def test_inference_png_masks_in_image_size(trained, tmp_path):
    from PIL import Image

    out = tmp_path / "pred"
    images = trained["data"] / "val" / "images"
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(images), label=str(trained["data"] / "val" / "masks"),
                  ckpt_path=str(trained["ckpt"] / "model.pt"), output_dir=str(out))
    for img in sorted(images.glob("*.jpg")):
        mask = Image.open(out / f"{img.stem}_mask.png")
        assert mask.size == Image.open(img).size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        overlay = Image.open(out / "overlays" / f"{img.stem}_overlay.png")
        assert overlay.size == Image.open(img).size and overlay.mode == "RGB"


def test_inference_real_kvasir_images(trained, tmp_path, shared_path_fn):
    from PIL import Image

    folder = shared_path_fn("Kvasir-SEG-5-samples-original-encoding", "Kvasir-SEG")  # images/ + masks/
    out = tmp_path / "pred"
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(folder), ckpt_path=str(trained["ckpt"] / "model.pt"),
                  output_dir=str(out))
    for img in sorted((folder / "images").glob("*.jpg")):
        assert Image.open(out / f"{img.stem}_mask.png").size == Image.open(img).size
        assert (out / "overlays" / f"{img.stem}_overlay.png").is_file()  # masks/ was found next to images/


def test_inference_grayscale_and_rgba_images(trained, tmp_path, shared_path_fn):
    """Real Kvasir frames saved as grayscale ("L") and RGBA PNGs go through the bundle (EnsureRGBd); they failed in
    the ImageNet normalisation ("img has 1 channels, but subtrahend has 3 components") before."""
    from PIL import Image

    src = sorted((shared_path_fn("Kvasir-SEG-5-samples-original-encoding", "Kvasir-SEG") / "images").glob("*.jpg"))[0]
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = Image.open(src).convert("RGB")
    rgb.save(folder / "rgb.png")
    rgb.convert("L").save(folder / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)  # alpha is dropped, not composited: the prediction must equal the RGB one
    rgba.save(folder / "rgba.png")
    out = tmp_path / "pred"
    run_inprocess(None, str(CONFIGS / "inference.json"), input=str(folder), ckpt_path=str(trained["ckpt"] / "model.pt"),
                  output_dir=str(out))
    masks = {n: np.asarray(Image.open(out / f"{n}_mask.png")) for n in ("rgb", "gray", "rgba")}
    assert all(m.shape == (rgb.size[1], rgb.size[0]) for m in masks.values())
    np.testing.assert_array_equal(masks["rgba"], masks["rgb"])


def test_a_missing_dataset_dir_names_dataset_dir(tmp_path):
    """Training without the dataset: the last line names the folder and --dataset_dir (the option to set), not --input."""
    root = str(bundle_copy("patcher_polyp", tmp_path / "bundle"))  # run from elsewhere, as users do: --bundle_root
    last = bundle_error("run", "training", "--config_file", TRAIN, "--bundle_root", root,
                        "--dataset_dir", str(tmp_path / "kvasir"), *FAST, cwd=tmp_path)
    assert last.startswith(f"error: {tmp_path / 'kvasir' / 'train'} (from --dataset_dir): no such file or folder"), last
    assert "set --dataset_dir to the dataset folder" in last and "--input" not in last, last

"""Train and evaluate the stroke bundle (bundles/patcher_stroke) slice-wise on the BraTS 2015 examples.

BraTS is a stand-in for stroke (tumour, not stroke): 2 channels FLAIR + T1c, label ``OTMultiClass > 0``;
``train/`` (pat0005, pat0006) trains, ``validation/`` (pat0003, pat0004) evaluates. The bundle's own
``train.json`` and ``evaluate.json`` run unchanged except for these command-line overrides:

- the datalist maps the bundle's two channel keys to BraTS files (``dwi`` <- FLAIR, ``adc`` <- T1c) and
  in ``train#deterministic_transforms`` ``ComputeEADCd`` (which turns an ADC map into eADC) becomes a plain copy
  ``adc -> eadc``: BraTS has no ADC;
- ``network_def#name small`` (the CPU-sized preset; ``--preset``), plus one ``network_def#KEY VALUE`` per
  ``--network-override KEY=JSONVALUE`` (any other ``Patcher`` argument, e.g. the tuned CPU variant
  ``small_patch=[4,2,2,2]`` and ``gate_channels=[]``), ``max_epochs`` = ``--iterations`` (2 training cases and
  ``batch_size 8`` = 2 cases x 4 slices, so one epoch is one optimiser step of 8 slices), no validation during
  training (``val_interval`` > ``max_epochs``; the last checkpoint is evaluated once);
- ``inplane_mode resize``: the paper's in-plane resize to 256 x 256, with which docs/results.md's figures were made
  (the bundle's default is the spacing pipeline at the ISLES'22 median of 2 mm; BraTS is 1 mm);
- ``learning_rate 1e-4`` (``--learning-rate``), ``lr_warmup_iters`` 5 % of the steps (``--warmup``) and
  ``BCEIoULoss``: the bundle's defaults
  (lr 6e-5, 1500 warm-up iterations, BCE) are for hours of GPU training, not minutes of CPU.

The training budget is a number of steps (``--iterations``), chosen from the step time of a short probe run
(``--skip-eval``, which trains only and looks at no validation case); the CPU time actually used
(``RUSAGE_CHILDREN``) and the wall time are recorded. ``evaluate.json``
(``eval_split validation``) gives per-volume Dice/IoU (MONAI ``MeanDice`` on each scan's own grid, against the label
as stored) and per-slice Dice/IoU (``SliceMeanDice``: mean over the slices whose ground truth has tumour). With ``--figure``
a few tumour slices per validation case are drawn TP green / FP red / FN white.

    python -m benchmarks.brats_bundle --iterations 200 --threads 2 --network-override 'small_patch=[4,2,2,2]' \
        --network-override 'gate_channels=[]' --figure docs/figures/brats_overlays.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import ROOT

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "BraTS2015-DeepMedic-examples"
CONFIGS = ROOT / "bundles" / "patcher_stroke" / "configs"
# the bundle's volume transforms with ComputeEADCd replaced by a plain copy adc -> eadc
EADC_AS_COPY = ("$[monai.transforms.CopyItemsd(keys='adc', names='eadc') if type(t).__name__ == 'ComputeEADCd' "
                "else t for t in @train#volume_transforms.transforms]")


def parse_network_overrides(items: list[str] | None) -> dict:
    """``["small_patch=[4,2,2,2]", "gate_channels=[]"]`` -> ``{"small_patch": [4, 2, 2, 2], "gate_channels": []}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--network-override wants KEY=JSONVALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--network-override {item!r}: the value is not JSON ({e})") from None
    return out


def network_cli(overrides: dict) -> list[str]:
    """Bundle command-line overrides ``--network_def#KEY VALUE``; VALUE is a Python literal, which the bundle's
    command line (python-fire) parses back into the same list/number/bool/string."""
    return [a for key, value in overrides.items() for a in (f"--network_def#{key}", repr(value))]


def write_datalist(data: Path, path: Path) -> Path:
    def item(split: str, case: Path) -> dict:
        return {"case": case.name, "dwi": str(case / "Flair_subtrMeanDivStd.nii.gz"),
                "adc": str(case / "T1c_subtrMeanDivStd.nii.gz"), "label": str(case / "OTMultiClass.nii.gz")}

    dl = {split_key: [item(folder, c) for c in sorted((data / folder).iterdir()) if c.is_dir()]
          for split_key, folder in (("training", "train"), ("validation", "validation"))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dl, indent=1))
    return path


def common_overrides(args, datalist: Path) -> list[str]:
    return ["--dataset_dir", str(datalist.parent), "--datalist", str(datalist), "--output_dir", str(args.out / "eval"),
            "--ckpt_dir", str(args.out / "models"), "--network_def#name", args.preset,
            *network_cli(args.network_overrides), "--num_workers", "0",
            "--train#deterministic_transforms", EADC_AS_COPY,
            # the paper's resize to 256 x 256, with which the recorded results were made (the bundle's default is now
            # the spacing pipeline, at the ISLES'22 2 mm; BraTS is 1 mm)
            "--inplane_mode", "resize"]


def run(cmd: list[str], log: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": round(cpu, 1), "wall_s": round(time.perf_counter() - w0, 1), "cmd": " ".join(cmd)}


def read_train_curve(log: Path, every: int = 10) -> dict:
    """Training loss and ``train_mean_dice`` (training mode, on the training batch) every ``every`` steps, from
    the bundle's log (the log itself is not committed)."""
    import re

    loss = {int(m[1]): float(m[2]) for m in re.finditer(r"Epoch: (\d+)/\d+, Iter: 1/1 -- train_loss: ([\d.]+)",
                                                             log.read_text(errors="replace"))}
    dice = {int(m[1]): float(m[2]) for m in re.finditer(r"Epoch\[(\d+)\] Metrics -- train_mean_dice: ([\d.]+)",
                                                              log.read_text(errors="replace"))}
    last = max(loss, default=0)
    keep = [e for e in sorted(loss) if e % every == 0 or e in (1, last)]
    return {"every": every, "step": keep, "train_loss": [loss[e] for e in keep],
            "train_mean_dice": [dice.get(e) for e in keep]}


def read_metrics(eval_dir: Path) -> dict:
    out = {}
    with open(eval_dir / "metrics.csv") as f:
        for name, value in csv.reader(f):
            out[name] = float(value)
    for metric in ("val_mean_dice", "val_mean_iou"):
        with open(eval_dir / f"{metric}_raw.csv") as f:
            rows = list(csv.DictReader(f))
        # rows are named by the datalist's case id (older runs: by the scan's path, whose folder is the case)
        out[f"{metric}_per_volume"] = {(Path(r["filename"]).parent.name or r["filename"]): float(r["class0"])
                                       for r in rows}
    return out


def load_bundle_net(args, datalist: Path, ckpt: Path):
    """The bundle's validation preprocessing and its network (``train.json`` + this script's overrides), with the
    checkpoint's weights, in eval mode."""
    import torch
    from monai.bundle import ConfigParser

    torch.set_num_threads(args.threads)
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["dataset_dir"] = str(datalist.parent)
    parser["datalist"] = str(datalist)
    parser["network_def"]["name"] = args.preset
    parser["network_def"].update(args.network_overrides)
    parser["train#deterministic_transforms"] = EADC_AS_COPY
    pre = parser.get_parsed_content("validate#preprocessing")
    net = parser.get_parsed_content("network_def")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state))
    return pre, net.eval()


def bn_check(args, datalist: Path, ckpt: Path, n_slices: int = 8) -> dict:
    """``n_slices`` tumour slices of the first validation case, predicted with BatchNorm running statistics (eval
    mode) and with batch statistics (train mode, no gradient). Far apart fractions of predicted tumour mean the
    running statistics have not settled."""
    import torch

    pre, net = load_bundle_net(args, datalist, ckpt)
    it = json.loads(datalist.read_text())["validation"][0]
    d = pre(dict(it))
    img, lab = d["image"], d["label"]
    zs = np.nonzero(lab[0].sum(dim=(0, 1)).numpy())[0]
    z = zs[np.linspace(0, len(zs) - 1, n_slices).astype(int)]
    x = img[..., z].permute(3, 0, 1, 2).as_tensor().float()
    y = lab[0][..., z].permute(2, 0, 1).as_tensor() > 0.5
    out = {"case": it["case"], "slices": [int(v) for v in z], "true_fg_fraction": round(float(y.float().mean()), 4)}
    with torch.no_grad():
        for mode, train in (("eval_mode", False), ("batch_statistics", True)):
            net.train(train)
            pred = net(x)[:, 0] > 0
            dice = 2 * (pred & y).sum() / max(int(pred.sum() + y.sum()), 1)
            out[mode] = {"fg_fraction": round(float(pred.float().mean()), 4), "dice": round(float(dice), 4)}
    net.eval()
    return out


def make_figure(args, datalist: Path, ckpt: Path, path: Path, n_per_case: int = 3) -> dict:
    """Predict a few tumour slices of each validation case with the bundle's own preprocessing and network."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monai_patcher.visualize import overlay

    pre, net = load_bundle_net(args, datalist, ckpt)
    items = json.loads(datalist.read_text())["validation"]
    panels = []
    for it in items:
        d = pre(dict(it))
        img, lab = d["image"], d["label"]  # 2 x 256 x 256 x Z (RAS; channel 0 eadc <- T1c, 1 dwi <- FLAIR)
        zs = np.nonzero(lab[0].sum(dim=(0, 1)).numpy())[0]
        picks = zs[np.linspace(len(zs) * 0.2, len(zs) * 0.8, n_per_case).astype(int)]
        with torch.no_grad():
            logits = net(img[..., picks].permute(3, 0, 1, 2).as_tensor().float())
        for k, z in enumerate(picks):
            p, g = (logits[k, 0] > 0).numpy(), lab[0, ..., z].numpy() > 0.5
            dz = 2 * (p & g).sum() / max(p.sum() + g.sum(), 1)
            show = lambda a: np.flipud(np.asarray(a).T)  # noqa: E731  RAS voxel grid -> picture, anterior up
            panels.append((it["case"], int(z), float(dz), overlay(show(img[1, ..., z].numpy()), show(p), show(g))))
    fig, axes = plt.subplots(len(items), n_per_case, figsize=(3 * n_per_case, 3.4 * len(items)), squeeze=False)
    for ax, (case, z, dz, rgb) in zip(axes.ravel(), panels):
        ax.imshow(rgb)
        ax.set_title(f"{case.replace('brats_2013_', '')} z={z}: slice Dice {dz:.2f}", fontsize=8)
        ax.axis("off")
    variant = "".join(f", {k}={v}" for k, v in args.network_overrides.items())
    fig.suptitle(f"BraTS validation (FLAIR), stroke bundle, Patcher '{args.preset}'{variant}, {args.iterations} steps:"
                 " TP green, FP red, FN white", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"figure": str(path), "slices": [(c, z, round(d, 3)) for c, z, d, _ in panels]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--preset", default="small")
    p.add_argument("--network-override", action="append", default=[], metavar="KEY=JSONVALUE",
                   help="extra Patcher argument for the bundle's network_def, repeatable, "
                        "e.g. 'small_patch=[4,2,2,2]' 'gate_channels=[]'")
    p.add_argument("--iterations", type=int, default=200, help="optimiser steps (= bundle epochs here)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.05, help="linear warm-up, as a fraction of --iterations")
    p.add_argument("--spatial-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "brats_bundle")
    p.add_argument("--figure", type=Path, default=None)
    p.add_argument("--skip-train", action="store_true", help="evaluate the existing last checkpoint only")
    p.add_argument("--bn-check", action="store_true",
                   help="also predict 8 tumour slices of the first validation case with BatchNorm running and batch "
                        "statistics")
    p.add_argument("--skip-eval", action="store_true",
                   help="train only (e.g. a short probe of the step time); no validation case is looked at")
    args = p.parse_args(argv)
    args.network_overrides = parse_network_overrides(args.network_override)
    args.out.mkdir(parents=True, exist_ok=True)
    datalist = write_datalist(args.data, args.out / "datalist.json")
    common = common_overrides(args, datalist) + ["--spatial_size", str(args.spatial_size)]
    bundle = [sys.executable, "-m", "monai.bundle", "run"]
    summary = {"preset": args.preset, "network_overrides": args.network_overrides, "iterations": args.iterations,
               "threads": args.threads, "learning_rate": args.learning_rate, "warmup": args.warmup,
               "cpu_count": os.cpu_count()}
    previous = args.out / "summary.json"
    if args.skip_train and previous.exists():  # keep the record of the training run that made the checkpoint
        old = json.loads(previous.read_text())
        if "train" in old and all(old.get(k) == summary[k] for k in ("preset", "network_overrides", "iterations")):
            summary["train"] = old["train"]
            if (args.out / "train.log").exists() and "curve" not in summary["train"]:
                summary["train"]["curve"] = read_train_curve(args.out / "train.log")
    if not args.skip_train:
        warm = max(1, round(args.warmup * args.iterations))
        summary["train"] = run(
            bundle + ["training", "--config_file", str(CONFIGS / "train.json"), *common,
                      "--max_epochs", str(args.iterations), "--val_interval", str(args.iterations + 1),
                      "--learning_rate", str(args.learning_rate), "--lr_warmup_iters", str(warm),
                      "--loss", "{'_target_': 'monai_patcher.losses.BCEIoULoss'}"],
            args.out / "train.log", args.threads)
        summary["train"]["cpu_s_per_step"] = round(summary["train"]["cpu_s"] / args.iterations, 2)
        summary["train"]["wall_s_per_step"] = round(summary["train"]["wall_s"] / args.iterations, 2)
        summary["train"]["lr_warmup_iters"] = warm
        summary["train"]["curve"] = read_train_curve(args.out / "train.log")
        print(json.dumps(summary["train"]), flush=True)
    if args.skip_eval:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return 0
    ckpt = args.out / "models" / f"checkpoint_epoch={args.iterations}.pt"
    summary["evaluate"] = run(
        bundle + ["--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']", *common,
                  "--eval_split", "validation", "--ckpt_path", str(ckpt)],
        args.out / "evaluate.log", args.threads)
    summary["metrics"] = read_metrics(args.out / "eval")
    print(json.dumps(summary["metrics"], indent=1), flush=True)
    if args.bn_check:
        summary["bn_check"] = bn_check(args, datalist, ckpt)
        print(json.dumps(summary["bn_check"]), flush=True)
    if args.figure:
        summary["figure"] = make_figure(args, datalist, ckpt, args.figure)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-run time of the stroke bundle's inference against the network's own time in the same run.

Measures, not tests. For each volume the ``patcher_stroke`` bundle's ``inference.json`` runs in this process
(``monai.bundle.ConfigWorkflow``: parsing, the network, the checkpoint, reading, the preprocessing, the windows,
``Invertd``, writing the mask), twice: with ``skip_empty`` true (the default: all-background windows answered by one
network output) and false (every window run, MONAI's ``SliceInferer``). Forward hooks on the network add up the time
spent inside its forward calls and count the windows, so every row has, from one run:

- ``whole_s``: wall time of the whole run (config parsing to the mask on disk; imports excluded);
- ``network_s``: time inside the network's forward calls of that run, and ``windows`` run;
- ``ratio`` = ``whole_s / network_s`` (goal: <= 1.15: no transform, I/O or blending overhead worth naming);
- for ``skip_empty`` true also ``vs_all_windows``: its ``whole_s`` over the ``network_s`` of the run that ran every
  window (the network time of the plain ``SliceInferer`` on the same slices and windows), and how the two runs'
  results differ: mask voxels, the largest logit difference (the inferer's output in the network's grid, kept by
  :class:`CapturingInferer`, the bundle's inferer plus one reference), and, because a random network's mask at 0.5
  may be empty, the voxels on either side of the median logit (about half of them) that differ.

Volumes: the real ISLES'22 case (``../shared/data``, 112 x 112 x 73 at 2 mm) and the same case resampled to
512 x 512 x 150 (trilinear, same field of view, written to a temporary folder and deleted). The network is the
bundle's ``paper`` preset (``--preset``) with random weights saved as a checkpoint (time does not depend on the
weights; the masks compared are those of these weights).

Usage::

    python -m benchmarks.bench_volume_inference [--preset paper] [--threads 1] [--inplane_mode spacing]
        [--sw_batch_size 8] [--volumes isles22 512] [--out benchmarks/results/volume_inference/summary.md] [--append]
    python -m benchmarks.bench_volume_inference --stages --volumes 512   # the steps outside the network, timed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from monai_patcher.inferers import SkipEmptySliceInferer

from . import ROOT

CONFIG = ROOT / "bundles" / "patcher_stroke" / "configs" / "inference.json"
ISLES = ROOT.parent / "shared" / "data" / "ISLES-2022-case0001" / "data"


class NetworkClock:
    """Forward hooks that add up the time spent inside ``module``'s forward calls and the items they were given."""

    def __init__(self, module) -> None:
        self.seconds = 0.0
        self.items = 0
        self.calls = 0
        self._t0 = 0.0
        self._handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, module, args) -> None:
        self.items += int(args[0].shape[0])
        self._t0 = time.perf_counter()

    def _post(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class CapturingInferer(SkipEmptySliceInferer):
    """The bundle's inferer, keeping a reference to its last output (the logits in the network's grid) to compare."""

    def __call__(self, inputs, network, *args, **kwargs):
        self.last = super().__call__(inputs, network, *args, **kwargs)
        return self.last


def resample_case(src_dir: Path, dst_dir: Path, shape: tuple[int, int, int]) -> dict[str, Path]:
    """The ISLES'22 DWI and ADC resampled (trilinear, same field of view) to ``shape``, as uncompressed NIfTI."""
    import nibabel as nib
    import torch

    out = {}
    for key in ("dwi", "adc"):
        img = nib.load(str(src_dir / f"sub-strokecase0001_ses-0001_{key}.nii.gz"))
        arr = torch.from_numpy(np.asanyarray(img.dataobj).astype(np.float32))[None, None]
        up = torch.nn.functional.interpolate(arr, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
        scale = np.diag([img.shape[i] / shape[i] for i in range(3)] + [1.0])
        scale[:3, 3] = (np.diag(scale)[:3] - 1) / 2  # voxel centres of the finer grid, same field of view
        out[key] = dst_dir / f"scan{shape[0]}_{key}.nii"
        nib.save(nib.Nifti1Image(up, img.affine @ scale), str(out[key]))
    return out


def run_bundle(case: dict[str, Path], ckpt: Path, out_dir: Path, overrides: dict) -> dict:
    """One run of ``inference.json`` on ``case``; the whole wall time and the network's time inside it."""
    import nibabel as nib
    from monai.bundle import ConfigWorkflow

    t0 = time.perf_counter()
    wf = ConfigWorkflow(config_file=str(CONFIG), meta_file=str(CONFIG.parent / "metadata.json"), workflow_type=None,
                        logging_file=False,
                        input=str(case["dwi"]), input_adc=str(case["adc"]), ckpt_path=str(ckpt),
                        output_dir=str(out_dir), **overrides)
    wf.initialize()
    clock = NetworkClock(wf.parser.get_parsed_content("network"))
    wf.run()
    whole = time.perf_counter() - t0
    clock.remove()
    inferer = wf.parser.get_parsed_content("inferer")
    logits = inferer.last.detach().float().cpu()
    wf.finalize()
    (seg,) = out_dir.glob("*_seg.nii.gz")
    mask = np.asanyarray(nib.load(str(seg)).dataobj)
    del wf
    return {"whole_s": round(whole, 2), "network_s": round(clock.seconds, 2), "ratio": round(whole / clock.seconds, 3),
            "windows": clock.items, "forward_calls": clock.calls,
            "windows_skipped": inferer.num_skipped, "mask": mask, "logits": logits}


def stage_times(case: dict[str, Path], inplane_mode: str, out_dir: Path) -> dict[str, float]:
    """Seconds of each step outside the network on ``case``: every preprocessing transform of the bundle, then
    sigmoid, ``Invertd`` (of the probabilities alone, as without overlays), threshold and writing the mask."""
    import numpy
    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import Activationsd, AsDiscreted, Invertd, SaveImaged

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser["inplane_mode"] = inplane_mode
    xf = parser.get_parsed_content("preprocessing")
    data, times = {k: str(v) for k, v in case.items()}, {}
    for t in xf.transforms:  # a class that comes twice (the optional label's LoadImaged, CheckVolumed) adds up
        t0 = time.perf_counter()
        data = t(data)
        times[type(t).__name__] = round(times.get(type(t).__name__, 0.0) + time.perf_counter() - t0, 2)
    data["pred"] = torch.randn(1, *data["image"].shape[1:])
    post = [Activationsd("pred", sigmoid=True),
            Invertd("pred", transform=xf, orig_keys="image", nearest_interp=False, to_tensor=True),
            AsDiscreted("pred", threshold=0.5),
            SaveImaged("pred", output_dir=str(out_dir), output_postfix="seg", output_dtype=numpy.uint8,
                       separate_folder=False, resample=False, squeeze_end_dims=True)]
    for t in post:
        t0 = time.perf_counter()
        data = t(data)
        times[type(t).__name__] = round(time.perf_counter() - t0, 2)
    return times


def others_running() -> str:
    """The other processes using CPU now (``ps``, top 5 by CPU), for the record."""
    try:
        ps = subprocess.run(["ps", "-eo", "pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return "ps not available"
    lines = [ln[:150] for ln in ps.splitlines()[1:6]]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inplane_mode", default="spacing", choices=["spacing", "resize"])
    ap.add_argument("--sw_batch_size", type=int, default=8)
    ap.add_argument("--volumes", nargs="+", default=["isles22", "512"], choices=["isles22", "512"])
    ap.add_argument("--depth", type=int, default=150, help="slices of the 512 x 512 volume")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "volume_inference" / "summary.md")
    ap.add_argument("--append", action="store_true", help="add this run's section to --out instead of replacing it")
    ap.add_argument("--stages", action="store_true",
                    help="only time the steps outside the network on each volume (printed, not written)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)

    import torch

    from monai_patcher.networks import patcher_preset

    torch.set_num_threads(args.threads)
    if not ISLES.is_dir():
        raise SystemExit(f"real data not available: {ISLES} does not exist")
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_volume_inference_") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        ckpt = tmp / "model.pt"
        torch.save(patcher_preset(args.preset, in_channels=2, out_channels=1).state_dict(), ckpt)
        volumes = {}
        if "isles22" in args.volumes:
            volumes["isles22 112x112x73"] = {k: ISLES / f"sub-strokecase0001_ses-0001_{k}.nii.gz" for k in ("dwi", "adc")}
        if "512" in args.volumes:
            volumes[f"512x512x{args.depth}"] = resample_case(ISLES, tmp, (512, 512, args.depth))
        if args.stages:
            for name, case in volumes.items():
                print(name, json.dumps(stage_times(case, args.inplane_mode, tmp)), flush=True)
            return
        overrides = {"network_def#name": args.preset, "inplane_mode": args.inplane_mode,
                     "inferer#_target_": f"{__name__}.CapturingInferer",
                     "sw_batch_size": args.sw_batch_size, "num_workers": 0}
        for name, case in volumes.items():
            runs = {}
            for skip in (True, False):
                out = tmp / f"{name.split()[0]}_{skip}"
                runs[skip] = run_bundle(case, ckpt, out, {**overrides, "skip_empty": skip})
                print(name, "skip_empty", skip, {k: v for k, v in runs[skip].items() if k not in ("mask", "logits")},
                      flush=True)
            diff = int((runs[True]["mask"] != runs[False]["mask"]).sum())
            a, b = runs[True]["logits"], runs[False]["logits"]
            median = float(b.median())  # a threshold that splits the random network's map in two halves
            for skip in (True, False):
                r = runs[skip]
                row = {"volume": name, "skip_empty": skip,
                       **{k: v for k, v in r.items() if k not in ("mask", "logits")},
                       "mask_voxels": int(r["mask"].sum()), "shape": list(r["mask"].shape)}
                if skip:
                    row["vs_all_windows"] = round(r["whole_s"] / runs[False]["network_s"], 3)
                    row["mask_voxels_differing"] = diff
                    row["max_abs_logit_diff"] = float((a - b).abs().max())
                    row["median_split_voxels_differing"] = int(((a > median) != (b > median)).sum())
                    row["median_split_voxels"] = int((b > median).sum())
                rows.append(row)
    record = {"preset": args.preset, "inplane_mode": args.inplane_mode, "threads": args.threads,
              "sw_batch_size": args.sw_batch_size, "torch": torch.__version__, "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "others_running": others_running(), "rows": rows}
    write_summary(args.out, record, argv, append=args.append)
    print(json.dumps(record, indent=1))


def write_summary(path: Path, record: dict, argv, append: bool = False) -> None:
    """A small Markdown table of the rows, with the command and what else was running (appended with ``append``)."""
    cols = ["volume", "skip_empty", "whole_s", "network_s", "ratio", "windows", "windows_skipped", "vs_all_windows",
            "mask_voxels", "mask_voxels_differing", "max_abs_logit_diff", "median_split_voxels",
            "median_split_voxels_differing"]
    lines = [
        f"## preset {record['preset']}, inplane_mode {record['inplane_mode']}",
        "",
        f"Command: `python -m benchmarks.bench_volume_inference {' '.join(argv)}`",
        "",
        f"preset {record['preset']}, inplane_mode {record['inplane_mode']}, {record['threads']} thread(s), "
        f"sw_batch_size {record['sw_batch_size']}, torch {record['torch']}, {record['cpus']} CPUs; load average "
        f"{', '.join(f'{v:.2f}' for v in record['loadavg_before'])} before, "
        f"{', '.join(f'{v:.2f}' for v in record['loadavg_after'])} after.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in record["rows"]:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    lines += ["", "Busiest processes at the end (ps -eo pcpu,etime,args):", "", "```", record["others_running"], "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "# Stroke bundle inference: whole run vs network time (benchmarks/bench_volume_inference.py)\n\n"
    before = path.read_text() if append and path.is_file() else head
    path.write_text(before + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

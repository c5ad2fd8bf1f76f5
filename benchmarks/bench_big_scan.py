"""Peak memory of stroke inference on a big scan (512 x 512 x 300, DWI + ADC), for several ``sw_batch_size``.

Measures, not tests. Each measurement runs in its own child process (:func:`benchmarks.peak_rss_mib` is the
peak resident memory of that process over its whole life): ``monai_patcher.batch_inference`` reads the two NIfTI
files, checks them, computes eADC, normalises, resizes in-plane to 256 x 256, runs the network with ``SliceInferer`` over the 300
axial slices, ``sw_batch_size`` slices per forward pass, inverts the resize/orientation back to 512 x 512 x 300
and writes the mask. A baseline child builds the same predictor (imports, network) without reading any data.

Usage::

    python -m benchmarks.bench_big_scan [--shape 512 512 300] [--sw_batch_sizes 1 8 32] [--preset tiny]
        [--workdir /tmp/big_scan] [--out benchmarks/results/big_scan/summary.json]

The network's weights are random (memory and time do not depend on them). Runtime on 2 CPU cores: ~2-4 min
with the tiny preset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import child_env, module_command, peak_rss_mib


def write_case(folder: Path, shape: tuple[int, int, int]) -> dict:
    """A synthetic DWI + ADC pair (float32, uncompressed NIfTI), written slice block by slice block."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    x, y, z = shape
    gx, gy = np.meshgrid(np.linspace(-1, 1, x, dtype=np.float32), np.linspace(-1, 1, y, dtype=np.float32), indexing="ij")
    dwi = np.zeros(shape, np.float32)
    adc = np.zeros(shape, np.float32)
    rng = np.random.default_rng(0)
    for k in range(z):
        gz = (k - (z - 1) / 2) / (z / 2)
        brain = gx**2 / 0.8 + gy**2 / 0.9 + gz**2 / 0.9 < 1.0
        lesion = (gx - 0.3) ** 2 + (gy + 0.2) ** 2 + (gz - 0.1) ** 2 < 0.02
        noise = rng.normal(0, 1, (x, y)).astype(np.float32)
        dwi[..., k] = np.where(brain, np.where(lesion, 1300.0, 600.0) + 15 * noise, 0.0)
        adc[..., k] = np.where(brain, np.where(lesion, 0.45, 0.8) + 0.03 * noise, 0.0).clip(0)
    affine = np.diag([0.45, 0.45, 0.5, 1.0])
    paths = {}
    for name, arr in (("dwi", dwi), ("adc", adc)):
        p = folder / f"big_{name}.nii"
        nib.save(nib.Nifti1Image(arr, affine), str(p))
        paths[name] = str(p)
    return {"paths": paths, "bytes_per_channel": int(dwi.nbytes), "input_bytes": int(dwi.nbytes + adc.nbytes)}


def child(args) -> None:
    """One measurement in this process; prints a JSON line."""
    import torch

    from monai_patcher.batch_inference import BatchPredictor, run_batch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    # the paper's resize, as in the recorded results (the CLI's default is now the spacing pipeline)
    predictor = BatchPredictor(None, preset=args.preset, spatial_size=256, sw_batch_size=args.sw_batch_size,
                               inplane_mode="resize")
    baseline = peak_rss_mib()
    result = {"sw_batch_size": args.sw_batch_size, "preset": args.preset, "baseline_mb": round(baseline, 1)}
    if not args.baseline_only:
        start = time.perf_counter()
        results = run_batch(args.input, args.output, predictor, overwrite=True)
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["status"] = [r.status + (f": {r.reason}" if r.reason else "") for r in results]
    result["peak_mb"] = round(peak_rss_mib(), 1)
    print(json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--sw_batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--workdir", default="/tmp/patcher_big_scan")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "big_scan" / "summary.json"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic scan and outputs in --workdir")
    # child mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--baseline_only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sw_batch_size", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    work = Path(args.workdir)
    t0 = time.perf_counter()
    case = write_case(work / "in", tuple(args.shape))
    print(f"wrote {args.shape} DWI + ADC float32 ({case['input_bytes'] / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s")

    def run(extra: list[str]) -> dict:
        cmd = module_command("bench_big_scan", "--child", "--preset", args.preset, "--input", str(work / "in"),
                             "--output", str(work / "out"), *extra)
        proc = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace",
                              env=child_env(PYTHONWARNINGS="ignore"))
        if proc.returncode != 0:
            raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    baseline = run(["--baseline_only"])
    print(f"baseline (imports + {args.preset} network, no data): {baseline['peak_mb']:.0f} MiB")
    rows = []
    mib = 2**20
    for n in args.sw_batch_sizes:
        r = run(["--sw_batch_size", str(n)])
        r["input_mb"] = round(case["input_bytes"] / mib, 1)
        r["peak_over_baseline_mb"] = round(r["peak_mb"] - baseline["peak_mb"], 1)
        r["peak_over_baseline_per_input"] = round(r["peak_over_baseline_mb"] / r["input_mb"], 2)
        rows.append(r)
        print(f"sw_batch_size={n:3d}: peak {r['peak_mb']:.0f} MiB = baseline + {r['peak_over_baseline_mb']:.0f} MiB "
              f"({r['peak_over_baseline_per_input']:.2f} x the {r['input_mb']:.0f} MiB input), {r['seconds']} s, {r['status']}")
    summary = {
        "shape": args.shape, "dtype": "float32", "channels": 2, "input_mb": round(case["input_bytes"] / mib, 1),
        "preset": args.preset, "baseline_mb": baseline["peak_mb"], "runs": rows,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "python -m benchmarks.bench_big_scan " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

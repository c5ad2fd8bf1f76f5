"""The stroke bundle's inference on the real ISLES'22 case, with its gating maps drawn next to the DWI.

Runs ``bundles/patcher_stroke/configs/inference.json`` (``python -m monai.bundle run``) on the ISLES'22 case of
``../shared/data`` with ``--save_gating true --save_prob true`` and a checkpoint, then draws, for a few axial slices
(those with the most predicted lesion, else evenly spaced through the brain), the DWI, the four experts' gating
weights (the softmax maps of the mixture-of-experts decoder, 0 to 1) and the predicted mask, all read back from the
NIfTI files the bundle wrote in the scan's own grid. The figure shows real patient data: keep it local (never
commit it).

Extra bundle overrides go after ``--``, e.g. for a checkpoint without a model record (written before records):

    python -m benchmarks.stroke_gating_figure --checkpoint runs/brats_60min/models/checkpoint_epoch=1200.pt \\
        --out runs/isles22_gating -- --network_def#name small --network_def#small_patch "[4,2,2,2]" \\
        --network_def#gate_channels "[]" --inplane_mode resize
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import ROOT

CONFIGS = ROOT / "bundles" / "patcher_stroke" / "configs"
ISLES = ROOT.parent / "shared" / "data" / "ISLES-2022-case0001" / "data"


def run_inference(checkpoint: Path, out: Path, extra: list[str], data: Path) -> float:
    """The bundle's inference on the case in ``data``; returns its wall time."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json"),
           "--bundle_root", str(CONFIGS.parent), "--input", str(data), "--ckpt_path", str(checkpoint),
           "--output_dir", str(out), "--save_gating", "true", "--save_prob", "true", "--progress", "false", *extra]
    t0 = time.perf_counter()
    with open(out / "inference.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"inference failed ({proc.returncode}); see {out / 'inference.log'}")
    return time.perf_counter() - t0


def ras(path: Path) -> np.ndarray:
    """The image's voxels in RAS order (channels last, as nibabel gives them)."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32)


def draw(dwi: np.ndarray, gating: np.ndarray, mask: np.ndarray, path: Path, title: str, n_slices: int = 3) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lesion = mask.reshape(-1, mask.shape[2]).sum(0)
    brain = (dwi > 0).reshape(-1, dwi.shape[2]).sum(0)
    if lesion.max() > 0:
        zs = sorted(np.argsort(lesion)[::-1][:n_slices].tolist())
    else:
        inside = np.nonzero(brain > 0.3 * brain.max())[0]
        zs = inside[np.linspace(0, len(inside) - 1, n_slices + 2).astype(int)[1:-1]].tolist()
    show = lambda a: np.flipud(np.asarray(a).T)  # noqa: E731  RAS voxel grid -> picture, anterior up
    fig, axes = plt.subplots(len(zs), 6, figsize=(13, 2.4 * len(zs)), squeeze=False)
    for row, z in zip(axes, zs):
        panels = [("DWI", dwi[..., z], "gray", None)]
        panels += [(f"expert {e + 1}", gating[..., z, e], "magma", (0, 1)) for e in range(gating.shape[-1])]
        panels += [(f"mask ({int(lesion[z])} voxels)", mask[..., z], "gray", (0, 1))]
        for ax, (name, img, cmap, lim) in zip(row, panels):
            ax.imshow(show(img), cmap=cmap, vmin=None if lim is None else lim[0], vmax=None if lim is None else lim[1])
            ax.set_title(f"z={z}: {name}" if name == "DWI" else name, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return zs


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for the bundle's outputs and the figure")
    p.add_argument("--data", type=Path, default=ISLES, help="the case folder (DWI and ADC NIfTI files)")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"real data not available: {args.data} does not exist")
    args.out.mkdir(parents=True, exist_ok=True)
    wall = run_inference(args.checkpoint, args.out, extra, args.data)
    dwi_file = next(args.data.glob("*_dwi.nii*"))
    dwi = ras(dwi_file)
    gating = ras(next(args.out.glob("*_gating.nii*")))  # named after the case by the bundle
    mask = ras(next(args.out.glob("*_seg.nii*")))
    if gating.ndim == 5:  # nibabel keeps a singleton time axis before the channels
        gating = gating[..., 0, :]
    zs = draw(dwi, gating, mask, args.out / "isles22_gating.png",
              args.title or f"ISLES'22 case0001, stroke bundle inference ({args.checkpoint.name}): DWI, the four "
                            "experts' gating weights, predicted mask")
    print(f"inference {wall:.1f} s wall; shapes dwi {dwi.shape} gating {gating.shape} mask {mask.shape}; "
          f"mask voxels {int(mask.sum())}; slices {zs}; figure {args.out / 'isles22_gating.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

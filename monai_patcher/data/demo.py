"""A small deterministic SYNTHETIC stroke-like dataset, so the pipeline runs on a machine with no data.

Each case: a brain-like ellipsoid (smooth texture, darker "ventricles"), DWI (b = 1000) and ADC in
1e-3 mm^2/s (as in the preprocessed ISLES'22 case under ``shared/data``; ISLES'22 as released, and most
DICOM ADC maps, are in 1e-6 mm^2/s: ``ComputeEADCd(unit="auto")`` reads either), with 1-3 ellipsoidal
lesion blobs that are bright on DWI and dark on ADC (restricted diffusion), and their mask. Volumes are 64 x 64 x 16 voxels at 2 x 2 x 4 mm (RAS affine),
so a tiny network learns something on a CPU in minutes. **Not real data**: it only exercises the code.

Command line::

    python -m monai_patcher.data.demo --out /tmp/patcher_demo [--cases 8] [--seed 0]

Layout written::

    OUT/README.txt                      says SYNTHETIC, how it was made
    OUT/datalist.json                   {"training": [...], "validation": [...], "test": [...]}
    OUT/caseNNN/dwi.nii.gz, adc.nii.gz, label.nii.gz

Datalist items: ``{"case": "case000", "dwi": "case000/dwi.nii.gz", "adc": ..., "label": ...}`` (paths
relative to OUT, as ``monai.data.load_decathlon_datalist(path, data_list_key="training")`` expects).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from .datalists import split_cases, write_datalist

__all__ = ["make_demo_case", "write_demo_dataset", "ensure_demo_dataset"]

logger = logging.getLogger(__name__)

SHAPE = (64, 64, 16)
SPACING = (2.0, 2.0, 4.0)


def _smooth_noise(rng: np.random.Generator, shape, passes: int = 2) -> np.ndarray:
    x = rng.standard_normal(shape)
    for _ in range(passes):  # cheap box blur along each axis
        for ax in range(3):
            x = (np.roll(x, 1, ax) + x + np.roll(x, -1, ax)) / 3.0
    return x / (x.std() + 1e-8)


def make_demo_case(seed: int, shape=SHAPE, spacing=SPACING) -> dict[str, np.ndarray]:
    """One synthetic case: ``{"dwi", "adc", "label"}`` float32/uint8 arrays of ``shape`` (x, y, z).

    Args:
        seed: the case's random seed (same seed, same case).
        shape: volume shape in voxels.
        spacing: voxel size in mm (used to make the head and lesions round in mm).
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij"))
    radii = np.array([50.0, 58.0, 26.0]) * rng.uniform(0.9, 1.05, 3)
    centre = rng.uniform(-3, 3, 3)
    r = np.sqrt((((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0))
    brain = r < 1.0
    texture = _smooth_noise(rng, shape)
    ventricles = np.sqrt(((grid[0] / 9) ** 2) + ((grid[1] / 16) ** 2) + ((grid[2] / 10) ** 2)) < 1.0
    adc = np.where(brain, 0.8 + 0.08 * texture, 0.0)
    adc = np.where(brain & ventricles, 2.8 + 0.1 * texture, adc)
    dwi = np.where(brain, 600 + 40 * texture, 0.0)
    dwi = np.where(brain & ventricles, 250 + 20 * texture, dwi)
    label = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        c = np.array([rng.uniform(-30, 30), rng.uniform(-35, 35), rng.uniform(-14, 14)])
        lr = rng.uniform(6, 14, 3) * np.array([1, 1, 0.8])
        blob = np.sqrt((((grid - c[:, None, None, None]) / lr[:, None, None, None]) ** 2).sum(0)) < 1.0
        label |= blob & brain & ~ventricles
    adc = np.where(label, 0.4 + 0.05 * texture, adc)
    dwi = np.where(label, 1300 + 80 * texture, dwi)
    dwi = np.where(brain, dwi + rng.normal(0, 15, shape), 0.0)
    adc = np.where(brain, np.clip(adc + rng.normal(0, 0.03, shape), 0.05, None), 0.0)
    return {"dwi": dwi.astype(np.float32), "adc": adc.astype(np.float32), "label": label.astype(np.uint8)}


def write_demo_dataset(out_dir, num_cases: int = 8, seed: int = 0, val_fraction: float = 0.25,
                       test_fraction: float = 0.125) -> Path:
    """Write the synthetic dataset and return the path of its ``datalist.json``.

    Deterministic: the same ``num_cases`` and ``seed`` give byte-identical volumes and the same split.

    Args:
        out_dir: output folder (created; existing demo files are overwritten, nothing else is touched).
        num_cases: number of cases (>= 3 so every split gets one).
        seed: master seed.
        val_fraction, test_fraction: split fractions (by case).

    Example:
        >>> from monai.data import load_decathlon_datalist
        >>> path = write_demo_dataset("/tmp/patcher_demo", num_cases=4)  # doctest: +SKIP
        >>> train = load_decathlon_datalist(path, data_list_key="training")  # doctest: +SKIP
    """
    if num_cases < 3:
        raise ValueError(f"num_cases must be >= 3 (one per split at least), got {num_cases}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    affine = np.diag(list(SPACING) + [1.0])
    affine[:3, 3] = -(np.array(SHAPE) - 1) / 2 * np.array(SPACING)
    cases = []
    for i in range(num_cases):
        name = f"case{i:03d}"
        (out / name).mkdir(exist_ok=True)
        vols = make_demo_case(seed * 1000 + i)
        item = {"case": name}
        for key, arr in vols.items():
            img = nib.Nifti1Image(arr, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            if key == "adc":
                img.header.set_xyzt_units("mm", "sec")
                img.header["descrip"] = b"SYNTHETIC ADC, 1e-3 mm^2/s"
            else:
                img.header["descrip"] = f"SYNTHETIC {key}".encode()
            path = out / name / f"{key}.nii.gz"
            nib.save(img, str(path))
            item[key] = str(path)
        cases.append(item)
    split = split_cases(cases, val_fraction, test_fraction, seed)
    datalist = write_datalist(split, out / "datalist.json", relative=True,
                              extra={"description": "SYNTHETIC stroke-like demo data (monai_patcher.data.demo)",
                                     "synthetic": True})
    (out / "README.txt").write_text(
        "SYNTHETIC DATA - NOT REAL MRI, NOT FOR ANY CLINICAL OR SCIENTIFIC CONCLUSION.\n\n"
        f"Written by monai_patcher.data.demo (seed {seed}, {num_cases} cases) to exercise the Patcher stroke\n"
        "pipeline without real data. Each case is a brain-like ellipsoid with lesion blobs that are bright on\n"
        "DWI and dark on ADC (ADC in 1e-3 mm^2/s; ISLES'22 as released is in 1e-6 mm^2/s), and the lesion mask.\n"
        f"Volumes: {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} voxels at {SPACING[0]}x{SPACING[1]}x{SPACING[2]} mm.\n"
        "datalist.json has training/validation/test lists of {case, dwi, adc, label} with paths relative to\n"
        "this folder.\n"
    )
    return datalist


def ensure_demo_dataset(out_dir, num_cases: int = 12, seed: int = 0) -> str:
    """Write the synthetic demo stroke dataset into ``out_dir`` unless it is there; return its datalist path.

    A dataset that an interrupted run left half-written, or that was written with another ``num_cases`` or ``seed``,
    is written again. The bundles' ``demo.json`` calls it, so the demo runs from a clean checkout.

    Args:
        out_dir: folder for the demo data (created if needed).
        num_cases: number of synthetic cases.
        seed: random seed of the generator.
    """
    out = Path(out_dir)
    # written last, with what was written: a half-written dataset (an interrupted run) or one written with another
    # num_cases / seed is written again
    done = out / ".complete"
    wanted = f"num_cases={int(num_cases)} seed={int(seed)}"
    if done.is_file():
        lines = done.read_text().splitlines()
        recorded = lines[0].strip() if lines else ""
        if recorded and Path(recorded).is_file() and lines[1:2] == [wanted]:
            return recorded
        if recorded:
            logger.info("%s: demo dataset written with other settings (%s); writing it with %s", out,
                        (lines[1:2] or ["unrecorded"])[0], wanted)  # fmt: skip
    path = write_demo_dataset(str(out), num_cases=num_cases, seed=seed)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(f"{path}\n{wanted}\n")
    return str(path)


def main(argv=None) -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(prog="python -m monai_patcher.data.demo", description="write the synthetic demo dataset")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(write_demo_dataset(a.out, num_cases=a.cases, seed=a.seed))


if __name__ == "__main__":
    main()

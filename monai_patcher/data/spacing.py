"""The median in-plane voxel size of a training datalist: the target spacing of ``inplane_mode: "spacing"``.

nnU-Net resamples every case to the median voxel size of its training set; the ``patcher_stroke`` bundle does so
in-plane (``Spacingd`` on the two in-plane axes, the slice axis untouched) when ``inplane_mode`` is ``"spacing"``.
This module computes that target from the files' headers (no voxel data is read), in the axes the pipeline sees
them: after ``Orientationd("RAS")``, so that a sagittal-stored or LPS scan contributes its in-plane spacings in the
right order.

Command line::

    python -m monai_patcher.data.spacing --datalist /data/ISLES-2022/datalist.json \\
        [--data_list_key training] [--key dwi] [--slice_axis 2] \\
        [--config_file bundles/patcher_stroke/configs/train.json]

prints the median (and range) and the override ``--inplane_spacing "[sx, sy]"``; with ``--config_file`` it writes
``inplane_spacing`` into that training config. ``inference.json`` needs no copy: it reads ``inplane_spacing`` from the
checkpoint's model record, which training writes; a config whose ``inplane_spacing`` is such an expression is
refused rather than overwritten with a literal that would ignore the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["ras_spacing", "inplane_spacing", "median_inplane_spacing", "write_inplane_spacing", "main"]


def _affine(path: str) -> np.ndarray:
    """The voxel-to-world (RAS) matrix of an image file or DICOM series folder, from its header only."""
    import nibabel as nib

    from .readers import dicom_series_files
    from .readers.itk import itk_error_message, read_header
    from .readers.suffixes import suffix_of

    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file or folder")
    try:
        if p.is_file() and suffix_of(p.name) in (".nii", ".nii.gz"):
            return np.asarray(nib.load(str(p)).affine[:3, :3], dtype=float)
        header = read_header(dicom_series_files(str(p))[0][0] if p.is_dir() else str(p))
    except DataError:
        raise
    except RuntimeError as e:  # SimpleITK
        raise DataError(f"{path}: cannot read the image header ({itk_error_message(e)})") from None
    except Exception as e:  # noqa: BLE001 - nibabel/pydicom errors: name the file
        raise DataError(f"{path}: cannot read the image header ({type(e).__name__}: {e})") from None
    direction = np.asarray(header.GetDirection(), dtype=float).reshape(3, 3)
    lps = direction @ np.diag(header.GetSpacing())
    return np.diag([-1.0, -1.0, 1.0]) @ lps  # LPS (ITK) -> RAS (nibabel, MONAI)


def ras_spacing(path: str | os.PathLike) -> tuple[float, float, float]:
    """The voxel size (mm) of an image along the axes of its ``Orientationd("RAS")`` version.

    Args:
        path: an image file (NIfTI, MHA, NRRD, a DICOM file) or a DICOM series folder.

    Raises:
        DataError: the file is missing or its header cannot be read.

    Example:
        >>> ras_spacing("sub-strokecase0001_ses-0001_dwi.nii.gz")  # doctest: +SKIP
        (2.0, 2.0, 2.0)
    """
    import nibabel as nib

    matrix = _affine(str(path))
    affine = np.eye(4)
    affine[:3, :3] = matrix
    ornt = nib.orientations.io_orientation(affine)  # row j: the RAS axis voxel axis j goes to (as Orientationd)
    out = [0.0, 0.0, 0.0]
    for j, (axis, _) in enumerate(ornt):
        out[int(axis)] = float(np.linalg.norm(matrix[:, j]))
    return out[0], out[1], out[2]


def inplane_spacing(path: str | os.PathLike, slice_axis: int = 2) -> tuple[float, float]:
    """The two in-plane voxel sizes (mm) of an image, RAS axis order, without the ``slice_axis`` one."""
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}")
    spacing = list(ras_spacing(path))
    del spacing[slice_axis]
    return spacing[0], spacing[1]


def median_inplane_spacing(
    items: Sequence[Mapping], key: str = "dwi", slice_axis: int = 2
) -> tuple[tuple[float, float], np.ndarray]:
    """The median in-plane voxel size of ``items[key]`` (per axis, as nnU-Net), and every case's.

    Args:
        items: datalist items (``{"dwi": path, ...}``).
        key: the image whose grid the pipeline resamples (the DWI: the ADC and label share its grid).
        slice_axis: the slice axis after RAS orientation (2 = axial), left out.

    Returns:
        ``((sx, sy), spacings)``: the medians, rounded to 0.1 micrometre, and an ``N x 2`` array of the cases' values.

    Raises:
        DataError: no item, an item without ``key``, or an unreadable header (the message names the file).
    """
    if not items:
        raise DataError("the datalist has no items: nothing to take a median of")
    rows = []
    for i, item in enumerate(items):
        if key not in item:
            raise DataError(f"datalist item {i} has no {key!r} (keys: {sorted(item)}); choose the image with --key")
        rows.append(inplane_spacing(item[key], slice_axis))
    spacings = np.asarray(rows, dtype=float)
    median = np.median(spacings, axis=0)
    return (round(float(median[0]), 4), round(float(median[1]), 4)), spacings


def _writable_config(config_file: str | os.PathLike) -> dict:
    """The JSON object of a bundle config whose ``inplane_spacing`` may be set.

    Raises:
        DataError: the config is missing, not JSON, not a JSON object, or its ``inplane_spacing`` is an expression
            (``inference.json`` reads it from the checkpoint's model record).
    """
    path = Path(config_file)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read this bundle config ({e})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: not a bundle config (a JSON object)")
    current = config.get("inplane_spacing")
    if isinstance(current, str) and current.startswith("$"):
        raise DataError(f"{path}: its inplane_spacing is computed ({current}), e.g. read from the checkpoint's model "
                        "record: write the spacing into train.json only, the checkpoints it trains carry it")
    return config


def write_inplane_spacing(config_file: str | os.PathLike, spacing: Sequence[float]) -> None:
    """Set ``"inplane_spacing"`` in a bundle config (JSON, written back with the bundle's 4-space indent, atomically).

    Raises:
        DataError: the config is missing, not JSON, not a JSON object, or its ``inplane_spacing`` is an expression
            (``inference.json``, which reads it from the checkpoint's model record).
    """
    from ..io.atomic import atomic_write

    path = Path(config_file)
    config = _writable_config(path)
    config["inplane_spacing"] = [float(v) for v in spacing]
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=4) + "\n"))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 done, 2 bad input)."""
    from .datalists import load_datalist

    ap = argparse.ArgumentParser(prog="python -m monai_patcher.data.spacing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--datalist", required=True, help="datalist JSON (MONAI decathlon format)")
    ap.add_argument("--data_list_key", default="training", help="the datalist's section (default: training)")
    ap.add_argument("--base_dir", default=None, help="folder the datalist's paths are relative to (default: its own)")
    ap.add_argument("--key", default="dwi", help="the image key whose grid is resampled (default: dwi)")
    ap.add_argument("--slice_axis", type=int, default=2, help="slice axis after RAS orientation (default: 2, axial)")
    ap.add_argument("--config_file", action="append", default=[],
                    help="training config to write inplane_spacing into (train.json; inference.json reads it from "
                         "the checkpoint's model record)")
    args = ap.parse_args(argv)
    try:
        try:
            items = load_datalist(args.datalist, args.data_list_key, args.base_dir, is_segmentation=False)
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"--datalist {args.datalist}: cannot read section {args.data_list_key!r} "
                            f"({type(e).__name__}: {e})") from None
        for config in args.config_file:  # all checked before any is written
            _writable_config(config)
        median, spacings = median_inplane_spacing(items, args.key, args.slice_axis)
        for config in args.config_file:
            write_inplane_spacing(config, median)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lo, hi = spacings.min(axis=0), spacings.max(axis=0)
    print(f"{len(spacings)} cases of {args.datalist} [{args.data_list_key}], key {args.key!r}: in-plane voxel size "
          f"(RAS, slice axis {args.slice_axis} left out) median {list(median)} mm, "
          f"range [{lo[0]:g}, {hi[0]:g}] x [{lo[1]:g}, {hi[1]:g}] mm")
    for config in args.config_file:
        print(f"wrote inplane_spacing {list(median)} into {config}")
    print(f"override: --inplane_spacing \"{json.dumps(list(median))}\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Datalist builders: dataset folders -> MONAI datalist JSON (``load_decathlon_datalist`` format).

The cases are found by :mod:`monai_patcher.data.cases` (ISLES'22 BIDS, one folder per case, Kvasir-SEG style
folders); this module splits them and writes the JSON.

A datalist is ``{"training": [...], "validation": [...], "test": [...]}``, each item a dict of file
paths (relative to the JSON file's folder when ``relative=True``, so the JSON can move with the data)
plus ``"case"``. Splits are always by case (never by slice), reproducible from ``seed``.

Symbolic links are kept as they are: case folders linked into a subset folder are searched (symlink loops
and folders reached twice are visited once), and a linked file is written under its link's path, not its
target's (a DVC / git-annex / datalad blob has no file name, so no extension for ``LoadImage``).

Read a datalist with :func:`load_datalist` (MONAI's ``load_decathlon_datalist``, keeping ``"case"`` an id):
``load_decathlon_datalist`` makes any string value that exists as a path below the JSON's folder absolute,
``"case"`` included, e.g. when the JSON sits in the dataset root next to the case folders.

CLI::

    python -m monai_patcher.data.datalists isles22 /data/ISLES-2022 --out datalist.json --val 0.2 --test 0.1
    python -m monai_patcher.data.datalists kvasir /data/Kvasir-SEG --out kvasir.json
    python -m monai_patcher.data.datalists folders /data/BraTS --out brats.json \\
        --pattern dwi=Flair*.nii.gz --pattern adc=T1c*.nii.gz --pattern label=OTMultiClass*.nii.gz
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import DataError
from .cases import find_case_folders, find_image_mask_pairs, find_isles22_cases

__all__ = [
    "split_cases",
    "write_datalist",
    "build_isles22_datalist",
    "build_case_folder_datalist",
    "build_kvasir_datalist",
    "load_datalist",
]


def split_cases(cases: Sequence, val_fraction: float, test_fraction: float, seed: int = 0) -> dict[str, list]:
    """Shuffle ``cases`` with ``seed`` and split them into training/validation/test.

    Sizes are ``round(n * fraction)`` for validation and test (at least 1 each when the fraction is > 0
    and there are enough cases), the rest for training. The same cases and seed always give the same split,
    whatever the input order.

    Args:
        cases: case items (dicts with a ``"case"`` key, or strings).
        val_fraction: fraction of cases for validation, in [0, 1).
        test_fraction: fraction of cases for test, in [0, 1).
        seed: shuffling seed.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val, test and val + test < 1, got {val_fraction}, {test_fraction}")
    key = (lambda c: str(c["case"])) if cases and isinstance(cases[0], Mapping) else str
    items = sorted(cases, key=key)
    random.Random(seed).shuffle(items)
    n = len(items)

    def size(frac: float) -> int:
        return 0 if frac <= 0 else min(max(1, round(n * frac)), max(n - 1, 0))

    n_test = size(test_fraction)
    n_val = min(size(val_fraction), max(n - n_test - 1, 0))
    return {
        "training": items[n_val + n_test:],
        "validation": items[:n_val],
        "test": items[n_val:n_val + n_test],
    }


def _relativize(split: dict, base: str, relative: bool) -> dict:
    out = {}
    for name, items in split.items():
        out[name] = []
        for item in items:
            new = {}
            for k, v in item.items():
                if k != "case" and isinstance(v, str):
                    p = os.path.abspath(v)  # not resolve(): a symlink keeps its own name and folder
                    v = os.path.relpath(p, base) if relative else p
                new[k] = v
            out[name].append(new)
    return out


def write_datalist(split: dict, out_json, relative: bool = True, extra: dict | None = None) -> Path:
    """Write a datalist JSON (paths relative to its folder when ``relative``). Returns the path.

    Args:
        split: ``{"training": [...], "validation": [...], "test": [...]}`` with absolute or cwd-relative paths.
        out_json: output file (its folder is created).
        relative: store paths relative to the JSON's folder (default) or absolute. Paths are normalised
            without resolving symbolic links (``os.path.abspath``), as ``load_decathlon_datalist`` joins them.
        extra: extra top-level entries (e.g. ``"description"``).
    """
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    data = dict(extra or {})
    data.update(_relativize(split, os.path.abspath(out_json.parent), relative))
    out_json.write_text(json.dumps(data, indent=2) + "\n")
    return out_json


def _written(split: dict, out_json, relative: bool, description: str) -> dict:
    """``split``, first written to ``out_json`` (with ``description``) when that is given."""
    if out_json is not None:
        write_datalist(split, out_json, relative, {"description": description})
    return split


def build_isles22_datalist(
    root,
    out_json=None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    seed: int = 0,
    require_label: bool = True,
    relative: bool = True,
) -> dict:
    """ISLES'22 BIDS folder -> datalist with ``dwi``, ``adc``, ``label`` per case, split by case.

    Layout: ``root/sub-strokecaseNNNN/ses-0001/dwi/*_dwi.nii.gz`` and ``*_adc.nii.gz``; masks in
    ``root/derivatives/**/sub-strokecaseNNNN/**/*_msk.nii.gz``. Also accepted: all files of a case in one
    flat folder (as in the single-case sample).

    Args:
        root: the BIDS root.
        out_json: write the datalist there (optional).
        val_fraction, test_fraction, seed: see :func:`split_cases`.
        require_label: raise if a case has no mask (default). False: cases without mask get no ``label``
            key (inference-only datalists).
        relative: store paths relative to the JSON's folder.

    Returns:
        the datalist dict (with absolute paths).

    Raises:
        DataError: no case found, a case without DWI/ADC (or mask when required), several candidates.
    """
    split = split_cases(find_isles22_cases(root, require_label), val_fraction, test_fraction, seed)
    return _written(split, out_json, relative, f"ISLES'22 from {os.path.abspath(root)}, seed {seed}")


def build_case_folder_datalist(
    root,
    patterns: Mapping[str, str],
    out_json=None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
    seed: int = 0,
    optional: Sequence[str] = (),
    relative: bool = True,
) -> dict:
    """"One folder per case" layout -> datalist, split by case.

    Every folder below ``root`` (symlinked folders included) that holds a file matching each (non-optional)
    pattern is a case; the case name is the folder's path relative to ``root`` (through the links). E.g. the BraTS examples::

        build_case_folder_datalist("BraTS2015", {"dwi": "Flair*.nii.gz", "adc": "T1c*.nii.gz",
                                                 "label": "OTMultiClass*.nii.gz"})

    Args:
        root: folder holding the case folders (at any depth).
        patterns: ``{key: glob on the file name}``; exactly one file per case must match each.
        out_json: write the datalist there (optional).
        val_fraction, test_fraction, seed: see :func:`split_cases`.
        optional: keys that may be missing in a case.
        relative: store paths relative to the JSON's folder.
    """
    split = split_cases(find_case_folders(root, patterns, optional), val_fraction, test_fraction, seed)
    return _written(split, out_json, relative, f"case folders of {os.path.abspath(root)}, seed {seed}")


def build_kvasir_datalist(
    root,
    out_json=None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    relative: bool = True,
) -> dict:
    """Kvasir-SEG style folders -> datalist with ``image`` and ``label`` (the mask) per item.

    Two layouts: ``root/images/`` + ``root/masks/`` (matching file names): split 8:1:1 (by default) with
    ``seed``; or already split ``root/{train,val[,test]}/{images,masks}/``: that split is kept
    (``train`` -> training, ``val``/``validation`` -> validation, ``test`` -> test).

    Args:
        root: dataset folder.
        out_json: write the datalist there (optional).
        val_fraction, test_fraction, seed: for the unsplit layout (see :func:`split_cases`).
        relative: store paths relative to the JSON's folder.
    """
    root = Path(os.path.abspath(root))  # absolute (lexically: links are kept)
    if not root.is_dir():
        raise DataError.for_file(root, "folder does not exist")
    if (root / "images").is_dir():
        split = split_cases(find_image_mask_pairs(root / "images", root / "masks"), val_fraction, test_fraction, seed)
    else:
        names = {"train": "training", "training": "training", "val": "validation", "validation": "validation",
                 "test": "test"}
        split = {"training": [], "validation": [], "test": []}
        found = False
        for sub, key in names.items():
            if (root / sub / "images").is_dir():
                split[key] += find_image_mask_pairs(root / sub / "images", root / sub / "masks")
                found = True
        if not found:
            raise DataError.for_file(root, "neither images/ + masks/ nor train/ val/ sub-folders with them")
    return _written(split, out_json, relative, f"Kvasir-SEG style folders {root}")


def load_datalist(
    data_list_file_path,
    data_list_key: str = "training",
    base_dir=None,
    is_segmentation: bool = True,
    id_keys: Sequence[str] = ("case",),
) -> list[dict]:
    """``monai.data.load_decathlon_datalist``, with the ``id_keys`` values kept as written (ids, not paths).

    MONAI 1.6.1 joins ``image`` (and ``label`` when ``is_segmentation``) with ``base_dir`` always, and every
    other string (or list of strings) when the joined path exists. So a case id that names a file or folder
    next to the JSON (a case-folder or ISLES'22 datalist saved in the dataset root) comes back as an absolute
    path. This function returns the same items with ``id_keys`` restored from the JSON.

    Args:
        data_list_file_path: the datalist JSON.
        data_list_key: ``"training"``, ``"validation"``, ``"test"``...
        base_dir: folder the paths are relative to (default: the JSON's folder).
        is_segmentation: as in ``load_decathlon_datalist``.
        id_keys: keys that are ids, never paths.

    Raises:
        FileNotFoundError: no such file, with the bundle options that set it.

    Example (bundle config)::

        "train_datalist": "$monai_patcher.data.datalists.load_datalist(@datalist, 'training', @dataset_dir)"
    """
    from monai.data import load_decathlon_datalist

    if not Path(data_list_file_path).is_file():
        raise FileNotFoundError(
            f"{data_list_file_path}: datalist file does not exist; point a bundle's --dataset_dir at the folder "
            "holding datalist.json (or --datalist at the file), or write one with python -m "
            "monai_patcher.data.datalists."
        )
    items = load_decathlon_datalist(data_list_file_path, is_segmentation, data_list_key, base_dir)
    raw = json.loads(Path(data_list_file_path).read_text())[data_list_key]
    for item, written in zip(items, raw):
        if isinstance(written, Mapping):
            item.update({k: written[k] for k in id_keys if k in written})
    return items


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m monai_patcher.data.datalists", description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["isles22", "kvasir", "folders"])
    ap.add_argument("root")
    ap.add_argument("--out", required=True, help="datalist JSON to write")
    ap.add_argument("--val", type=float, default=None, help="validation fraction")
    ap.add_argument("--test", type=float, default=None, help="test fraction")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--absolute", action="store_true", help="store absolute paths")
    ap.add_argument("--pattern", action="append", default=[], help="folders: KEY=GLOB (repeat)")
    ap.add_argument("--no-label", action="store_true", help="isles22: allow cases without mask")
    a = ap.parse_args(argv)
    common = {"out_json": a.out, "seed": a.seed, "relative": not a.absolute}
    fr = {k: v for k, v in (("val_fraction", a.val), ("test_fraction", a.test)) if v is not None}
    if a.kind == "isles22":
        split = build_isles22_datalist(a.root, require_label=not a.no_label, **fr, **common)
    elif a.kind == "kvasir":
        split = build_kvasir_datalist(a.root, **fr, **common)
    else:
        if not a.pattern:
            ap.error("folders needs --pattern KEY=GLOB")
        pats = dict(p.split("=", 1) for p in a.pattern)
        split = build_case_folder_datalist(a.root, pats, **fr, **common)
    print(f"{a.out}: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()))


if __name__ == "__main__":
    main()

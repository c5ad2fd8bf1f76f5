"""Time ``SimpleITKReader`` on real NIfTI files against a baseline version of it, NibabelReader and plain SimpleITK.

The baseline is ``monai_patcher/data/readers.py`` at a git revision (``--baseline``), loaded next to the current
module in the same process. Each round times every reader once per file, in an order rotated from round to round
(the machine is shared and noisy); the table gives the median and the minimum over the rounds. Before timing, the
current reader's array and affine are checked against the baseline's (NaN compared equal).

    python -m benchmarks.bench_readers --rounds 9
    python -m benchmarks.bench_readers --baseline 612fd12 --files /path/a.nii.gz /path/b.nii.gz

The default files are the real BraTS FLAIR and the ISLES'22 DWI and ADC from ``../shared/data`` (or
``$MONAI_PATCHER_DATA``); nothing is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import NibabelReader

import monai_patcher.data  # noqa: F401  (the package the baseline module is loaded into)
from monai_patcher.data import SimpleITKReader

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MONAI_PATCHER_DATA", REPO.parent / "shared" / "data"))
DEFAULT_FILES = [
    "BraTS2015-DeepMedic-examples/train/brats_2013_pat0005_1/Flair_subtrMeanDivStd.nii.gz",
    "ISLES-2022-case0001/data/sub-strokecase0001_ses-0001_dwi.nii.gz",
    "ISLES-2022-case0001/data/sub-strokecase0001_ses-0001_adc.nii.gz",
]


def load_baseline(rev: str):
    """``monai_patcher.data.readers`` as it was at git revision ``rev``, as module ``monai_patcher.data._bench_base``."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:monai_patcher/data/readers.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    name = "monai_patcher.data._bench_base"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "monai_patcher.data"
    module.__file__ = f"<{rev}:monai_patcher/data/readers.py>"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="612fd12", help="git revision of readers.py to compare with")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (each reader once per file per round)")
    parser.add_argument("--files", nargs="*", help="NIfTI files (default: BraTS FLAIR, ISLES'22 DWI and ADC)")
    args = parser.parse_args(argv)
    files = [Path(f) for f in args.files] if args.files else [DATA / f for f in DEFAULT_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"missing files (set MONAI_PATCHER_DATA?): {missing}")

    base = load_baseline(args.baseline)
    old, new, nib_reader = base.SimpleITKReader(), SimpleITKReader(), NibabelReader()
    readers = {
        f"SimpleITKReader @{args.baseline}": lambda p: old.get_data(old.read(p)),
        "SimpleITKReader (current)": lambda p: new.get_data(new.read(p)),
        "NibabelReader": lambda p: nib_reader.get_data(nib_reader.read(p)),
        "plain SimpleITK": lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(p))),
    }
    for f in files:  # same result before timing (and a warm-up of every reader)
        (a0, m0), (a1, m1) = readers[f"SimpleITKReader @{args.baseline}"](f), readers["SimpleITKReader (current)"](f)
        assert a0.shape == a1.shape and a0.dtype == a1.dtype, (f, a0.shape, a1.shape, a0.dtype, a1.dtype)
        assert np.array_equal(a0, a1, equal_nan=True), f
        assert np.array_equal(m0["affine"], m1["affine"]), f
        readers["NibabelReader"](f), readers["plain SimpleITK"](f)

    times = {(f, r): [] for f in files for r in readers}
    names = list(readers)
    for k in range(args.rounds):
        order = names[k % len(names):] + names[: k % len(names)]  # rotate who goes first
        for f in files:
            for r in order:
                t0 = time.perf_counter()
                readers[r](f)
                times[f, r].append(time.perf_counter() - t0)

    print(f"{args.rounds} rounds, median (min) seconds per load; python {sys.version.split()[0]}, "
          f"SimpleITK {sitk.Version.VersionString()}, {os.cpu_count()} CPUs")  # fmt: skip
    width = max(len(r) for r in names)
    for f in files:
        print(f"\n{f.name}")
        for r in names:
            t = np.asarray(times[f, r])
            print(f"  {r:<{width}}  {np.median(t):7.3f}  ({t.min():.3f})")


if __name__ == "__main__":
    main()

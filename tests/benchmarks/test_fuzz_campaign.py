"""The bounded, seeded version of ``benchmarks/fuzz_readers.py``: header-field and byte mutations of NIfTI, MetaImage/
NRRD, DICOM (files and series) and JPEG/PNG, each case in a forked child under a memory cap and a timeout.

Zero crashes, hangs, memory failures, unclear errors and silently accepted garbage is the bar: every case is refused
with a ``DataError`` naming the file, read identically to its base, or read exactly as an independent reader reads
the mutated file. The benchmark runs the same campaign with over 1,000 cases (counts in docs/reliability.md).
"""

from __future__ import annotations

import json
import subprocess

from benchmarks import child_env, module_command

CASES, SEED = 48, 3


def test_bounded_fuzz_campaign_has_no_crash_hang_or_silent_garbage(tmp_path):
    proc = subprocess.run(
        module_command("fuzz_readers", "--cases", str(CASES), "--seed", str(SEED), "--small", "--timeout", "60",
                       "--out", str(tmp_path)),
        env=child_env(PYTHONWARNINGS="ignore"), capture_output=True, encoding="utf-8", errors="replace", timeout=900,
    )  # fmt: skip
    assert (tmp_path / "summary.json").is_file(), proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cases"] == CASES and sum(summary["counts"].values()) == CASES
    assert summary["failures"] == 0, json.dumps(summary["findings"], indent=1)[:6000]
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the four families were all exercised, and the mutations are not all harmless
    assert set(summary["by_family"]) == {"nifti", "metaimage", "dicom", "image"}
    for family, counts in summary["by_family"].items():
        assert counts["clean_error"] > 0, (family, counts)

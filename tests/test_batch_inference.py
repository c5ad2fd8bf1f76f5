"""Batch inference that survives bad scans (monai_patcher.batch_inference).

A folder with good cases in the three accepted layouts (2-channel NIfTI, ``_dwi``/``_adc`` pair, case folder)
and bad ones (truncated, random bytes, zero bytes, all-zero, one channel, three channels, a DWI without ADC,
NaN voxels): every good case gets a mask in its own grid, every bad one is reported with its file and reason,
the exit status is 1, and existing outputs are kept unless ``--overwrite``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_patcher.batch_inference import BatchPredictor, main, run_batch
from monai_patcher.data.cases import find_cases
from monai_patcher.io import CheckpointError, UnsafeCheckpointError
from monai_patcher.data.demo import make_demo_case

SHAPE = (40, 36, 6)
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, 1.5, 0, -20.0], [0, 0, 4.0, 5.0], [0, 0, 0, 1]])  # LAS, not RAS
FAST = ["--preset", "tiny", "--spatial_size", "64", "--sw_batch_size", "4"]

GOOD = {"good_2ch": "good_2ch.nii.gz", "good_pair": "good_pair_dwi.nii.gz", "good_folder": "good_folder"}
BAD = {
    "truncated": "truncated",
    "random_bytes": "Cannot work out file type",
    "zero_bytes": "Empty file",
    "all_zero": "[DWI channel] (key 'dwi'): channel 0 is empty (every voxel is 0)",
    "one_channel": "expected a 2-channel volume",
    "three_channels": "expected a 2-channel volume",
    "lonely": "no ADC file",
    "nan_adc": "nan_adc_adc.nii.gz (key 'adc'): contains 1 NaN",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 OpenMP threads make small forward passes ~100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _save(path: Path, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))


def _make_input(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    c = make_demo_case(0, shape=SHAPE, spacing=(1.5, 1.5, 4.0))
    two = np.stack([c["dwi"], c["adc"]], axis=-1)
    _save(folder / "good_2ch.nii.gz", two)
    _save(folder / "good_pair_dwi.nii.gz", c["dwi"])
    _save(folder / "good_pair_adc.nii.gz", c["adc"])
    _save(folder / "good_pair_msk.nii.gz", c["label"])  # a label next to the scans: ignored
    (folder / "good_folder").mkdir()
    _save(folder / "good_folder" / "dwi.nii.gz", c["dwi"])
    _save(folder / "good_folder" / "adc.nii.gz", c["adc"])
    # bad ones
    data = (folder / "good_2ch.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (folder / "random_bytes.nii").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "zero_bytes.nii.gz").write_bytes(b"")
    _save(folder / "all_zero.nii.gz", np.zeros_like(two))
    _save(folder / "one_channel.nii.gz", c["dwi"])
    _save(folder / "three_channels.nii.gz", np.stack([c["dwi"], c["adc"], c["dwi"]], axis=-1))
    _save(folder / "lonely_dwi.nii.gz", c["dwi"])
    nan_adc = c["adc"].copy()
    nan_adc[10, 10, 2] = np.nan
    _save(folder / "nan_adc_dwi.nii.gz", c["dwi"])
    _save(folder / "nan_adc_adc.nii.gz", nan_adc)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    inp = _make_input(root / "in")
    torch.manual_seed(0)
    from monai_patcher.networks import patcher_preset

    ckpt = root / "model.pt"
    torch.save({"model": patcher_preset("tiny", in_channels=2, out_channels=1).state_dict()}, ckpt)
    return root, inp, ckpt


@pytest.fixture(scope="module")
def first_run(setup):
    """The CLI in a fresh interpreter: its exit status is the real one."""
    root, inp, ckpt = setup
    out = root / "out"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "monai_patcher.batch_inference", "--input", str(inp), "--output", str(out),
         "--checkpoint", str(ckpt), *FAST],
        env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=1800,  # generous: shared machine
    )
    return proc, out


class _DWILogitsKnown(torch.nn.Module):
    """A deterministic stand-in for the network: logits ``SLOPE * (z - OFFSET)`` of the z-scored DWI channel
    (channel 1 of the preprocessed image, eADC being channel 0), i.e. "what is bright in the DWI is lesion"."""

    SLOPE, OFFSET = 3.0, 1.5  # not saturated near the lesion border (probabilities between 0.05 and 0.95 there)

    def forward(self, x):
        return self.SLOPE * (x[:, 1:2] - self.OFFSET)


def _zscore_nonzero(a: np.ndarray) -> np.ndarray:
    """``NormalizeIntensityd(nonzero=True)`` written out: zero-mean, unit (population) variance over the non-zero
    voxels, zeros kept."""
    out = np.zeros(a.shape, dtype=np.float64)
    v = a[a != 0].astype(np.float64)
    out[a != 0] = (v - v.mean()) / v.std()
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_mask_and_probability_map_content_with_a_known_network(tmp_path):
    """What is written, not only that something is: with a stand-in network whose logits are known, the mask
    finds the demo lesion and the probability map is the sigmoid of those logits, on the scan's own (LAS) grid.

    Two cases, one predictor (``spatial_size`` 64, ``inplane_mode="resize"``, the paper's; spacing mode:
    ``test_spacing_mode_at_the_scans_spacing_is_exact``): ``square`` is 64 x 64 in-plane, so the in-plane resize is the
    identity and the whole way there and back (RAS orientation, normalisation, slice inference, inversion) must give
    ``sigmoid(SLOPE * (z(dwi) - OFFSET))`` voxel for voxel (measured max |diff| 1.7e-7); ``rect`` (40 x 36, the
    file's usual case) is resized to 64 x 64 and back, which smooths the map at the lesion border only (measured
    mean |diff| 0.003, max 0.44 at border voxels).

    The demo lesions are DWI-bright (lesion z >= 2.2, other tissue z <= 1.7 in the 8 demo cases measured), so this
    network segments them perfectly on the scan grid: Dice measured 1.0 for both cases. The bound 0.95 sits well above
    what a geometry error gives here (rect / square: a one-voxel shift 0.88 / 0.86; a flip of the first, left-right,
    axis 0.80 / 0.13; of the second 0.04 / 0.74; square transposed 0.13).
    """
    inp = tmp_path / "in"
    inp.mkdir()
    cases = {}
    for name, shape in [("rect", SHAPE), ("square", (64, 64, 6))]:
        c = cases[name] = make_demo_case(0, shape=shape, spacing=(1.5, 1.5, 4.0))
        assert c["label"].any()
        _save(inp / f"{name}_dwi.nii.gz", c["dwi"])
        _save(inp / f"{name}_adc.nii.gz", c["adc"])
    net = _DWILogitsKnown()
    predictor = BatchPredictor(None, spatial_size=64, sw_batch_size=6, network=net, inplane_mode="resize")
    results = run_batch(inp, tmp_path / "out", predictor, save_prob=True)
    assert [(r.case, r.status) for r in results] == [("rect", "ok"), ("square", "ok")], results
    for name in ("square", "rect"):  # the exact comparison first
        c = cases[name]
        seg_img = nib.load(str(tmp_path / "out" / f"{name}_seg.nii.gz"))
        prob_img = nib.load(str(tmp_path / "out" / f"{name}_prob.nii.gz"))
        seg, prob = np.asarray(seg_img.dataobj), np.asarray(prob_img.dataobj)
        np.testing.assert_allclose(prob_img.affine, AFFINE, atol=1e-4)
        assert prob.shape == seg.shape == c["dwi"].shape and prob.dtype == np.float32
        assert prob.min() >= 0.0 and prob.max() <= 1.0, (name, prob.min(), prob.max())
        np.testing.assert_array_equal(seg, (prob >= 0.5).astype(np.uint8))  # the mask is the thresholded map
        d = _dice(seg > 0, c["label"] > 0)
        assert d > 0.95, (name, d)
        expected = 1.0 / (1.0 + np.exp(-net.SLOPE * (_zscore_nonzero(c["dwi"]) - net.OFFSET)))
        if name == "square":
            assert ((expected > 0.05) & (expected < 0.95)).sum() > 100  # not a comparison of 0s and 1s only
            np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-4)
        else:
            assert np.abs(prob - expected).mean() < 0.006, np.abs(prob - expected).mean()  # about 2x measured


def test_spacing_mode_at_the_scans_spacing_is_exact(tmp_path):
    """``inplane_mode="spacing"`` (the default) at the scans' own in-plane voxel size (1.5 mm): ``Spacingd`` is the
    identity, the 40 x 36 and 64 x 64 slices are padded into 80 x 80 windows (the padding and the empty slices are
    answered once by ``SkipEmptySliceInferer``), and both cases come back as the known network's map voxel for voxel;
    at 3 mm the network sees half the pixels and the mask still finds the lesion on the scan's grid."""
    inp = tmp_path / "in"
    inp.mkdir()
    cases = {}
    for name, shape in [("rect", SHAPE), ("square", (64, 64, 6))]:
        c = cases[name] = make_demo_case(0, shape=shape, spacing=(1.5, 1.5, 4.0))
        _save(inp / f"{name}_dwi.nii.gz", c["dwi"])
        _save(inp / f"{name}_adc.nii.gz", c["adc"])
    net = _DWILogitsKnown()
    for spacing, out in [((1.5, 1.5), tmp_path / "at_1.5"), ((3.0, 3.0), tmp_path / "at_3")]:
        predictor = BatchPredictor(None, spatial_size=80, sw_batch_size=6, network=net, inplane_spacing=spacing)
        assert [r.status for r in run_batch(inp, out, predictor, save_prob=True)] == ["ok", "ok"]
        for name, c in cases.items():
            prob_img = nib.load(str(out / f"{name}_prob.nii.gz"))
            prob = np.asarray(prob_img.dataobj)
            assert prob.shape == c["dwi"].shape
            np.testing.assert_allclose(prob_img.affine, AFFINE, atol=1e-4)
            if spacing == (1.5, 1.5):
                expected = 1.0 / (1.0 + np.exp(-net.SLOPE * (_zscore_nonzero(c["dwi"]) - net.OFFSET)))
                np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-4)
            else:
                assert _dice(prob >= 0.5, c["label"] > 0) > 0.8, (name, _dice(prob >= 0.5, c["label"] > 0))


def test_find_cases_layouts(setup):
    _, inp, _ = setup
    cases = {c.name: c for c in find_cases(inp)}
    assert set(cases) == set(GOOD) | set(BAD)
    assert cases["good_pair"].dwi.endswith("good_pair_dwi.nii.gz") and cases["good_pair"].adc.endswith("_adc.nii.gz")
    assert cases["good_folder"].dwi.endswith("dwi.nii.gz") and cases["good_folder"].adc.endswith("adc.nii.gz")
    assert cases["good_2ch"].two_channel and cases["lonely"].problem


def test_every_good_scan_gets_its_mask_in_its_own_grid(first_run, setup):
    proc, out = first_run
    _, inp, _ = setup
    for name in GOOD:
        seg = out / f"{name}_seg.nii.gz"
        assert seg.is_file(), f"{name}: no mask\n{proc.stderr[-3000:]}"
        img = nib.load(str(seg))
        assert img.shape == SHAPE and img.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.affine, AFFINE, atol=1e-4)
        assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1}
    # the three layouts hold the same scan: the same mask
    masks = [np.asarray(nib.load(str(out / f"{n}_seg.nii.gz")).dataobj) for n in GOOD]
    assert all(np.array_equal(masks[0], m) for m in masks[1:])


def test_every_bad_scan_is_reported_with_file_and_reason(first_run):
    proc, out = first_run
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": len(GOOD), "failed": len(BAD), "skipped": 0}
    by_case = {r["case"]: r for r in summary["cases"]}
    for name, reason in BAD.items():
        r = by_case[name]
        assert r["status"] == "failed" and not (out / f"{name}_seg.nii.gz").exists()
        assert reason in r["reason"], (name, r["reason"])
        assert Path(r["file"]).name.startswith(name) and str(Path(r["file"]).parent) in r["reason"], r
        assert f"FAILED {r['file']}" in proc.stderr
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {row["case"]: row["status"] for row in rows} == {r["case"]: r["status"] for r in summary["cases"]}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def _subset(inp: Path, dst: Path, names) -> Path:
    dst.mkdir()
    for n in names:
        (dst / n).write_bytes((inp / n).read_bytes())
    return dst


def test_existing_outputs_are_kept_unless_overwrite(setup, tmp_path):
    root, inp, ckpt = setup
    small = _subset(inp, tmp_path / "in", ["good_2ch.nii.gz", "truncated.nii.gz"])
    out = tmp_path / "out"
    out.mkdir()
    seg = out / "good_2ch_seg.nii.gz"
    seg.write_bytes(b"a result from an earlier run")
    rc = main(["--input", str(small), "--output", str(out), "--checkpoint", str(ckpt), *FAST])
    assert rc == 1  # the bad scan still fails
    statuses = {r["case"]: r["status"] for r in json.loads((out / "summary.json").read_text())["cases"]}
    assert statuses == {"good_2ch": "skipped", "truncated": "failed"}
    assert seg.read_bytes() == b"a result from an earlier run"
    rc = main(["--input", str(small), "--output", str(out), "--checkpoint", str(ckpt), "--overwrite", *FAST])
    assert rc == 1
    assert nib.load(str(seg)).shape == SHAPE


def test_temp_files_of_an_interrupted_run_are_removed(setup, tmp_path):
    """A real ``kill -9`` while a mask is written leaves ``.<case>_seg.nii.gz.<pid>-<host>.<random>.tmp.nii.gz``;
    the next run removes it (the masks already written stay, as does every other file)."""
    root, inp, ckpt = setup
    small = _subset(inp, tmp_path / "in", ["good_2ch.nii.gz"])
    out = tmp_path / "out"
    code = (
        "import os, signal, sys; from pathlib import Path; from monai_patcher.batch_inference import _atomic_write\n"
        "def write(tmp):\n    Path(tmp).write_bytes(b'half a mask'); os.kill(os.getpid(), signal.SIGKILL)\n"
        f"_atomic_write(Path({str(out / 'good_2ch_seg.nii.gz')!r}), write)\n"
    )
    # the imports of the child alone take ~30 s on a loaded 2-core machine: a generous margin (only a hang hits it)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=900)
    assert proc.returncode == -9
    (stray,) = list(out.iterdir())
    assert stray.name.startswith(".good_2ch_seg.nii.gz.") and stray.name.endswith(".tmp.nii.gz")
    (out / "notes.tmp.nii.gz").write_bytes(b"not ours")
    assert main(["--input", str(small), "--output", str(out), "--checkpoint", str(ckpt), *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["good_2ch_seg.nii.gz", "notes.tmp.nii.gz", "summary.csv",
                                                     "summary.json"]


def test_exit_status_0_when_all_good_and_2_when_it_cannot_start(setup, tmp_path):
    root, inp, ckpt = setup
    good = _subset(inp, tmp_path / "good", ["good_pair_dwi.nii.gz", "good_pair_adc.nii.gz"])
    assert main(["--input", str(good), "--output", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FAST]) == 0
    assert main(["--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o2"), "--checkpoint", str(ckpt)]) == 2
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"\x00" * 100)
    assert main(["--input", str(good), "--output", str(tmp_path / "o3"), "--checkpoint", str(bad_ckpt), *FAST]) == 2


def test_output_folder_inside_the_input_folder(setup, tmp_path):
    """``--input scans --output scans/masks``: the output folder is not a case (it used to be one, "case folder
    has no ADC", so every run failed); a failed case folder is reported with its path."""
    root, inp, ckpt = setup
    scans = _subset(inp, tmp_path / "scans", ["good_pair_dwi.nii.gz", "good_pair_adc.nii.gz"])
    out = scans / "masks"
    for _ in range(2):  # the first run creates it, the second finds it there
        assert main(["--input", str(scans), "--output", str(out), "--checkpoint", str(ckpt), *FAST]) == 0
    statuses = [(r["case"], r["status"]) for r in json.loads((out / "summary.json").read_text())["cases"]]
    assert statuses == [("good_pair", "skipped")]
    assert [c.name for c in find_cases(scans, exclude=[scans / "." / "masks"])] == ["good_pair"]
    (scans / "empty_case").mkdir()
    (result,) = [r for r in run_batch(scans, out, BatchPredictor(ckpt, preset="tiny", spatial_size=64))
                 if r.case == "empty_case"]
    assert result.status == "failed" and result.file == str(scans / "empty_case") and "case folder has no" in result.reason


def test_resume_completes_a_case_whose_probability_map_is_missing(setup, tmp_path, monkeypatch):
    """With ``--save_prob`` a case is complete only with both files: a mask alone (an earlier run without
    ``--save_prob``) gets its probability map, and the mask is kept. The map is written first, the mask last; a
    case whose mask cannot be written leaves no output of that attempt, and the next run completes it."""
    import monai_patcher.batch_inference as bi

    root, inp, ckpt = setup
    small = _subset(inp, tmp_path / "in", ["good_2ch.nii.gz"])
    out = tmp_path / "out"
    args = ["--input", str(small), "--output", str(out), "--checkpoint", str(ckpt), *FAST]
    assert main(args) == 0
    mask = (out / "good_2ch_seg.nii.gz").read_bytes()
    assert main(args + ["--save_prob"]) == 0
    (r,) = json.loads((out / "summary.json").read_text())["cases"]
    assert r["status"] == "ok" and "kept" in r["reason"], r
    assert nib.load(str(out / "good_2ch_prob.nii.gz")).shape == SHAPE
    assert (out / "good_2ch_seg.nii.gz").read_bytes() == mask
    assert main(args + ["--save_prob"]) == 0
    assert json.loads((out / "summary.json").read_text())["cases"][0]["status"] == "skipped"

    out2 = tmp_path / "out2"
    args2 = ["--input", str(small), "--output", str(out2), "--checkpoint", str(ckpt), "--save_prob", *FAST]
    real, order = bi._write_nifti, []

    def disk_full_on_mask(path, *a, **k):
        order.append(path.name)
        if path.name.endswith("_seg.nii.gz"):
            raise OSError(28, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(bi, "_write_nifti", disk_full_on_mask)
    assert main(args2) == bi.EXIT_OUTPUT_FAILED  # an output that cannot be written (was 1, as a bad scan)
    assert order == ["good_2ch_prob.nii.gz", "good_2ch_seg.nii.gz"]
    assert sorted(p.name for p in out2.iterdir()) == ["summary.csv", "summary.json"]
    monkeypatch.setattr(bi, "_write_nifti", real)
    assert main(args2) == 0
    assert {p.name for p in out2.iterdir()} >= {"good_2ch_seg.nii.gz", "good_2ch_prob.nii.gz"}


def test_a_mask_another_run_writes_meanwhile_is_not_replaced(setup, tmp_path):
    """Two runs into one folder without ``--overwrite``: the mask the other run wrote while this one computed is
    kept, and the case is reported as skipped (the existence check and the final rename used to be separate)."""
    root, inp, ckpt = setup
    small = _subset(inp, tmp_path / "in", ["good_2ch.nii.gz"])
    out = tmp_path / "out"
    predictor = BatchPredictor(ckpt, preset="tiny", spatial_size=64, sw_batch_size=4)
    real = predictor.predict

    def other_run_finishes_first(case, work):
        result = real(case, work)
        out.mkdir(exist_ok=True)
        (out / f"{case.name}_seg.nii.gz").write_bytes(b"the other run's mask")
        return result

    predictor.predict = other_run_finishes_first
    (r,) = run_batch(small, out, predictor)
    assert r.status == "skipped" and "created by another process" in r.reason, r
    assert (out / "good_2ch_seg.nii.gz").read_bytes() == b"the other run's mask"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_start_up_errors_exit_2(setup, tmp_path, capsys):
    """An output folder that cannot be created, a device that does not exist: a message and exit status 2 (no
    traceback, not 1, which means 'some case failed')."""
    root, inp, ckpt = setup
    good = _subset(inp, tmp_path / "good", ["good_pair_dwi.nii.gz", "good_pair_adc.nii.gz"])
    not_a_dir = tmp_path / "a_file"
    not_a_dir.write_text("x")
    assert main(["--input", str(good), "--output", str(not_a_dir), "--checkpoint", str(ckpt), *FAST]) == 2
    assert f"--output {not_a_dir}" in capsys.readouterr().err
    assert main(["--input", str(good), "--output", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FAST,
                 "--device", "nodevice"]) == 2
    assert "--device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--input", str(good), "--output", str(tmp_path / "o"), "--checkpoint", str(ckpt), *FAST,
                     "--device", "cuda:0"]) == 2
        assert "--device cuda:0: cannot use this device" in capsys.readouterr().err


def test_unsafe_or_mismatched_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        BatchPredictor(tmp_path / "evil.pt", preset="tiny")
    assert not (tmp_path / "PWNED").exists()
    from monai_patcher.networks import patcher_preset

    torch.save(patcher_preset("tiny").state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError) as info:  # a plain state_dict of another preset: the preset is named
        BatchPredictor(tmp_path / "tiny.pt", preset="small")
    msg = str(info.value)
    assert msg.startswith(str(tmp_path / "tiny.pt")) and "'tiny' Patcher (2 -> 1 channels) (guessed from its shapes)" in msg
    assert "--preset small builds a 'small' Patcher" in msg and "pass --preset tiny" in msg and "\n" not in msg, msg
    assert "Missing key(s)" not in msg and "size mismatch" not in msg
    # weights of no preset: PyTorch's mismatches, without its header line
    torch.save(patcher_preset("tiny", decoder_dim=16).state_dict(), tmp_path / "custom.pt")
    with pytest.raises(CheckpointError, match="do not fit the 'small'") as info:
        BatchPredictor(tmp_path / "custom.pt", preset="small")
    # PyTorch's first line is only "Error(s) in loading state_dict for ...": the mismatches themselves are shown
    assert "size mismatch for" in str(info.value) or "Missing key(s)" in str(info.value), str(info.value)
    assert "Error(s) in loading state_dict" not in str(info.value)


def test_a_checkpoint_with_a_record_builds_its_network_and_slice_size(tmp_path):
    """No --preset / --spatial_size needed; given and different from the record: one sentence naming the file."""
    from monai_patcher.io import ModelRecordMismatchError, stroke_model_record
    from monai_patcher.networks import patcher_preset

    net = patcher_preset("tiny", in_channels=2, out_channels=1)
    ckpt = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "model_record": stroke_model_record(net, spatial_size=48).state_dict()}, ckpt)
    predictor = BatchPredictor(ckpt)
    assert predictor.network.config == net.config and tuple(predictor.inferer.roi_size) == (48, 48)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in predictor.network.state_dict().items())
    assert BatchPredictor(ckpt, preset="tiny", spatial_size=48).network.config == net.config  # agreeing: fine
    for kwargs, differs in (({"preset": "paper"}, "'paper' preset is asked for"), ({"spatial_size": 64}, "spatial_size 48 but 64")):
        with pytest.raises(ModelRecordMismatchError) as info:
            BatchPredictor(ckpt, **kwargs)
        msg = str(info.value)
        assert msg.startswith(str(ckpt)) and differs in msg and "\n" not in msg, msg


def test_a_checkpoint_with_a_record_sets_the_inplane_mode_and_spacing(tmp_path, capsys):
    """A record of a ``spacing`` model resamples to its spacing (no flags needed; the bundle's default is not used):
    ``--inplane_mode``/``--inplane_spacing`` that disagree are one sentence naming the file (exit 2 in the CLI);
    a ``resize`` record resizes even though ``spacing`` is the default for checkpoints without a record."""
    from monai.transforms import Resized, Spacingd

    from monai_patcher.io import ModelRecordMismatchError, stroke_model_record
    from monai_patcher.networks import patcher_preset

    def inplane_step(predictor):
        (step,) = [t for t in predictor.preprocessing.transforms if isinstance(t, (Spacingd, Resized))]
        return step

    net = patcher_preset("tiny", in_channels=2, out_channels=1)
    spacing, resize = tmp_path / "spacing.pt", tmp_path / "resize.pt"
    torch.save({"model": net.state_dict(), "model_record": stroke_model_record(
        net, spatial_size=48, inplane_mode="spacing", inplane_spacing=(1.25, 1.5)).state_dict()}, spacing)
    torch.save({"model": net.state_dict(), "model_record": stroke_model_record(net, spatial_size=48).state_dict()}, resize)
    step = inplane_step(BatchPredictor(spacing))
    assert isinstance(step, Spacingd) and list(step.spacing_transform.pixdim) == [1.25, 1.5, -1.0]
    assert tuple(BatchPredictor(spacing).inferer.roi_size) == (48, 48)
    agreeing = BatchPredictor(spacing, inplane_mode="spacing", inplane_spacing=(1.25, 1.5))
    assert list(inplane_step(agreeing).spacing_transform.pixdim) == [1.25, 1.5, -1.0]
    for kwargs, differs in (({"inplane_mode": "resize"}, "inplane_mode spacing but resize"),
                            ({"inplane_spacing": (2.0, 2.0)}, "inplane_spacing [1.25, 1.5] but [2.0, 2.0]")):
        with pytest.raises(ModelRecordMismatchError) as info:
            BatchPredictor(spacing, **kwargs)
        msg = str(info.value)
        assert msg.startswith(str(spacing)) and differs in msg and "\n" not in msg, msg
    assert isinstance(inplane_step(BatchPredictor(resize)), Resized)  # the record's mode, not the default
    assert isinstance(inplane_step(BatchPredictor(None, network=net)), Spacingd)  # no record: the bundle's default
    good = tmp_path / "in"
    good.mkdir()
    c = make_demo_case(0, shape=SHAPE, spacing=(1.5, 1.5, 4.0))  # a case, so the run reaches the checkpoint
    _save(good / "c_dwi.nii.gz", c["dwi"])
    _save(good / "c_adc.nii.gz", c["adc"])
    args = ["--input", str(good), "--output", str(tmp_path / "out"), "--checkpoint", str(spacing)]
    assert main([*args, "--inplane_mode", "resize"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {spacing}") and "inplane_mode spacing but resize" in err, err


def test_progress_bar_can_be_switched_off_and_each_case_logs_a_summary(setup, tmp_path, capsys, caplog):
    import logging

    root, inp, ckpt = setup
    good = _subset(inp, tmp_path / "good", ["good_pair_dwi.nii.gz", "good_pair_adc.nii.gz"])
    caplog.set_level(logging.INFO, logger="monai_patcher.batch_inference")
    assert main(["--input", str(good), "--output", str(tmp_path / "on"), "--checkpoint", str(ckpt), *FAST]) == 0
    err = capsys.readouterr().err
    assert "100%|" in err, err  # SliceInferer's tqdm bar of the case's slices
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("good_pair: ok (")]
    assert len(summary) == 1 and "lesion voxels" in summary[0] and summary[0].endswith(" s)"), summary
    assert main(["--input", str(good), "--output", str(tmp_path / "off"), "--checkpoint", str(ckpt), *FAST,
                 "--no_progress"]) == 0
    assert "%|" not in capsys.readouterr().err


def test_a_crash_in_one_case_does_not_stop_the_others(setup, tmp_path, monkeypatch):
    """Any exception (here a MemoryError in the network on one case) is one failed case, not a dead batch."""
    root, inp, ckpt = setup
    predictor = BatchPredictor(ckpt, preset="tiny", spatial_size=64, sw_batch_size=4)
    real = predictor.predict

    def flaky(case, work):
        if case.name == "good_pair":
            raise MemoryError("simulated out-of-memory")
        return real(case, work)

    monkeypatch.setattr(predictor, "predict", flaky)
    small = _subset(inp, tmp_path / "in", ["good_pair_dwi.nii.gz", "good_pair_adc.nii.gz", "good_2ch.nii.gz"])
    results = {r.case: r for r in run_batch(small, tmp_path / "o", predictor)}
    assert results["good_pair"].status == "failed" and "MemoryError" in results["good_pair"].reason
    assert results["good_2ch"].status == "ok" and (tmp_path / "o" / "good_2ch_seg.nii.gz").is_file()


def test_real_isles_pair_and_dicom_case_folder(setup, tmp_path, shared_path_fn):
    """Real data (skipped when ../shared/data is absent): the ISLES'22 folder as is (a ``_dwi``/``_adc`` pair) and
    a case folder whose DWI and ADC are DICOM series folders (the same real series twice, for the plumbing)."""
    _, _, ckpt = setup
    isles = shared_path_fn("ISLES-2022-case0001", "data")
    dicom = shared_path_fn("DICOM-MR-brain-babymri", "tests", "data")
    predictor = BatchPredictor(ckpt, preset="tiny", spatial_size=64, sw_batch_size=80)  # one pass per volume
    out = tmp_path / "out"
    results = run_batch(isles, out, predictor)
    assert [(r.case, r.status) for r in results] == [("sub-strokecase0001_ses-0001", "ok")], results
    dwi = nib.load(str(next(isles.glob("*_dwi.nii.gz"))))
    seg = nib.load(str(out / "sub-strokecase0001_ses-0001_seg.nii.gz"))
    assert seg.shape == dwi.shape[:3]
    np.testing.assert_allclose(seg.affine, dwi.affine, atol=1e-3)

    case = tmp_path / "in" / "case_dicom"
    case.mkdir(parents=True)
    (case / "DWI").symlink_to(dicom, target_is_directory=True)
    (case / "ADC").symlink_to(dicom, target_is_directory=True)
    results = run_batch(tmp_path / "in", out, predictor)
    assert results[0].status == "ok", results[0].reason
    from monai_patcher.data import SimpleITKReader

    ref = SimpleITKReader().read_image(dicom)
    assert nib.load(str(out / "case_dicom_seg.nii.gz")).shape == tuple(ref.GetSize())


def _isolation_input(inp: Path, dst: Path) -> Path:
    """Three copies of the good pair: ``crash_*`` segfaults its reader, ``hang_*`` hangs it, ``fine_*`` is read."""
    dst.mkdir()
    for prefix in ("crash", "fine", "hang"):
        for mod in ("dwi", "adc"):
            (dst / f"{prefix}_{mod}.nii.gz").write_bytes((inp / f"good_pair_{mod}.nii.gz").read_bytes())
    return dst


def test_a_file_that_crashes_or_hangs_the_reader_fails_only_its_case(setup, tmp_path):
    """Reading runs in a forked child: a segfault (what ITK did on an .mha with NDims = -1) or a hang in a reader is
    one failed case, and the batch goes on (it used to end the process: no summary, the remaining cases never ran)."""
    import signal
    import time

    root, inp, ckpt = setup
    src = _isolation_input(inp, tmp_path / "in")
    predictor = BatchPredictor(ckpt, preset="tiny", spatial_size=64, sw_batch_size=4, read_timeout=20)
    assert predictor.isolate
    real = predictor.preprocess

    def hostile_reader(case, work):
        if case.name == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)  # in the child process: it dies like a crashing C++ reader
        if case.name == "hang":
            time.sleep(600)
        return real(case, work)

    predictor.preprocess = hostile_reader
    out = tmp_path / "out"
    results = {r.case: r for r in run_batch(src, out, predictor)}
    assert results["crash"].status == "failed" and "killed by SIGSEGV" in results["crash"].reason
    assert str(src / "crash_dwi.nii.gz") in results["crash"].reason
    assert results["hang"].status == "failed" and "longer than 20 s" in results["hang"].reason
    assert results["fine"].status == "ok" and (out / "fine_seg.nii.gz").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 1, "failed": 2, "skipped": 0}


def test_full_disk_stops_further_inference_and_names_the_output(setup, tmp_path, monkeypatch, capsys):
    """ENOSPC on the first output: that case fails naming the output file, no other case runs its inference (all of
    them used to run and fail), the summary is written and the exit status is 3."""
    import errno

    import monai_patcher.batch_inference as bi

    root, inp, ckpt = setup
    src = _isolation_input(inp, tmp_path / "in")
    out = tmp_path / "out"
    calls = []
    real_predict = bi.BatchPredictor.predict

    def counting(self, case, work):
        calls.append(case.name)
        return real_predict(self, case, work)

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bi.BatchPredictor, "predict", counting)
    monkeypatch.setattr(bi, "_write_nifti", full)
    rc = main(["--input", str(src), "--output", str(out), "--checkpoint", str(ckpt), *FAST])
    assert rc == bi.EXIT_OUTPUT_FAILED == 3
    assert calls == ["crash"]  # the first case (alphabetical); the two others never ran their inference
    cases = {r["case"]: r for r in json.loads((out / "summary.json").read_text())["cases"]}
    first = cases["crash"]
    assert first["status"] == "failed" and first["reason"].startswith(f"{out / 'crash_seg.nii.gz'}: cannot write")
    assert "No space left on device" in first["reason"]
    for name in ("fine", "hang"):
        assert cases[name]["status"] == "failed" and cases[name]["reason"].startswith("not run: the output folder")
    err = capsys.readouterr().err
    assert f"FAILED {src / 'crash_dwi.nii.gz'}: {out / 'crash_seg.nii.gz'}: cannot write" in err
    assert "error: the output folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "summary.json"]


def test_read_only_output_summary_goes_to_stderr(setup, tmp_path, monkeypatch, capsys):
    """A file system that turns read-only: nothing can be written, not even the summary, which then goes to stderr
    as JSON (write_summary used to raise an unhandled OSError: exit 1, no summary, no report)."""
    import errno

    import monai_patcher.batch_inference as bi

    root, inp, ckpt = setup
    small = _subset(inp, tmp_path / "in", ["good_pair_dwi.nii.gz", "good_pair_adc.nii.gz", "good_2ch.nii.gz"])
    out = tmp_path / "out"

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(bi, "_atomic_write", read_only)
    rc = main(["--input", str(small), "--output", str(out), "--checkpoint", str(ckpt), *FAST])
    assert rc == 3
    err = capsys.readouterr().err
    assert f"{out / 'summary.json'}: cannot write the summary (Read-only file system)" in err
    payload = json.loads(err[err.index("{") : err.rindex("}") + 1])
    assert payload["counts"] == {"ok": 0, "failed": 2, "skipped": 0}
    assert payload["cases"][0]["reason"].startswith(f"{out / 'good_pair_seg.nii.gz'}: cannot write this output")
    assert payload["cases"][1]["reason"].startswith("not run: ")
    assert not (out / "summary.json").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_output_folder_at_start_exits_2(setup, tmp_path, capsys):
    root, inp, ckpt = setup
    small = _subset(inp, tmp_path / "in", ["good_2ch.nii.gz"])
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["--input", str(small), "--output", str(out), "--checkpoint", str(ckpt), *FAST]) == 2
        assert f"--output {out}: cannot create or write this folder" in capsys.readouterr().err
    finally:
        out.chmod(0o755)

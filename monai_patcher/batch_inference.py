"""Batch inference over a folder of stroke MRI scans that survives bad scans.

Every case is processed independently (reading, checks, inference, writing are inside one ``try`` per case):
every good scan gets its mask, every bad one is reported with its file and the reason, in ``summary.json`` /
``summary.csv`` and in the exit status. Existing outputs are kept unless ``--overwrite``; outputs and summaries
are written atomically (temporary file + rename), so an interrupted run never leaves a half-written mask.

Usage::

    python -m monai_patcher.batch_inference --input scans/ --output masks/ --checkpoint model.pt \\
        [--preset paper|small|tiny] [--overwrite] [--sw_batch_size 8] [--device cpu] [--save_prob] [--no_progress] \
        [--inplane_mode spacing|resize] [--inplane_spacing 2.0 2.0] [--spatial_size 256] [--sw_overlap 0.25]

A checkpoint written by the stroke bundle carries a model record (preset, in-plane mode and spacing, slice or
window size, slice axis, b-value): the network and the pipeline are built from it, and ``--preset``,
``--inplane_mode``, ``--inplane_spacing`` and ``--spatial_size`` are only needed for checkpoints without one (a plain
state dict); given and different from the record, they are refused with one sentence. A progress bar shows the
windows of each case (``--no_progress`` turns it off); one line per case logs its time and lesion voxels.

Input (``--input``, a folder; not recursive beyond one level of case folders). A *case* is one of
(:func:`monai_patcher.data.cases.find_cases`):

- ``<case>.nii[.gz]``: one 2-channel NIfTI (``X x Y x Z x 2``, channels DWI then ADC; ``--channel_order adc,dwi``
  for the other order);
- ``<case>_dwi.<ext>`` + ``<case>_adc.<ext>`` (ISLES'22/BIDS naming; NIfTI, MHA, NRRD);
- ``<case>/``, a folder with one DWI and one ADC, each a file or a DICOM series folder whose name contains
  ``dwi`` / ``adc`` (``case1/dwi.nii.gz`` + ``case1/adc.nii.gz``, ``case1/DWI/*.dcm`` + ``case1/ADC/*.dcm``).

Files named like labels (``*_msk``, ``*_mask``, ``*_seg``, ``*_label``) are ignored. Output: ``<output>/<case>_seg.nii.gz``
(uint8, 1 = lesion, in the DWI's own grid and affine) and, with ``--save_prob``, ``<case>_prob.nii.gz``.

The output folder may be inside the input folder (``--input scans --output scans/masks``): it is not a case.
A case is skipped when all its requested outputs exist (the mask, and with ``--save_prob`` the probability map;
the mask is written last, so it marks a finished case); missing ones are written, existing ones kept, unless
``--overwrite``. Without ``--overwrite`` an output is never replaced, not even one that another run creates
while this one works on the case (that case is then reported ``skipped``).

Untrusted files are read in a child process: each case's reading and preprocessing runs in a ``fork`` of this
process (POSIX), so a file that crashes a C++ reader (ITK, GDCM) or hangs it (``--read_timeout``) fails that case
only; the batch goes on. The readers validate every header before ITK sees it (see
:class:`~monai_patcher.data.SimpleITKReader`); the child process is for what no validation foresaw.

A full or read-only output disk: the first output that cannot be written fails its case with a reason naming that
output file, and the remaining cases are not run (they are reported ``failed``, "not run"). ``summary.json`` and
``summary.csv`` are written atomically; if they cannot be written, the summary is printed to stderr as JSON.

Exit status: 0 if every case succeeded or was skipped (output exists), 1 if any case failed (bad input), 2 if the run
could not start (no input, no case, an output folder that cannot be created, an unreadable, unsafe or mismatching
checkpoint, an unusable ``--device``), 3 if an output or the summary could not be written (the run stopped there;
finished cases are kept, a re-run completes the others).

The preprocessing is :func:`monai_patcher.transforms.stroke_inference_transforms`, the definition the
``patcher_stroke`` bundle's ``inference.json`` calls too (checks, eADC + DWI, RAS, per-channel normalisation,
the in-plane step), with the bundle's defaults: ``--inplane_mode spacing`` resamples the slices to
``--inplane_spacing`` mm (default 2.0 2.0, the ISLES'22 median) and the network runs on ``--spatial_size`` windows
with ``--sw_overlap`` and Gaussian blending; ``--inplane_mode resize`` is the paper's resize of every slice to
``--spatial_size``. The windows are run by :class:`~monai_patcher.inferers.SkipEmptySliceInferer`
(``sw_batch_size`` at a time, all-background windows answered once), ``Invertd`` brings the probabilities back to
the input grid.
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .allocator import keep_freed_memory
from .data.cases import Case, find_cases
from .data.errors import clear_error, error_chain

__all__ = ["CaseResult", "BatchResults", "BatchPredictor", "run_batch", "write_summary", "main"]

#: exit status of ``main`` when an output or the summary could not be written
EXIT_OUTPUT_FAILED = 3

logger = logging.getLogger(__name__)

@dataclass
class CaseResult:
    """The outcome of one case, one row of the summary."""

    case: str
    file: str
    status: str  # "ok" | "failed" | "skipped"
    reason: str = ""
    output: str = ""
    seconds: float = 0.0
    lesion_voxels: int | None = None
    extra: dict = field(default_factory=dict)


def _root_message(e: BaseException) -> str:
    """The innermost useful message: MONAI's Compose wraps errors in ``RuntimeError("applying transform ...")``;
    our own clear errors (``ValueError``/``DataError``) are preferred over wrappers."""
    inner = clear_error(e, (ValueError,))
    if inner is not None:
        return str(inner).strip() or type(inner).__name__
    inner = error_chain(e)[-1]
    return f"{type(inner).__name__}: {str(inner).strip() or type(inner).__name__}"


def _atomic_write(path: Path, write, overwrite: bool = True) -> None:
    """:func:`~monai_patcher.io.atomic_write`, the temporary name keeping the extension (for the writers);
    ``overwrite=False``: raise ``FileExistsError`` rather than replace a file (even one created meanwhile)."""
    from .io.atomic import atomic_write

    atomic_write(path, write, suffix=".tmp" + "".join(Path(path.name).suffixes), overwrite=overwrite)


def _write_nifti(path: Path, array: torch.Tensor, meta: dict, dtype, overwrite: bool = True) -> None:
    from monai.data import NibabelWriter

    def write(tmp: str) -> None:
        writer = NibabelWriter(output_dtype=dtype)
        writer.set_data_array(array, channel_dim=0, squeeze_end_dims=True)
        writer.set_metadata(meta, resample=False)
        writer.write(tmp)

    _atomic_write(path, write, overwrite=overwrite)


class BatchPredictor:
    """The network, preprocessing, inferer and inversion for one run; :meth:`predict` does one case.

    A checkpoint with a model record (:mod:`monai_patcher.io.model_record`, written by the stroke bundle) gives the
    network, the in-plane mode and spacing, the slice or window size, the slice axis and the eADC's b-value;
    ``preset`` / ``inplane_mode`` / ``inplane_spacing`` / ``spatial_size`` given as well must agree with it (else
    :class:`~monai_patcher.io.ModelRecordMismatchError`, one sentence). A checkpoint without a record (a plain state
    dict) uses them as given (default ``"paper"``, ``"spacing"`` at ``(2.0, 2.0)`` mm, 256: the bundle's defaults;
    a plain state dict trained with the paper's resize needs ``inplane_mode="resize"``).

    Args:
        checkpoint: a weights file (a state dict, or a dict with ``"model"``/``"network"``/``"state_dict"``),
            loaded with ``weights_only=True`` (:func:`monai_patcher.io.safe_load_checkpoint`). None:
            random weights (tests, benchmarks).
        preset: Patcher preset (``"paper"``, ``"small"``, ``"tiny"``); None: the record's, else ``"paper"``.
        spatial_size: the network's window (``"spacing"``) or the size slices are resized to (``"resize"``), the
            bundle's ``spatial_size``; None: the record's, else 256.
        sw_batch_size: windows per forward pass.
        threshold: probability threshold of the mask.
        device: torch device.
        channel_order: meaning of the two channels of 2-channel files.
        isolate: read and preprocess each case in a forked child process (default True where ``os.fork`` exists):
            a crash or hang of a reader fails that case only.
        read_timeout: seconds a case's reading and preprocessing may take in the child before it is killed.
        network: a network to use instead of building one (its weights are loaded from ``checkpoint`` if given).
        progress: show a progress bar of the windows of each case (``SliceInferer(progress=True)``, tqdm).
        inplane_mode: ``"spacing"`` or ``"resize"`` (the paper), see
            :func:`~monai_patcher.transforms.stroke_volume_transforms`; None: the record's, else ``"spacing"``
            (the bundle's default).
        inplane_spacing: target in-plane voxel size (mm) of ``"spacing"`` (the bundle's ``inplane_spacing``);
            None: the record's, else ``(2.0, 2.0)``.
        sw_overlap: overlap of neighbouring windows (the bundle's ``sw_overlap``).
        sw_mode: window blending, ``"gaussian"`` or ``"constant"`` (the bundle's ``sw_mode``).
        skip_empty: run the network once for all all-background windows (the bundle's ``skip_empty``).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None,
        preset: str | None = None,
        spatial_size: int | None = None,
        sw_batch_size: int = 8,
        threshold: float = 0.5,
        device: str | torch.device = "cpu",
        channel_order: Sequence[str] = ("dwi", "adc"),
        network: torch.nn.Module | None = None,
        isolate: bool = True,
        read_timeout: float = 600.0,
        progress: bool = False,
        inplane_mode: str | None = None,
        inplane_spacing: Sequence[float] | None = None,
        sw_overlap: float = 0.25,
        sw_mode: str = "gaussian",
        skip_empty: bool = True,
    ) -> None:
        from .inferers import SkipEmptySliceInferer
        from .io.model_record import load_patcher, patcher_from_record, record_value
        from .transforms import stroke_inference_transforms

        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"--device {device!r}: not a torch device ({e})") from None
        self.isolate = bool(isolate) and hasattr(os, "fork")
        if read_timeout <= 0:
            raise ValueError(f"read_timeout must be positive, got {read_timeout}")
        self.read_timeout = float(read_timeout)
        self.threshold = float(threshold)
        self.channel_order = tuple(str(c).lower() for c in channel_order)
        if sorted(self.channel_order) != ["adc", "dwi"]:
            raise ValueError(f"channel_order must name 'dwi' and 'adc' once each, got {list(channel_order)}")
        if checkpoint is None:
            net, record = network if network is not None else patcher_from_record(None, preset), None
        else:
            net, record = load_patcher(checkpoint, preset, in_channels=2, out_channels=1, network=network)
        if record is not None:
            record.check(spatial_size=spatial_size, inplane_mode=inplane_mode, inplane_spacing=inplane_spacing)
        self.record = record
        try:
            self.network = net.to(self.device).eval()
        except (RuntimeError, AssertionError) as e:  # e.g. "Torch not compiled with CUDA enabled"
            raise ValueError(f"--device {self.device}: cannot use this device ({type(e).__name__}: {e})") from None
        spatial_size = record_value(record, "spatial_size", 256) if spatial_size is None else spatial_size
        inplane_mode = record_value(record, "inplane_mode", "spacing") if inplane_mode is None else inplane_mode
        if inplane_spacing is None:
            inplane_spacing = record_value(record, "inplane_spacing", (2.0, 2.0))
        axis = record_value(record, "slice_axis", 2)
        self.preprocessing = stroke_inference_transforms(
            spatial_size=spatial_size, axis=axis, b_value=record_value(record, "b_value", 1000.0),
            inplane_mode=inplane_mode, inplane_spacing=inplane_spacing,
        )
        self.inferer = SkipEmptySliceInferer(
            roi_size=(spatial_size, spatial_size), spatial_dim=axis, sw_batch_size=sw_batch_size, overlap=sw_overlap,
            mode=sw_mode, skip_empty=skip_empty, progress=progress,
        )

    def preprocess(self, case: Case, work_dir: str | os.PathLike) -> dict:
        """Read and preprocess one case in this process: the preprocessing's output dictionary.

        Raises:
            ValueError (``DataError``): bad input, with the file in the message.
        """
        items = case.items(work_dir, self.channel_order)
        try:
            return self.preprocessing(items)
        except Exception as e:
            if case.two_channel is None:
                raise
            msg = _root_message(e)  # name the user's file, not the temporary channel files
            for key, p in items.items():
                msg = msg.replace(p, f"{case.two_channel} [{key.upper()} channel]")
            raise ValueError(msg) from None

    @torch.no_grad()
    def predict(self, case: Case, work_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Probabilities and mask of one case in its input grid: ``(prob, mask, meta)`` (``1 x X x Y x Z``).

        With ``isolate``, the reading and preprocessing (:meth:`preprocess`) run in a forked child process.

        Raises:
            ValueError (``DataError``): bad input, with the file in the message; a crash or hang of the child.
        """
        from monai.transforms import Invertd

        if self.isolate:
            d = _read_isolated(lambda: self.preprocess(case, work_dir), self.read_timeout, case.source)
        else:
            d = self.preprocess(case, work_dir)
        image = d["image"]
        logits = self.inferer(image.unsqueeze(0).to(self.device), self.network)
        prob = torch.sigmoid(logits[0].float()).cpu()
        del logits
        d["pred"] = prob
        d = Invertd(keys="pred", transform=self.preprocessing, orig_keys="image", nearest_interp=False)(d)
        prob = d["pred"]
        expected = tuple(int(s) for s in image.meta.get("spatial_shape", prob.shape[1:]))
        if tuple(prob.shape[1:]) != expected:
            raise RuntimeError(f"the prediction's shape {tuple(prob.shape[1:])} is not the input's {expected}")
        mask = (prob >= self.threshold).to(torch.uint8)
        return prob, mask, dict(prob.meta)


class _ReadFailed(ValueError):
    """A case's reading failed in the child process; the message is final (it names the file)."""


def _read_isolated(fn, timeout: float, source: str):
    """``fn()`` in a forked child process (:func:`~monai_patcher.isolation.run_isolated`); a failure there is a
    :class:`_ReadFailed` whose message is the innermost error, or says how the child died and names ``source``."""
    from .isolation import run_isolated

    out = run_isolated(fn, timeout, describe_error=_root_message)
    if out.ok:
        return out.value
    if out.timed_out:
        raise _ReadFailed(f"{source}: reading and preprocessing took longer than {timeout:g} s (--read_timeout); "
                          "stopped (a hang in a reader?)")  # fmt: skip
    if out.signal:
        raise _ReadFailed(f"{source}: the process reading this case was killed by {out.signal} (a file that crashes "
                          "the reader, or out of memory); the other cases are not affected")  # fmt: skip
    raise _ReadFailed(out.error)


class _OutputFailed(Exception):
    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(str(path))
        self.path, self.error = path, error


class BatchResults(list):
    """The :class:`CaseResult` list of a run, with how it ended.

    Attributes:
        stopped: why the run stopped before its last case (an output that could not be written), or None.
        summary_error: why ``summary.json``/``summary.csv`` could not be written (the summary went to stderr), or None.
    """

    stopped: str | None = None
    summary_error: str | None = None


class _OutputAppeared(Exception):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


def run_batch(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    predictor: BatchPredictor,
    overwrite: bool = False,
    save_prob: bool = False,
) -> list[CaseResult]:
    """Run every case of ``input_dir``; write masks and ``summary.json``/``summary.csv`` to ``output_dir``.

    One case's failure (any ``Exception``, including ``MemoryError``) never stops the others. Temporary files that
    an interrupted earlier run left in ``output_dir`` are removed first (only those, and never one that a running
    process may still be writing: :func:`~monai_patcher.io.remove_stale_temp_files`). ``output_dir`` may be
    inside ``input_dir`` (it is not taken for a case folder).

    A case is complete when every requested output exists (the mask, and with ``save_prob`` the probability
    map); the probability map is written first and the mask last, so a mask means the case was finished. Without
    ``overwrite`` a complete case is ``skipped``, an incomplete one (an interrupted run, or a run without
    ``save_prob`` before) gets its missing outputs written and existing ones kept; an output that another process
    creates while the case runs is kept too (the case is then ``skipped``, saying so).
    """
    from .io.atomic import remove_stale_temp_files

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out, log=logger)
    results = BatchResults()
    for case in find_cases(input_dir, exclude=[out]):
        if results.stopped:  # the output folder cannot be written: no more inference for nothing
            results.append(CaseResult(case=case.name, file=case.source, status="failed", reason=f"not run: {results.stopped}",
                                      extra={"not_run": True}))  # fmt: skip
            continue
        seg = out / f"{case.name}_seg.nii.gz"
        prob_path = out / f"{case.name}_prob.nii.gz"
        res = CaseResult(case=case.name, file=case.source, status="ok", output=str(seg))
        start = time.perf_counter()
        wanted = [prob_path, seg] if save_prob else [seg]  # the mask last: it marks a complete case
        todo = wanted if overwrite else [p for p in wanted if not p.exists()]
        if not todo:
            res.status, res.reason = "skipped", f"{seg} exists (use --overwrite to replace it)"
            results.append(res)
            logger.info("%s: skipped (output exists)", case.name)
            continue
        kept = [p for p in wanted if p not in todo]
        written: list[Path] = []
        try:
            with tempfile.TemporaryDirectory(prefix="patcher_case_") as work:
                prob, mask, meta = predictor.predict(case, work)
            for path in todo:
                try:
                    if path == prob_path:
                        _write_nifti(path, prob, meta, np.float32, overwrite=overwrite)
                    else:
                        _write_nifti(path, mask, meta, np.uint8, overwrite=overwrite)
                except FileExistsError as e:  # only without overwrite: another run created it meanwhile
                    raise _OutputAppeared(path) from e
                except OSError as e:  # a full or read-only disk, a quota, a permission: the output's problem
                    raise _OutputFailed(path, e) from e
                written.append(path)
            res.lesion_voxels = int(mask.sum())
            res.extra = {"shape": list(mask.shape[1:])}
            if kept:
                res.reason = f"completed an earlier run's outputs; kept {', '.join(str(p) for p in kept)}"
        except _OutputAppeared as e:  # not replaced; this run's other output of the case stays (same result)
            res.status = "skipped"
            res.reason = (f"{e.path} was created by another process while this case ran (another run writing to "
                          "the same folder?); kept it (use --overwrite to replace it)")
            logger.warning("%s: skipped: %s", case.name, res.reason)
        except _OutputFailed as e:
            _remove(written)
            why = e.error.strerror or str(e.error)
            res.status, res.output = "failed", ""
            res.reason = (f"{e.path}: cannot write this output ({why}); the remaining cases are not run (is the output "
                          "folder full or read-only?)")  # fmt: skip
            res.extra = {"output_error": str(e.path)}
            results.stopped = f"the output folder {out} cannot be written ({e.path}: {why})"
            logger.error("%s: FAILED: %s", case.name, res.reason)
        except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
            _remove(written)
            res.status, res.reason, res.output = "failed", _root_message(e), ""
            if not any(f and f in res.reason for f in (case.two_channel, case.dwi, case.adc, case.folder)):
                res.reason = f"{case.source}: {res.reason}"
            logger.error("%s: FAILED: %s", case.name, res.reason)
        res.seconds = round(time.perf_counter() - start, 3)
        if res.status == "ok":
            logger.info("%s: ok (%d lesion voxels, %.1f s)", case.name, res.lesion_voxels, res.seconds)
        results.append(res)
    try:
        write_summary(out, results)
    except OSError as e:
        results.summary_error = f"{out / 'summary.json'}: cannot write the summary ({e.strerror or e})"
        logger.error("%s; the summary follows on stderr", results.summary_error)
        print(json.dumps(_summary_payload(results), indent=1), file=sys.stderr)
    return results


def _remove(paths: list[Path]) -> None:
    for path in paths:  # no partial set of outputs from a failed attempt (e.g. a probability map alone)
        try:
            path.unlink()
        except OSError:
            pass


def _summary_payload(results: list[CaseResult]) -> dict:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "skipped")}
    return {"counts": counts, "cases": [asdict(r) for r in results]}


def write_summary(output_dir: Path, results: list[CaseResult]) -> None:
    """``summary.json`` (counts + one record per case) and ``summary.csv`` (one row per case), atomically."""
    payload = _summary_payload(results)
    _atomic_write(output_dir / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case", "file", "status", "reason", "output", "seconds", "lesion_voxels"])
    for r in results:
        w.writerow([r.case, r.file, r.status, r.reason, r.output, r.seconds, "" if r.lesion_voxels is None else r.lesion_voxels])
    _atomic_write(output_dir / "summary.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 all good, 1 some case failed, 2 could not start, 3 an
    output or the summary could not be written)."""
    ap = argparse.ArgumentParser(prog="python -m monai_patcher.batch_inference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="folder of cases (see the module docs)")
    ap.add_argument("--output", required=True, help="folder for <case>_seg.nii.gz and summary.json/.csv")
    ap.add_argument("--checkpoint", required=True, help="model weights (.pt), loaded with weights_only=True")
    ap.add_argument("--preset", default=None,
                    help="Patcher preset: paper, small, tiny (default: the checkpoint's record, else paper)")
    ap.add_argument("--inplane_mode", default=None, choices=["spacing", "resize"],
                    help="slices resampled to --inplane_spacing or resized to --spatial_size (the paper) "
                    "(default: the checkpoint's record, else spacing)")
    ap.add_argument("--inplane_spacing", type=float, nargs=2, default=None, metavar=("SX", "SY"),
                    help="in-plane voxel size (mm) of --inplane_mode spacing "
                    "(default: the checkpoint's record, else 2.0 2.0, as the bundle)")
    ap.add_argument("--spatial_size", type=int, default=None,
                    help="network window (spacing) or resize target (default: the checkpoint's record, else 256)")
    ap.add_argument("--sw_overlap", type=float, default=0.25, help="overlap of neighbouring windows")
    ap.add_argument("--sw_batch_size", type=int, default=8, help="windows per forward pass")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--channel_order", default="dwi,adc", help="channels of 2-channel files")
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ap.add_argument("--save_prob", action="store_true", help="also write <case>_prob.nii.gz")
    ap.add_argument("--read_timeout", type=float, default=600.0,
                    help="seconds a case's reading and preprocessing may take (in a child process) before it is stopped")
    ap.add_argument("--no_isolation", action="store_true",
                    help="read the cases in this process (no child process: a crashing file ends the batch)")
    ap.add_argument("--no_progress", action="store_true", help="no progress bar of the slices of each case")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    keep_freed_memory()  # a CLI process of our own: reuse freed host memory (see monai_patcher.allocator)
    try:  # every start-up problem: a clear message and exit status 2
        find_cases(args.input, exclude=[args.output])
        out = Path(args.output)
        try:
            out.mkdir(parents=True, exist_ok=True)
            if not os.access(out, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable")
        except OSError as e:
            raise OSError(f"--output {out}: cannot create or write this folder ({e.strerror or e})") from None
        predictor = BatchPredictor(
            args.checkpoint, preset=args.preset, spatial_size=args.spatial_size, sw_batch_size=args.sw_batch_size,
            threshold=args.threshold, device=args.device, channel_order=args.channel_order.split(","),
            isolate=not args.no_isolation, read_timeout=args.read_timeout,
            progress=not args.no_progress, inplane_mode=args.inplane_mode, inplane_spacing=args.inplane_spacing,
            sw_overlap=args.sw_overlap,
        )
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, AssertionError) as e:  # e.g. torch/CUDA errors while setting up the network
        print(f"error: could not start: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    results = run_batch(args.input, args.output, predictor, overwrite=args.overwrite, save_prob=args.save_prob)
    counts = _summary_payload(results)["counts"]
    where = "on stderr" if results.summary_error else str(Path(args.output) / "summary.json")
    print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped; summary: {where}")
    for r in results:
        if r.status == "failed" and not r.extra.get("not_run"):
            print(f"FAILED {r.file}: {r.reason}", file=sys.stderr)
    for problem in (results.stopped, results.summary_error):
        if problem:
            print(f"error: {problem}", file=sys.stderr)
    if results.stopped or results.summary_error:
        return EXIT_OUTPUT_FAILED
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers used by the MONAI bundles in ``bundles/`` (``patcher_stroke``, ``patcher_polyp``).

They are small, plain functions called from the bundle configs (``"$monai_patcher.bundle_utils.<name>(...)"``):

- :func:`find_bundle_root`: the bundle folder, whatever the current directory is;
- :func:`latest_checkpoint`: the newest ``checkpoint_epoch=N.pt`` to resume from;
- :func:`stroke_inference_datalist` / :func:`image_datalist`: turn the ``--input`` of an
  inference run (a file, a folder of files, a DICOM series folder, a DWI + ADC pair) into a MONAI datalist;
- :func:`ensure_demo_dataset`: write the synthetic demo dataset once and return its datalist;
- :func:`insert_after`: a transform list with more transforms inserted after a given one (``evaluate.json``
  keeps the label as loaded, in the scan's grid, next to the network's preprocessing);
- :class:`PatcherWithGating`: a network wrapper returning ``{"pred": logits, "gating": maps}`` at full
  resolution, so MONAI inferers and ``Invertd`` treat the mixture-of-experts gating maps like a prediction.
"""

from __future__ import annotations

import ast
import glob
import inspect
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data.readers import holds_dicom_files, strip_suffix, suffixes

__all__ = [
    "find_bundle_root",
    "latest_checkpoint",
    "stroke_inference_datalist",
    "image_datalist",
    "stroke_output_name",
    "ensure_demo_dataset",
    "insert_after",
    "PatcherWithGating",
]

logger = logging.getLogger(__name__)

_NIFTI = suffixes("nifti")
_IMAGE_EXT = suffixes("image2d")


def _bundle_dir_from_config(config_file: str | os.PathLike) -> Path:
    """``<bundle>/configs/x.json`` -> ``<bundle>``; a config outside a ``configs`` folder -> its folder."""
    parent = Path(config_file).resolve().parent
    return parent.parent if parent.name == "configs" else parent


def _config_files_from_argv(argv: Sequence[str]) -> list[str]:
    """The ``--config_file`` value(s) of a ``python -m monai.bundle ...`` command line."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--config_file" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith("--config_file="):
            values.append(arg.split("=", 1)[1])
    files: list[str] = []
    for v in values:
        v = v.strip()
        if v.startswith(("[", "(")):
            try:
                files.extend(str(x) for x in ast.literal_eval(v))
                continue
            except (ValueError, SyntaxError):
                v = v.strip("[]()")
        files.extend(x.strip().strip("'\"") for x in v.split(",") if x.strip())
    return files


def find_bundle_root(name: str | None = None) -> str:
    """The folder of the running bundle, independent of the current directory.

    MONAI's ``ConfigWorkflow`` knows the folder of the config file (``config_root_path``) but does not put
    it in the config, and model-zoo bundles use ``"bundle_root": "."`` (they must be run from inside the
    bundle). This finds it, in order:

    1. the ``config_root_path`` of the ``monai.bundle.ConfigWorkflow`` being built or run (any entry point:
       ``python -m monai.bundle run``, ``torchrun -m monai.bundle run``, ``ConfigWorkflow(...)`` in Python);
    2. the first ``--config_file`` on the command line (``verify_net_in_out``, ``ckpt_export``, ...);
    3. ``bundles/<name>`` next to the installed ``monai_patcher`` package (an editable/source install);
    4. the current directory (the model-zoo convention).

    A config file in ``<bundle>/configs/`` gives ``<bundle>``. ``--bundle_root`` on the command line still
    overrides all of this.

    Args:
        name: the bundle's folder name (``"patcher_stroke"``); used by step 3 and to prefer a matching folder.

    Returns:
        the absolute path of the bundle folder, as a string.
    """
    try:
        from monai.bundle import ConfigWorkflow
    except ImportError:  # pragma: no cover
        ConfigWorkflow = None  # type: ignore
    if ConfigWorkflow is not None:
        frame = inspect.currentframe()
        while frame is not None:
            obj = frame.f_locals.get("self")
            if isinstance(obj, ConfigWorkflow) and getattr(obj, "config_root_path", None) is not None:
                root = Path(obj.config_root_path).resolve()
                return str(root.parent if root.name == "configs" else root)
            frame = frame.f_back
    files = _config_files_from_argv(sys.argv)
    if files:
        return str(_bundle_dir_from_config(files[0]))
    if name:
        candidate = Path(__file__).resolve().parent.parent / "bundles" / name
        if (candidate / "configs").is_dir():
            return str(candidate)
    return os.getcwd()


def latest_checkpoint(ckpt_dir: str | os.PathLike, pattern: str = "checkpoint_epoch=*.pt") -> str:
    """The checkpoint with the highest epoch number in ``ckpt_dir`` (written by ``CheckpointSaver``).

    Args:
        ckpt_dir: folder of the checkpoints.
        pattern: glob of the interval checkpoints; the number in the name orders them.

    Raises:
        FileNotFoundError: there is no such checkpoint (nothing to resume from).
    """
    paths = glob.glob(os.path.join(os.fspath(ckpt_dir), pattern))
    if not paths:
        raise FileNotFoundError(
            f"resume is true but there is no checkpoint matching {pattern!r} in {ckpt_dir}: train once without "
            "--resume (or point --ckpt_dir to the folder of a previous run)."
        )

    def _num(p: str) -> int:
        m = re.findall(r"(\d+)", Path(p).name)
        return int(m[-1]) if m else -1

    return max(paths, key=lambda p: (_num(p), os.path.getmtime(p)))


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(_NIFTI)


def _nifti_stem(p: Path) -> str:
    return strip_suffix(p.name, "nifti")


def _find_label(stem: str, label_dir: Path | None, case_folder: str | None = None) -> str | None:
    """The label of case ``stem`` in ``label_dir``; a file named just ``dwi``/``adc`` (case-folder layout,
    ``case003/dwi.nii.gz``) is named by its ``case_folder``."""
    if label_dir is None:
        return None
    bases = [stem, re.sub(r"_(dwi|adc)$", "", stem, flags=re.I)]
    if case_folder and re.fullmatch(r"dwi|adc", stem, re.I):
        bases = [case_folder]
    for suffix in ("_msk", "_seg", "_label", "_mask", ""):
        for ext in _NIFTI:
            for base in dict.fromkeys(bases):
                p = label_dir / f"{base}{suffix}{ext}"
                if p.is_file():
                    return str(p)
    return None


def _split_two_channel(path: Path, work_dir: Path, order: Sequence[str]) -> dict[str, str]:
    """Write the two channels of a 2-channel NIfTI as two 3D NIfTI files (same header/affine); return their paths."""
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))
    if len(img.shape) != 4 or img.shape[3] != 2:
        raise ValueError(
            f"{path}: shape {img.shape} is neither a DWI (use --input_adc for its ADC) nor a 2-channel volume "
            "(X x Y x Z x 2)"
        )
    order = [str(o).lower() for o in order]
    if sorted(order) != ["adc", "dwi"]:
        raise ValueError(f"two_channel_order must name 'dwi' and 'adc' once each, got {list(order)}")
    work_dir.mkdir(parents=True, exist_ok=True)
    data = np.asanyarray(img.dataobj)
    out = {}
    for c, key in enumerate(order):
        header = img.header.copy()
        header.set_data_shape(img.shape[:3])
        ch = nib.Nifti1Image(np.ascontiguousarray(data[..., c]), img.affine, header)
        q, q_code = img.get_qform(coded=True)
        if q is not None:
            ch.set_qform(q, int(q_code))
        sf, s_code = img.get_sform(coded=True)
        if sf is not None:
            ch.set_sform(sf, int(s_code))
        target = work_dir / f"{_nifti_stem(path)}_{key}.nii.gz"
        nib.save(ch, str(target))
        out[key] = str(target)
    return out


def stroke_inference_datalist(
    input: str | os.PathLike | None,
    input_adc: str | os.PathLike | None = None,
    label: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    two_channel_order: Sequence[str] = ("dwi", "adc"),
) -> list[dict[str, Any]]:
    """Build the inference datalist of the stroke bundle (items ``{"dwi", "adc"[, "label"]}``) from ``--input``.

    Accepted inputs (``--input``, with ``--input_adc`` and ``--label`` optional):

    - a DWI file (NIfTI/MHA/...) or DWI DICOM series folder **and** ``input_adc``, the ADC file or folder;
    - a ``*_dwi.nii(.gz)`` file whose ``*_adc.nii(.gz)`` sibling exists (ISLES'22 BIDS naming);
    - a 2-channel NIfTI file (``X x Y x Z x 2``, channels in ``two_channel_order``, default DWI then ADC): its
      channels are written as two 3D files (same header and affine) into ``work_dir``;
    - a folder, searched recursively: every ``*_dwi.nii*`` with its ``*_adc.nii*`` sibling is a case (an ISLES'22
      BIDS tree works as is); every other NIfTI that is not an ADC/mask/FLAIR file is read as a 2-channel file;
    - a DICOM series folder alone is refused with a message (DWI and ADC are separate series: use ``input_adc``).

    Args:
        input: file or folder, as above.
        input_adc: ADC file or DICOM folder, for one DWI + ADC case.
        label: a label file (one case only: refused for several) or a folder of labels matched by case name
            (``<case>_msk.nii.gz``, ``_seg``, ``_label``, ``_mask`` or the same name; in the case-folder layout,
            ``case003/dwi.nii.gz``, the case is named by its folder: ``labels/case003.nii.gz``).
        work_dir: where to write the channels of 2-channel files (required only for those).
        two_channel_order: the meaning of the channels of 2-channel files.

    Raises:
        FileNotFoundError: a path does not exist, or no case was found in a folder.
        ValueError: a DICOM folder without ``input_adc``; a DWI file without its ADC; a NIfTI that is neither.
    """
    if input is None or str(input) == "":
        raise ValueError("set --input: a NIfTI file, a folder of NIfTI files or a DICOM series folder (see docs).")
    src = Path(input).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"--input {src}: no such file or folder")
    lab = Path(label).expanduser() if label not in (None, "") else None
    if lab is not None and not lab.exists():
        raise FileNotFoundError(f"--label {lab}: no such file or folder")
    work = Path(work_dir) if work_dir not in (None, "") else None

    def two_channel(p: Path) -> dict[str, Any]:
        if work is None:
            raise ValueError(f"{p}: a 2-channel file needs a work_dir to write its channels to")
        return _split_two_channel(p, work, two_channel_order)

    def with_label(item: dict[str, Any], stem: str, case_folder: str | None = None) -> dict[str, Any]:
        if lab is not None:
            found = str(lab) if lab.is_file() else _find_label(stem, lab, case_folder)
            if not found:
                name = case_folder if case_folder and re.fullmatch(r"dwi|adc", stem, re.I) else stem
                raise FileNotFoundError(f"--label {lab}: no label found for case {name!r}")
            item["label"] = found
        return item

    if input_adc not in (None, ""):
        adc = Path(input_adc).expanduser()
        if not adc.exists():
            raise FileNotFoundError(f"--input_adc {adc}: no such file or folder")
        return [with_label({"dwi": str(src), "adc": str(adc)}, _nifti_stem(src) if _is_nifti(src) else src.name)]
    if src.is_file():
        if re.search(r"(^|_)dwi\.nii(\.gz)?$", src.name, re.I):
            adc = src.with_name(re.sub(r"dwi(\.nii(\.gz)?)$", r"adc\1", src.name, flags=re.I))
            if not adc.is_file():
                raise ValueError(f"{src}: a DWI file needs its ADC: no {adc.name} next to it; pass --input_adc.")
            return [with_label({"dwi": str(src), "adc": str(adc)}, _nifti_stem(src))]
        if _is_nifti(src):
            return [with_label(two_channel(src), _nifti_stem(src))]
        raise ValueError(f"{src}: pass its ADC with --input_adc (DWI and ADC are needed), or a 2-channel NIfTI file")
    niftis = sorted(p for p in src.rglob("*") if p.is_file() and _is_nifti(p))
    if not niftis:
        if holds_dicom_files(src):
            raise ValueError(
                f"{src} is a DICOM series folder: the stroke model needs DWI and ADC, which are separate series; "
                "pass the DWI folder as --input and the ADC folder as --input_adc."
            )
        raise FileNotFoundError(f"{src}: no NIfTI files (*.nii, *.nii.gz) and no DICOM series in this folder")
    items: list[dict[str, Any]] = []
    used: set[Path] = set()
    for p in niftis:
        if re.search(r"(^|_)dwi\.nii(\.gz)?$", p.name, re.I):
            adc = p.with_name(re.sub(r"dwi(\.nii(\.gz)?)$", r"adc\1", p.name, flags=re.I))
            used.add(p)
            if adc.is_file():
                items.append(with_label({"dwi": str(p), "adc": str(adc)}, _nifti_stem(p), p.parent.name))
                used.add(adc)
            else:
                logger.warning("%s: no ADC file %s next to it; skipped", p, adc.name)
    for p in niftis:
        if p in used or "derivatives" in p.parts or (work is not None and work.resolve() in p.resolve().parents):
            continue
        if re.search(r"(^|_)(adc|msk|mask|seg|label|flair)\.nii(\.gz)?$", p.name, re.I):
            continue
        items.append(with_label(two_channel(p), _nifti_stem(p)))
    if not items:
        raise FileNotFoundError(f"{src}: found NIfTI files but no case (no *_dwi + *_adc pair, no 2-channel file)")
    if lab is not None and lab.is_file() and len(items) > 1:
        raise ValueError(
            f"--label {lab} is one label file but --input {src} holds {len(items)} cases: pass a folder of labels "
            "named by case (<case>_msk.nii.gz, _seg, _label, _mask or <case>.nii.gz)"
        )
    return items


def stroke_output_name(metadict: dict, saver: Any) -> dict[str, Any]:
    """``SaveImaged(output_name_formatter=...)`` for the stroke bundle: name outputs after the case, not the ADC.

    The prediction's metadata come from the ADC file (eADC is the first channel), so the default name would
    be ``<..._adc>_seg``; this drops a trailing ``_adc`` (``sub-x_ses-1_adc`` -> ``sub-x_ses-1``) and uses the
    folder name for generic names (``case003/adc.nii.gz`` -> ``case003``).
    """
    from monai.utils import ImageMetaKey

    name = metadict.get(ImageMetaKey.FILENAME_OR_OBJ, "") if metadict else ""
    if isinstance(name, (list, tuple)):
        name = name[0] if name else ""
    p = Path(str(name))
    stem = _nifti_stem(p) if _is_nifti(p) else (p.stem if p.suffix.lower() in (".mha", ".mhd", ".nrrd") else p.name)
    stem = re.sub(r"(^|_)adc$", "", stem, flags=re.I)
    if not stem:
        stem = p.parent.name or "case"
    return {"subject": stem, "idx": metadict.get(ImageMetaKey.PATCH_INDEX, None) if metadict else None}


def image_datalist(
    input: str | os.PathLike | None, label: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Datalist of 2D image files (PNG/JPEG/...) for the polyp bundle.

    Args:
        input: an image file or a folder of images (not recursive; a Kvasir-style ``images/`` subfolder is used
            if the folder has one).
        label: optional mask file (one image only: refused for several), or a folder of masks with the same file
            names (Kvasir ``masks/``).
    """
    if input is None or str(input) == "":
        raise ValueError("set --input: an image file or a folder of images (see docs).")
    src = Path(input).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"--input {src}: no such file or folder")
    if src.is_dir() and (src / "images").is_dir():
        if label in (None, "") and (src / "masks").is_dir():
            label = src / "masks"
        src = src / "images"
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.suffix.lower() in _IMAGE_EXT)
    if not files:
        raise FileNotFoundError(f"{src}: no image files ({', '.join(_IMAGE_EXT)})")
    lab = Path(label).expanduser() if label not in (None, "") else None
    if lab is not None and lab.is_file() and len(files) > 1:
        raise ValueError(f"--label {lab} is one mask file but --input {src} holds {len(files)} images: pass the "
                         "folder of masks (same file names)")
    items = []
    for f in files:
        it: dict[str, Any] = {"image": str(f)}
        if lab is not None:
            cand = lab if lab.is_file() else lab / f.name
            if not cand.is_file():
                matches = sorted(lab.glob(f.stem + ".*")) if lab.is_dir() else []
                if not matches:
                    raise FileNotFoundError(f"--label {lab}: no mask for {f.name}")
                cand = matches[0]
            it["label"] = str(cand)
        items.append(it)
    return items


def ensure_demo_dataset(out_dir: str | os.PathLike, num_cases: int = 12, seed: int = 0) -> str:
    """Write the synthetic demo stroke dataset into ``out_dir`` unless it is there; return its datalist path.

    Args:
        out_dir: folder for the demo data (created if needed).
        num_cases: number of synthetic cases.
        seed: random seed of the generator.
    """
    from monai_patcher.data.demo import write_demo_dataset

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


def insert_after(transforms: Sequence[Any], after: str, *new: Any) -> list[Any]:
    """``transforms`` with ``new`` inserted right after the first transform whose class is named ``after``.

    Lets a config layered over another extend its transform list without depending on positions, e.g.
    ``"$monai_patcher.bundle_utils.insert_after(@train#deterministic_transforms, 'CheckGeometryd',
    monai.transforms.CopyItemsd(keys='label', names='scan_label'))"``.

    Args:
        transforms: the transforms (instances).
        after: class name of the transform to insert after.
        new: the transforms to insert.

    Raises:
        ValueError: when no transform of that class is in the list (the message lists the classes there are).
    """
    names = [type(t).__name__ for t in transforms]
    if after not in names:
        raise ValueError(f"insert_after: no {after} in the transforms ({', '.join(names)}).")
    i = names.index(after) + 1
    return [*transforms[:i], *new, *transforms[i:]]


class PatcherWithGating(nn.Module):
    """Wrap a Patcher so that ``forward`` returns ``{"pred": logits, "gating": maps}`` at the input's size.

    The wrapped network is called with ``return_gating`` switched on; the gating maps
    (``B x 4 x ceil(H/S) x ceil(W/S)`` for a first-stage small patch ``S``, summing to 1 at every pixel) are
    upsampled (bilinear) by ``S`` and cropped to ``H x W``
    so that ``SliceInferer``/``SlidingWindowInferer`` can stitch them and ``Invertd`` can bring them back to the
    input's grid like the logits. Its ``state_dict`` keys are those of the wrapped network prefixed by
    ``network.``: load checkpoints into the wrapped network, not into the wrapper.

    Args:
        network: a :class:`~monai_patcher.networks.Patcher` (or anything with a ``return_gating`` attribute).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        if not hasattr(network, "return_gating"):
            raise TypeError(f"{type(network).__name__} has no `return_gating` attribute: expected a Patcher.")
        self.network = network

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        previous = self.network.return_gating
        self.network.return_gating = True
        try:
            logits, gating = self.network(x)
        finally:
            self.network.return_gating = previous
        h, w = x.shape[-2:]
        # the first stage's stride when the network says it (Patcher.first_stride); guessing it from the sizes,
        # ceil(h / gating height), is wrong for a few small sizes (h = 9 at stride 4: 3 gating rows, ceil = 3)
        stride = getattr(self.network, "first_stride", None)
        if isinstance(stride, int) and stride >= 1:
            sh = sw = stride
        else:
            sh, sw = -(-h // gating.shape[-2]), -(-w // gating.shape[-1])
        gating = F.interpolate(gating, scale_factor=(float(sh), float(sw)), mode="bilinear", align_corners=False)
        return {"pred": logits, "gating": gating[..., :h, :w]}

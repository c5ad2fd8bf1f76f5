"""Finding cases: which files (or DICOM folders) of a folder make up each case, for inference and for datalists.

Stroke inference, for the ``patcher_stroke`` bundle and the batch CLI alike (a case is a DWI + ADC pair):

- :func:`find_cases`: the cases of an input folder as :class:`Case` records, never reading image data; a case that
  cannot be run (a DWI without its ADC, two inputs with one name) carries its ``problem`` instead of stopping the
  others (``python -m monai_patcher.batch_inference``);
- :func:`stroke_inference_datalist`: the ``--input`` of the bundle's inference (a file, a DWI + ADC pair, a folder
  searched recursively, with optional labels) as a MONAI datalist;
- :func:`split_two_channel`: a 2-channel NIfTI (``X x Y x Z x 2``) written as two 3D files, its header kept;
- :func:`stroke_output_name`: ``SaveImaged``'s file names, after the case rather than the ADC file.

Polyp images: :func:`image_datalist` (a file or a folder of images, optional masks by name).

Dataset layouts, for :mod:`monai_patcher.data.datalists`: :func:`find_isles22_cases` (ISLES'22 BIDS),
:func:`find_case_folders` (one folder per case, files matched by glob patterns) and :func:`find_image_mask_pairs`
(Kvasir-SEG style ``images/`` + ``masks/``).

File names are matched with the one table of image suffixes, :mod:`monai_patcher.data.readers.suffixes`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import DataError
from .readers.dicom import holds_dicom_files
from .readers.nifti_header import read_nifti_bytes
from .readers.suffixes import VOLUME_FORMATS, strip_suffix, suffix_of, suffixes

__all__ = [
    "Case",
    "find_cases",
    "split_two_channel",
    "stroke_inference_datalist",
    "stroke_output_name",
    "case_id",
    "image_datalist",
    "find_isles22_cases",
    "find_case_folders",
    "find_image_mask_pairs",
]

logger = logging.getLogger(__name__)

# names of files that are not scans: labels, masks, outputs of an earlier run
_LABEL_RE = re.compile(r"(^|_)(msk|mask|seg|label|labels|prob)(\.|$)", re.I)
# what a scan's name says about its modality (case folders: ``dwi.nii.gz``, ``DWI/``, ``trace_b1000/``, ``ADC/``)
_MODALITY_RE = {"dwi": re.compile(r"dwi|trace", re.I), "adc": re.compile(r"adc", re.I)}
# ``<stem>_dwi.<ext>`` / ``<stem>_adc.<ext>`` (ISLES'22 / BIDS naming); the stem may be empty (``dwi.nii.gz``)
_PAIR_RE = re.compile(r"^(?P<stem>(?:.*_)?)(?P<mod>dwi|adc)$", re.I)


def _pair_name(name: str, formats: str | Sequence[str] = VOLUME_FORMATS) -> tuple[str, str, str] | None:
    """``(stem, modality, partner file name)`` of a ``<stem>_dwi.<ext>`` / ``<stem>_adc.<ext>`` file name (the
    partner has the other modality, in lower case, and the same stem and suffix); None for other names."""
    suffix = suffix_of(name, formats)
    m = _PAIR_RE.match(name[: -len(suffix)]) if suffix else None
    if m is None:
        return None
    mod = m["mod"].lower()
    other = "adc" if mod == "dwi" else "dwi"
    return m["stem"][:-1], mod, f"{m['stem']}{other}{name[len(name) - len(suffix):]}"


# ------------------------------------------------------------------------------------------ stroke inference


@dataclass
class Case:
    """One stroke case: its name (output prefix) and either a 2-channel file or a DWI + ADC pair (files or folders).

    Args:
        name: the case's name; outputs are ``<name>_seg.nii.gz`` etc.
        two_channel: a 2-channel NIfTI file (``X x Y x Z x 2``).
        dwi, adc: the DWI and ADC files or DICOM series folders.
        problem: why the case cannot be run, found while discovering it (e.g. a DWI without its ADC).
        folder: the case folder (``<case>/`` layout).
    """

    name: str
    two_channel: str | None = None
    dwi: str | None = None
    adc: str | None = None
    problem: str | None = None
    folder: str | None = None

    @property
    def source(self) -> str:
        """The file (or folder) that identifies this case in reports: always a path."""
        return self.two_channel or self.folder or self.dwi or self.adc or self.name

    def items(self, work_dir: str | os.PathLike, channel_order: Sequence[str] = ("dwi", "adc")) -> dict[str, str]:
        """The ``{"dwi", "adc"}`` paths of the case; a 2-channel file is checked, then split into ``work_dir``
        (:func:`split_two_channel`).

        Raises:
            ValueError: the case's ``problem``, or a 2-channel file that is not one (the message names the file).
        """
        if self.problem:
            raise ValueError(self.problem)
        if self.two_channel is None:
            return {"dwi": str(self.dwi), "adc": str(self.adc)}
        return split_two_channel(self.two_channel, work_dir, channel_order)


def _is_scan_file(p: Path) -> bool:
    return p.is_file() and suffix_of(p.name, VOLUME_FORMATS) is not None and not p.name.startswith(".")


def _case_from_folder(folder: Path) -> Case:
    found: dict[str, list[Path]] = {"dwi": [], "adc": []}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or (p.is_file() and (not _is_scan_file(p) or _LABEL_RE.search(strip_suffix(p.name)))):
            continue
        for key, rx in _MODALITY_RE.items():
            if rx.search(strip_suffix(p.name)):
                found[key].append(p)
    case = Case(folder.name, folder=str(folder))
    for key in ("dwi", "adc"):
        if len(found[key]) == 1:
            setattr(case, key, str(found[key][0]))
        elif not found[key]:
            case.problem = f"{folder}: case folder has no {key.upper()} (a file or DICOM folder whose name contains {key!r})"
        else:
            case.problem = f"{folder}: case folder has several {key.upper()} candidates: {[q.name for q in found[key]]}"
    return case


def find_cases(input_dir: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Case]:
    """The cases in ``input_dir``, never reading image data (not recursive beyond one level of case folders).

    A case is one of:

    - ``<case>.nii[.gz]``: one 2-channel NIfTI (``X x Y x Z x 2``);
    - ``<case>_dwi.<ext>`` + ``<case>_adc.<ext>`` (ISLES'22/BIDS naming; NIfTI, MHA, NRRD);
    - ``<case>/``, a folder with one DWI and one ADC, each a file or a DICOM series folder whose name contains
      ``dwi`` (or ``trace``) / ``adc`` (``case1/dwi.nii.gz`` + ``case1/adc.nii.gz``, ``case1/DWI/*.dcm`` +
      ``case1/ADC/*.dcm``).

    Files named like labels (``*_msk``, ``*_mask``, ``*_seg``, ``*_label``, ``*_prob``) are ignored. A case that
    cannot be run (a DWI without its ADC, a case folder without one of them, two inputs with the same case name)
    is returned with its ``problem`` set.

    Args:
        input_dir: the input folder.
        exclude: folders that are not cases even if they are in ``input_dir`` (the output folder, when it is
            inside the input folder: ``--input scans --output scans/masks``); compared after resolving.

    Raises:
        FileNotFoundError: ``input_dir`` does not exist or holds no case.

    Example:
        >>> cases = find_cases("scans/")  # doctest: +SKIP
        >>> [(c.name, c.problem) for c in cases]  # doctest: +SKIP
        [('case1', None), ('case2', 'scans/case2_dwi.nii.gz: no ADC file (case2_adc.nii.gz) next to this DWI file')]
    """
    src = Path(input_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"--input {src}: no such folder")
    excluded = {Path(p).resolve() for p in exclude}
    cases: list[Case] = []
    files = sorted(p for p in src.iterdir() if _is_scan_file(p))
    pairs: dict[tuple[str, str], Path] = {}  # (stem, modality) -> the first file, whatever its suffix
    for p in files:
        pair = _pair_name(p.name)
        if pair is not None and pair[0]:
            pairs.setdefault((pair[0].lower(), pair[1]), p)
    used: set[str] = set()
    for p in files:
        pair = _pair_name(p.name)
        if pair is None or not pair[0] or p.name in used:
            continue
        stem, mod, partner_name = pair
        other = "adc" if mod == "dwi" else "dwi"
        partner = pairs.get((stem.lower(), other))
        used.add(p.name)
        case = Case(stem, **{mod: str(p)})
        if partner is None:
            case.problem = f"{p}: no {other.upper()} file ({partner_name}) next to this {mod.upper()} file"
        else:
            used.add(partner.name)
            setattr(case, other, str(partner))
        cases.append(case)
    for p in files:
        if p.name in used or _LABEL_RE.search(strip_suffix(p.name)):
            continue
        cases.append(Case(strip_suffix(p.name), two_channel=str(p)))
    for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.resolve() not in excluded:
            cases.append(_case_from_folder(d))
    if not cases:
        raise FileNotFoundError(f"--input {src}: no case found (NIfTI/MHA/NRRD files or case folders)")
    names = [c.name for c in cases]
    for c in cases:  # two inputs that would write the same output
        if names.count(c.name) > 1 and c.problem is None:
            c.problem = f"{c.source}: another input has the same case name {c.name!r}; rename one of them"
    return cases


def split_two_channel(
    path: str | os.PathLike, work_dir: str | os.PathLike, order: Sequence[str] = ("dwi", "adc")
) -> dict[str, str]:
    """Write the two channels of a 2-channel NIfTI (``X x Y x Z x 2``) as two 3D NIfTI files into ``work_dir``.

    The channel files keep the file's header, qform and sform, so they are read exactly where the 2-channel file
    is; they are named ``<name>_<key>.nii.gz``. The file is validated (header, declared size, reading budget) and
    read once before nibabel parses it (:func:`~monai_patcher.data.readers.nifti_header.read_nifti_bytes`).

    Args:
        path: the 2-channel NIfTI file.
        work_dir: where to write the channel files (created if needed).
        order: the meaning of the channels, ``("dwi", "adc")`` or ``("adc", "dwi")``.

    Returns:
        ``{"dwi": path, "adc": path}`` of the channel files.

    Raises:
        ValueError: ``order`` does not name ``dwi`` and ``adc`` once each; the file is not a NIfTI, not
            ``X x Y x Z x 2``, or unreadable (empty, truncated, corrupt). The message names the file.
    """
    import nibabel as nib
    import numpy as np

    path = Path(path)
    order = [str(o).lower() for o in order]
    if sorted(order) != ["adc", "dwi"]:
        raise ValueError(f"two_channel_order must name 'dwi' and 'adc' once each, got {list(order)}")
    if suffix_of(path.name, "nifti") is None:
        raise ValueError(
            f"{path}: a single file must be a 2-channel NIfTI; name single-modality files <case>_dwi / <case>_adc"
        )
    try:
        shape = nib.load(str(path)).shape  # the header only: nibabel's own reasons for a file that is no NIfTI
        if len(shape) != 4 or shape[3] != 2:
            raise ValueError(
                f"{path}: expected a 2-channel volume (X x Y x Z x 2, channels {'/'.join(order).upper()}), got shape "
                f"{tuple(shape)}; give a single-modality file with its partner (<case>_dwi / <case>_adc, or the "
                "ADC as --input_adc)"
            )
        raw, layout = read_nifti_bytes(path)  # validated (every field, declared size, reading budget), read once
        img = (nib.Nifti2Image if layout.version == 2 else nib.Nifti1Image).from_bytes(raw)
        del raw
        data = np.asanyarray(img.dataobj)
    except DataError as e:  # the validation's reason, said as this function says it
        problem = str(e)[len(f"{path}: "):] if str(e).startswith(f"{path}: ") else str(e)
        raise DataError.for_file(path, f"cannot read this 2-channel NIfTI file: {problem}") from None
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read this 2-channel NIfTI file: {str(e).splitlines()[0]}") from None
    except Exception as e:  # nibabel: ImageFileError, EOFError (truncated gzip), OSError (truncated file), ...
        raise ValueError(
            f"{path}: cannot read this 2-channel NIfTI file (empty, truncated or corrupt?): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
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
        target = work / f"{strip_suffix(path.name, 'nifti')}_{key}.nii.gz"
        nib.save(ch, str(target))
        out[key] = str(target)
    return out


def _find_label(stem: str, label_dir: Path | None, case_folder: str | None = None) -> str | None:
    """The label of case ``stem`` in ``label_dir``; a file named just ``dwi``/``adc`` (case-folder layout,
    ``case003/dwi.nii.gz``) is named by its ``case_folder``."""
    if label_dir is None:
        return None
    bases = [stem, re.sub(r"_(dwi|adc)$", "", stem, flags=re.I)]
    if case_folder and re.fullmatch(r"dwi|adc", stem, re.I):
        bases = [case_folder]
    for suffix in ("_msk", "_seg", "_label", "_mask", ""):
        for ext in suffixes("nifti"):
            for base in dict.fromkeys(bases):
                p = label_dir / f"{base}{suffix}{ext}"
                if p.is_file():
                    return str(p)
    return None


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

    Example (``inference.json``)::

        "inference_datalist": "$monai_patcher.data.cases.stroke_inference_datalist(@input, input_adc=@input_adc,
                               label=@label, work_dir=@output_dir + '/_channels')"
    """
    if input is None or str(input) == "":
        raise ValueError("set --input: a NIfTI file, a folder of NIfTI files or a DICOM series folder (see docs).")
    src = Path(input).expanduser()
    if not src.exists():
        raise FileNotFoundError(
            f"--input {src}: no such file or folder; pass a DWI file (with --input_adc, or next to its *_adc file), a "
            "2-channel NIfTI, a case folder or a folder of cases."
        )
    lab = Path(label).expanduser() if label not in (None, "") else None
    if lab is not None and not lab.exists():
        raise FileNotFoundError(f"--label {lab}: no such file or folder")
    work = Path(work_dir) if work_dir not in (None, "") else None

    def two_channel(p: Path) -> dict[str, Any]:
        if work is None:
            raise ValueError(f"{p}: a 2-channel file needs a work_dir to write its channels to")
        return split_two_channel(p, work, two_channel_order)

    def with_label(item: dict[str, Any], stem: str, case_folder: str | None = None) -> dict[str, Any]:
        if lab is not None:
            found = str(lab) if lab.is_file() else _find_label(stem, lab, case_folder)
            if not found:
                name = case_folder if case_folder and re.fullmatch(r"dwi|adc", stem, re.I) else stem
                raise FileNotFoundError(f"--label {lab}: no label found for case {name!r}")
            item["label"] = found
        return item

    def dwi_with_adc(p: Path) -> tuple[dict[str, Any], Path] | None:
        """``({"dwi", "adc"}, adc path)`` of a ``*_dwi.nii*`` file; None for other names."""
        pair = _pair_name(p.name, "nifti")
        if pair is None or pair[1] != "dwi":
            return None
        adc = p.with_name(pair[2])
        return {"dwi": str(p), "adc": str(adc)}, adc

    if input_adc not in (None, ""):
        adc = Path(input_adc).expanduser()
        if not adc.exists():
            raise FileNotFoundError(f"--input_adc {adc}: no such file or folder; pass the DWI's ADC file or DICOM folder.")
        return [with_label({"dwi": str(src), "adc": str(adc)}, strip_suffix(src.name, "nifti"))]
    if src.is_file():
        found = dwi_with_adc(src)
        if found is not None:
            if not found[1].is_file():
                raise ValueError(f"{src}: a DWI file needs its ADC: no {found[1].name} next to it; pass --input_adc.")
            return [with_label(found[0], strip_suffix(src.name, "nifti"))]
        if suffix_of(src.name, "nifti") is not None:
            return [with_label(two_channel(src), strip_suffix(src.name, "nifti"))]
        raise ValueError(f"{src}: pass its ADC with --input_adc (DWI and ADC are needed), or a 2-channel NIfTI file")
    niftis = sorted(p for p in src.rglob("*") if p.is_file() and suffix_of(p.name, "nifti") is not None)
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
        found = dwi_with_adc(p)
        if found is None:
            continue
        used.add(p)
        if found[1].is_file():
            items.append(with_label(found[0], strip_suffix(p.name, "nifti"), p.parent.name))
            used.add(found[1])
        else:
            logger.warning("%s: no ADC file %s next to it; skipped", p, found[1].name)
    for p in niftis:
        if p in used or "derivatives" in p.parts or (work is not None and work.resolve() in p.resolve().parents):
            continue
        if re.search(r"(^|_)(adc|msk|mask|seg|label|flair)$", strip_suffix(p.name, "nifti"), re.I):
            continue
        items.append(with_label(two_channel(p), strip_suffix(p.name, "nifti")))
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

    The prediction's metadata come from the ADC (eADC is the first channel), so the default name would be
    ``<..._adc>_seg``; this drops a trailing ``_adc`` (``sub-x_ses-1_adc`` -> ``sub-x_ses-1``) and uses the
    folder name for generic names (``case003/adc.nii.gz`` -> ``case003``). A DICOM series (read by
    :class:`~monai_patcher.data.SimpleITKReader`, which records its ``series_uid``) is named after the series, not
    its folder: its ``SeriesDescription`` (``0008|103e``; characters other than letters, digits, ``.``, ``-`` and
    ``_`` become ``_``, a trailing ``_adc`` is dropped), else its ``SeriesInstanceUID``.

    Example:
        >>> stroke_output_name({"filename_or_obj": "/data/case003/adc.nii.gz"}, None)["subject"]
        'case003'
        >>> stroke_output_name({"filename_or_obj": "/dicom/7", "series_uid": "1.2.3", "0008|103e": "ep2d diff ADC"}, None)["subject"]
        'ep2d_diff'
    """
    from monai.utils import ImageMetaKey

    name = metadict.get(ImageMetaKey.FILENAME_OR_OBJ, "") if metadict else ""
    if isinstance(name, (list, tuple)):
        name = name[0] if name else ""
    index = metadict.get(ImageMetaKey.PATCH_INDEX, None) if metadict else None
    uid = str(metadict.get("series_uid") or "").strip() if metadict else ""
    if uid:  # a DICOM series
        description = re.sub(r"[^A-Za-z0-9._-]+", "_", str(metadict.get("0008|103e") or "")).strip("._-")
        description = re.sub(r"(^|_)adc$", "", description, flags=re.I).strip("._-")
        return {"subject": description or uid, "idx": index}
    p = Path(str(name))
    stem = strip_suffix(p.name, VOLUME_FORMATS)
    stem = re.sub(r"(^|_)adc$", "", stem, flags=re.I)
    if not stem:
        stem = p.parent.name or "case"
    return {"subject": stem, "idx": index}


def case_id(item: Mapping[str, Any], image_key: str = "image") -> str:
    """The id of a datalist item's case after the pipeline: its ``"case"`` entry (the datalists of
    :mod:`monai_patcher.data.datalists` and the demo have one), else the name :func:`stroke_output_name` gives its
    image (``case003/adc.nii.gz`` -> ``case003``). Evaluation CSVs name their rows with it.

    Example (``evaluate.json``, ``MetricsSaver``)::

        "batch_transform": "$lambda x: [{'filename_or_obj': monai_patcher.data.case_id(xx)} for xx in x]"
    """
    case = item.get("case")
    if isinstance(case, (list, tuple)):  # not decollated
        case = case[0] if case else None
    if case not in (None, ""):
        return str(case)
    image = item.get(image_key)
    meta = getattr(image, "meta", None) or item.get(f"{image_key}_meta_dict") or {}
    return str(stroke_output_name(meta, None)["subject"])


# ------------------------------------------------------------------------------------------ polyp images


_IMAGE_INPUT_FIX = {
    "--input": "pass an image file, a folder of images, or a Kvasir-style folder with images/ (and masks/)",
    "--dataset_dir": "set --dataset_dir to the dataset folder: train/ and val/, each with images/ and masks/ "
    "(Kvasir-SEG layout)",
    "--eval_dir": "set --eval_dir to a folder with images/ and masks/",
}


def image_datalist(
    input: str | os.PathLike | None, label: str | os.PathLike | None = None, flag: str = "--input"
) -> list[dict[str, Any]]:
    """Datalist of 2D image files (PNG/JPEG/...) for the polyp bundle.

    Args:
        input: an image file or a folder of images (not recursive; a Kvasir-style ``images/`` subfolder is used
            if the folder has one).
        label: optional mask file (one image only: refused for several), or a folder of masks with the same file
            names (Kvasir ``masks/``).
        flag: the bundle option that sets ``input``, named in the errors with its fix (``"--input"`` in
            ``inference.json``; ``"--dataset_dir"`` in ``train.json``, whose folders are below it).

    Raises:
        FileNotFoundError: ``input`` missing or without images; the message names it, ``flag`` and the fix.
    """
    fix = _IMAGE_INPUT_FIX.get(flag, f"set {flag}")
    if input is None or str(input) == "":
        raise ValueError(f"{flag} is not set: {fix}.")
    src = Path(input).expanduser()
    where = f"--input {src}" if flag == "--input" else f"{src} (from {flag})"
    if not src.exists():
        raise FileNotFoundError(f"{where}: no such file or folder; {fix}.")
    if src.is_dir() and (src / "images").is_dir():
        if label in (None, "") and (src / "masks").is_dir():
            label = src / "masks"
        src = src / "images"
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if suffix_of(p.name, "image2d"))
    if not files:
        raise FileNotFoundError(f"{src}: no image files ({', '.join(suffixes('image2d'))}); {fix}.")
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


# ------------------------------------------------------------------------------------------ dataset layouts


def _files_below(root: Path) -> list[Path]:
    """Files below ``root`` (sorted), following symlinked folders; each real folder is visited once.

    ``Path.rglob`` (Python < 3.13) does not descend into symlinked folders. Paths go through the links as
    found (not resolved); a folder reached twice (a symlink loop, two links to one folder) is read at its
    first path in sorted top-down order, so the result does not depend on file-system order.
    """
    seen: set[str] = set()
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        files += [p for p in (Path(dirpath, f) for f in filenames) if p.is_file()]
    return sorted(files)


def _one(folder: Path, pattern: str, what: str, required: bool = True) -> str | None:
    """The one file of ``folder`` (not below it) whose name matches ``pattern``; None if none and not ``required``."""
    hits = sorted(p for p in folder.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern))
    if not hits:
        if required:
            raise DataError.for_file(folder, f"no {what} file matching {pattern!r}")
        return None
    if len(hits) > 1:
        raise DataError.for_file(folder, f"{len(hits)} files match {pattern!r} for {what}: {[h.name for h in hits]}")
    return str(hits[0])


def _existing_root(root: str | os.PathLike, what: str) -> Path:
    """``root`` made absolute lexically (symbolic links are kept), refused if it is not a folder."""
    path = Path(os.path.abspath(root))
    if not path.is_dir():
        raise DataError.for_file(path, f"{what} does not exist")
    return path


def find_isles22_cases(root: str | os.PathLike, require_label: bool = True) -> list[dict[str, str]]:
    """The cases of an ISLES'22 BIDS folder: ``{"case", "dwi", "adc"[, "label"]}`` each, in case order.

    Layout: ``root/sub-strokecaseNNNN/ses-0001/dwi/*_dwi.nii.gz`` and ``*_adc.nii.gz``; masks in
    ``root/derivatives/**/sub-strokecaseNNNN/**/*_msk.nii.gz``. Also accepted: all files of a case in one
    flat folder (as in the single-case sample). Symlinked folders are followed, paths keep the links.

    Args:
        root: the BIDS root.
        require_label: raise if a case has no mask (default). False: cases without mask get no ``label``.

    Raises:
        DataError: no case found, a case without DWI/ADC (or mask when required), two files of one kind.
    """
    root = _existing_root(root, "ISLES'22 root folder")
    files = [p for p in _files_below(root) if fnmatch.fnmatch(p.name, "*.nii*")]
    cases: dict[str, dict] = {}
    for p in files:
        m = re.match(r"(sub-strokecase\d+)_.*_(dwi|adc|msk)\.nii(\.gz)?$", p.name)
        if not m:
            continue
        case, kind = m.group(1), {"dwi": "dwi", "adc": "adc", "msk": "label"}[m.group(2)]
        entry = cases.setdefault(case, {"case": case})
        if kind in entry:
            raise DataError.for_file(p, f"second {kind} file for {case} (first: {entry[kind]})")
        entry[kind] = str(p)
    if not cases:
        raise DataError.for_file(root, "no ISLES'22 case files (sub-strokecaseNNNN_*_dwi/adc.nii.gz) found")
    for case, entry in cases.items():
        for k in ("dwi", "adc") + (("label",) if require_label else ()):
            if k not in entry:
                raise DataError.for_file(root, f"case {case} has no {k} file")
    return list(cases.values())


def find_case_folders(
    root: str | os.PathLike, patterns: dict[str, str], optional: Sequence[str] = ()
) -> list[dict[str, str]]:
    """The cases of a "one folder per case" layout: ``{"case", <key>: file, ...}`` each, in folder order.

    Every folder below ``root`` (symlinked folders included) that holds a file matching the first non-optional
    pattern is a case; the case name is the folder's path relative to ``root`` (through the links).

    Args:
        root: folder holding the case folders (at any depth).
        patterns: ``{key: glob on the file name}``; exactly one file per case must match each.
        optional: keys that may be missing in a case.

    Raises:
        DataError: no case folder; a case without a required file, or with several files for one key.

    Example:
        >>> find_case_folders("BraTS2015", {"dwi": "Flair*.nii.gz", "label": "OTMultiClass*.nii.gz"})  # doctest: +SKIP
    """
    root = _existing_root(root, "folder")
    first_key = next(k for k in patterns if k not in optional)
    folders = sorted({p.parent for p in _files_below(root) if fnmatch.fnmatch(p.name, patterns[first_key])})
    if not folders:
        raise DataError.for_file(root, f"no case folder with a file matching {patterns[first_key]!r}")
    cases = []
    for f in folders:
        item = {"case": str(f.relative_to(root))}
        for k, pat in patterns.items():
            path = _one(f, pat, k, required=k not in optional)
            if path is not None:
                item[k] = path
        cases.append(item)
    return cases


def find_image_mask_pairs(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Kvasir-SEG style ``images/`` + ``masks/`` folders: ``{"case", "image", "label"}`` per image, matched by
    file name without suffix; every image needs a mask and every mask an image.

    Raises:
        DataError: a folder missing, an image without mask, masks without image, no image.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataError.for_file(images_dir.parent, "expected an images/ and a masks/ folder")
    masks = {p.stem: p for p in masks_dir.iterdir() if suffix_of(p.name, "image2d")}
    items = []
    for img in sorted(p for p in images_dir.iterdir() if suffix_of(p.name, "image2d")):
        if img.stem not in masks:
            raise DataError.for_file(img, f"no mask with the same name in {masks_dir}")
        items.append({"case": img.stem, "image": str(img), "label": str(masks.pop(img.stem))})
    if masks:
        raise DataError.for_file(masks_dir, f"{len(masks)} masks without an image, e.g. {sorted(masks)[:3]}")
    if not items:
        raise DataError.for_file(images_dir, "no images found")
    return items

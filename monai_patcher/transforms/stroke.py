"""Stroke MRI: eADC from ADC, and the ready-made train/validation/inference pipelines (eADC + DWI).

The paper feeds 2-channel slices, (eADC, DWI), where eADC = exp(-b * ADC) is the "exponential ADC"
with b = 1000 s/mm^2 and ADC in mm^2/s. The pipelines below are plain MONAI ``Compose`` objects of
MONAI transforms plus ours, and the one definition of the stroke pipeline: the ``patcher_stroke`` bundle's
``train.json`` and ``inference.json`` and the batch-inference CLI build their preprocessing with them.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from functools import partial

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    AsDiscreted,
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandSpatialCropd,
    RandZoomd,
    Resized,
    Spacingd,
    SpatialPadd,
)
from monai.utils import convert_to_tensor

from ..data.errors import DataError
from ..data.readers import SimpleITKReader
from .checks import CheckGeometryd, CheckVolumed, source_name
from .slices import RandSliced

__all__ = [
    "ADC_UNITS",
    "INPLANE_MODES",
    "ComputeEADCd",
    "detect_adc_unit",
    "stroke_volume_transforms",
    "stroke_train_transforms",
    "stroke_val_transforms",
    "stroke_inference_transforms",
]

logger = logging.getLogger(__name__)

#: ADC units understood by :class:`ComputeEADCd` and their factor to mm^2/s.
ADC_UNITS = {"mm2/s": 1.0, "1e-3mm2/s": 1e-3, "1e-6mm2/s": 1e-6}

#: how the slices reach the network's grid: ``"resize"`` every slice to ``spatial_size`` pixels (the paper),
#: ``"spacing"`` every slice resampled to ``inplane_spacing`` mm (nnU-Net / MONAI: windows tile larger slices)
INPLANE_MODES = ("resize", "spacing")


def detect_adc_unit(adc) -> str:
    """Guess the unit of an ADC map from the median of its positive voxels.

    Brain tissue ADC is about 0.6-1.0e-3 mm^2/s and CSF about 3e-3 mm^2/s, so the median of the positive
    (in-brain) voxels is ~1e-3 in mm^2/s, ~1 in 1e-3 mm^2/s and ~1000 in 1e-6 mm^2/s (the usual DICOM
    scaling, and the ADC maps of ISLES'22 as released). Thresholds sit at the geometric middle: 0.03 and 30.
    (The one ISLES'22 case under ``shared/data`` is a preprocessed copy, values -0.28 to 4.7, so it is
    detected as 1e-3 mm^2/s: see its SOURCE.md.)

    Args:
        adc: the ADC map (any shape).

    Returns:
        a key of :data:`ADC_UNITS`.

    Raises:
        DataError: no positive finite voxel.
    """
    t = convert_to_tensor(adc, track_meta=False).detach().float()  # plain float32: no MetaTensor bookkeeping
    positive = torch.isfinite(t) & (t > 0)
    n = int(positive.sum())
    if n == 0:
        raise DataError("ADC map has no positive voxels: cannot detect its unit")
    # the median (torch.median: the ((n - 1) // 2)-th smallest) is below a threshold exactly when more than
    # (n - 1) // 2 positive voxels are: counting decides the unit without sorting the volume
    rank = (n - 1) // 2
    if int((positive & (t < _float32_bound(0.03))).sum()) > rank:
        return "mm2/s"
    if int((positive & (t < _float32_bound(30.0))).sum()) > rank:
        return "1e-3mm2/s"
    return "1e-6mm2/s"


def _float32_bound(x: float) -> torch.Tensor:
    """The float32 ``b`` with ``v < b`` exactly when ``float(v) < x`` for every float32 ``v`` (a plain ``t < x``
    rounds ``x`` to float32 first, which moves the boundary when ``x`` is not a float32, e.g. 0.03)."""
    b = torch.tensor(x, dtype=torch.float32)
    return torch.nextafter(b, torch.tensor(float("inf"))) if float(b) < x else b


class ComputeEADCd(MapTransform):
    """eADC = exp(-b * ADC), with the ADC unit given or detected.

    Background (``zero_background=True``, the default): voxels where the ADC is 0 or negative are set
    to eADC 0, not exp(0) = 1. ADC == 0 is the background of skull-stripped data (or outside the
    scanner's field of view); negative ADC is not physical: it comes from interpolation/resampling, mostly
    on the brain's edge, where brain meets the zero background (78 voxels on the ISLES'22 case, 60 of them
    touching the background). Either would otherwise become eADC = 1, the brightest value the channel
    can hold, i.e. "maximally restricted diffusion": a lesion-like frame around the head. With 0 they are
    background like the DWI's, and ``NormalizeIntensityd(nonzero=True)`` normalises inside the brain only.

    ``zero_background=False``: the raw formula on ``max(ADC, 0)``: background and negative voxels alike
    give eADC = 1, so negatives look like the background around them (never brighter) and the result is
    in [0, 1]. Use it only for data without a zero background (then normalise without ``nonzero``).

    Unit check: with an explicit ``unit``, a warning (logger ``monai_patcher.transforms.stroke``, naming
    the file) is logged when :func:`detect_adc_unit` finds another unit: a 1000-fold wrong unit either
    empties the eADC channel (exp(-800) is 0 in float32) or makes it ~1 everywhere, silently.

    Args:
        keys: the ADC key(s).
        output_keys: where to write eADC (same length as ``keys``); None overwrites the ADC.
        b_value: b in s/mm^2 (default 1000, as in the paper).
        unit: ``"auto"`` (default: :func:`detect_adc_unit` per volume) or one of :data:`ADC_UNITS`
            (``"mm2/s"``, ``"1e-3mm2/s"``, ``"1e-6mm2/s"``).
        zero_background: ADC <= 0 voxels give eADC 0 (default True, see above).
        allow_missing_keys: skip missing keys.

    The unit used is recorded in the output's metadata (``meta["adc_unit"]``).

    Example:
        >>> import torch
        >>> out = ComputeEADCd("adc", "eadc")({"adc": torch.tensor([[0.0, 0.8, 3.0, -0.1]])})  # 1e-3 mm^2/s
        >>> [round(v, 3) for v in out["eadc"][0].tolist()]
        [0.0, 0.449, 0.05, 0.0]
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None = None,
        b_value: float = 1000.0,
        unit: str = "auto",
        zero_background: bool = True,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if unit != "auto" and unit not in ADC_UNITS:
            raise ValueError(f"unit must be 'auto' or one of {list(ADC_UNITS)}, got {unit!r}")
        if b_value <= 0:
            raise ValueError(f"b_value must be positive, got {b_value}")
        out = self.keys if output_keys is None else ((output_keys,) if isinstance(output_keys, str) else tuple(output_keys))
        if len(out) != len(self.keys):
            raise ValueError(f"output_keys {out} must match keys {self.keys} in length")
        self.output_keys = out
        self.b_value = float(b_value)
        self.unit = unit
        self.zero_background = zero_background

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            adc = d[key]
            plain = convert_to_tensor(adc, track_meta=False)  # no MetaTensor bookkeeping per operation
            if not torch.isfinite(plain).all():
                raise DataError(f"{source_name(d, key)}: ADC map contains NaN/Inf voxels")
            if self.unit == "auto":
                try:
                    unit = detect_adc_unit(plain)
                except DataError as e:
                    raise DataError(f"{source_name(d, key)}: {e}") from None
            else:
                unit = self.unit
                self._check_unit(plain, unit, d, key)
            eadc = torch.exp((plain.float().clamp(min=0) * ADC_UNITS[unit]).mul_(-self.b_value))
            if self.zero_background:
                eadc.masked_fill_(plain <= 0, 0.0)
            if isinstance(adc, MetaTensor):
                eadc = MetaTensor(eadc, meta=dict(adc.meta), applied_operations=list(adc.applied_operations))
                eadc.meta["adc_unit"] = unit
            d[out_key] = eadc
        return d

    @staticmethod
    def _check_unit(t: torch.Tensor, unit: str, d: Mapping, key: Hashable) -> None:
        try:
            detected = detect_adc_unit(t)
        except DataError:
            return  # no positive voxel: nothing to compare (the eADC is all background anyway)
        if detected != unit:
            pos = t[torch.isfinite(t) & (t > 0)].float()
            logger.warning(
                "%s: ADC unit given as %r, but the values look like %r (median of the positive voxels %.4g); "
                "with a 1000-fold wrong unit the eADC channel is ~0 or ~1 everywhere. Check the unit, or use "
                "unit='auto'.", source_name(d, key), unit, detected, float(pos.median()))


def _reader(reader, b_value: float):
    # a DWI DICOM series may hold several b-values: the reader takes the one the eADC is computed for
    return SimpleITKReader(b_value=b_value) if reader is None else reader


def _inplane_transform(mode: str, spacing: Sequence[float] | None, spatial_size: int, axis: int):
    """``keys, mode -> transform``: the in-plane step of ``mode`` (see :func:`stroke_volume_transforms`)."""
    if mode not in INPLANE_MODES:
        raise ValueError(f"inplane_mode must be one of {list(INPLANE_MODES)}, got {mode!r}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis!r}")
    if mode == "resize":
        size = [int(spatial_size)] * 3
        size[axis] = -1  # the slice axis keeps its size
        return partial(Resized, spatial_size=size)
    if spacing is None or len(spacing) != 2 or not all(float(v) > 0 for v in spacing):
        raise ValueError(f"inplane_mode 'spacing' needs inplane_spacing, two positive in-plane voxel sizes (mm), "
                         f"got {spacing!r}")
    pixdim = [float(v) for v in spacing]
    pixdim.insert(axis, -1.0)  # non-positive: Spacingd keeps the scan's own spacing along the slice axis
    return partial(Spacingd, pixdim=pixdim)


def stroke_volume_transforms(
    dwi_key: str = "dwi",
    adc_key: str = "adc",
    label_key: str | None = "label",
    image_key: str = "image",
    spatial_size: int = 256,
    axis: int = 2,
    inplane_mode: str = "resize",
    inplane_spacing: Sequence[float] | None = None,
    b_value: float = 1000.0,
    adc_unit: str = "auto",
    reader=None,
    scan_label_key: str | None = None,
) -> Compose:
    """The deterministic (cacheable) part of the stroke pipeline, volume level: the one definition of it.

    ``LoadImaged(reader=SimpleITKReader)`` -> ``EnsureChannelFirstd`` -> ``CheckVolumed`` (DWI, ADC: 3D, one
    volume each, finite, not constant; label: 3D, finite) -> ``CheckGeometryd`` (DWI, ADC, label share one grid) ->
    ``ComputeEADCd`` -> ``ConcatItemsd([eadc, dwi] -> image)`` -> ``DeleteItemsd`` (the single channels) ->
    ``Orientationd("RAS")`` -> ``NormalizeIntensityd(nonzero, channel_wise)`` ->
    ``AsDiscreted(label, threshold=0.5)`` (label > 0.5 -> 1, so multi-class labels become "lesion") -> the
    in-plane step, one of :data:`INPLANE_MODES` (label: nearest; the slice axis is never resampled):

    - ``"resize"`` (the paper): ``Resized`` to ``spatial_size`` x ``spatial_size``: every slice fills one
      ``spatial_size`` window whatever its resolution or field of view;
    - ``"spacing"`` (nnU-Net / MONAI): ``Spacingd`` of the in-plane axes to ``inplane_spacing`` mm (the slice axis
      keeps its own spacing and its voxels): every scan reaches the network at one physical pixel size, and
      training crops / inference windows of ``spatial_size`` pixels tile slices larger than that (smaller ones
      are padded).

    The stroke bundle's ``train.json`` (up to the slice sampler) and ``inference.json``, and the batch-inference
    CLI, build their preprocessing with this function (``inference.json``: :func:`stroke_inference_transforms`).

    Output: ``image`` (2, S, S, D) float32 (channel 0 = eADC, channel 1 = DWI, each zero-mean unit-variance
    over the non-zero voxels) and ``label`` (1, S, S, D) in {0, 1} for ``axis=2``.

    Args:
        dwi_key, adc_key, label_key: datalist keys (label_key None: no label, inference).
        image_key: key of the stacked 2-channel image.
        spatial_size: in-plane size after resizing (``"resize"``; the paper: 256). With ``"spacing"`` it is not
            used here: it is the size of the training crops and inference windows that follow.
        axis: slice axis (spatial, after RAS orientation; 2 = axial).
        inplane_mode: ``"resize"`` (default, the paper's) or ``"spacing"``, see above.
        inplane_spacing: the in-plane voxel size (mm) of ``"spacing"``, two values for the two in-plane axes in
            RAS order (e.g. ``(2.0, 2.0)``; ``python -m monai_patcher.data.spacing`` gives a training datalist's
            median). Required with ``"spacing"``; ``"resize"`` ignores it (so a bundle keeps one value for both modes).
        b_value: b for eADC, and the b-value the default reader takes from a DICOM series holding several.
        adc_unit: ADC unit (``"auto"`` to detect).
        reader: the image reader (default ``SimpleITKReader(b_value=b_value)``).
        scan_label_key: a label to load with the scans when an item has one (items without it are fine), checked
            like ``label_key`` and against the scans' grid, and left in that grid (not reoriented or resized): for
            comparing with the prediction inverted to the scan's grid (the inference overlays). Not with
            ``label_key``.

    Example:
        >>> xf = stroke_volume_transforms(spatial_size=64)  # doctest: +SKIP
        >>> xf({"dwi": "case1_dwi.nii.gz", "adc": "case1_adc.nii.gz", "label": "case1_msk.nii.gz"})["image"].shape  # doctest: +SKIP
        torch.Size([2, 64, 64, 73])
    """
    if label_key and scan_label_key:
        raise ValueError(f"give label_key ({label_key!r}) or scan_label_key ({scan_label_key!r}), not both.")
    inplane = _inplane_transform(inplane_mode, inplane_spacing, spatial_size, axis)
    img_keys = [dwi_key, adc_key]
    all_keys = img_keys + ([label_key] if label_key else [])
    xs = [
        LoadImaged(all_keys, reader=_reader(reader, b_value), image_only=True),
        EnsureChannelFirstd(all_keys),
    ]
    if scan_label_key:
        xs += [
            LoadImaged(scan_label_key, reader=_reader(reader, b_value), image_only=True, allow_missing_keys=True),
            EnsureChannelFirstd(scan_label_key, allow_missing_keys=True),
        ]
    xs.append(CheckVolumed(img_keys, spatial_dims=3, num_channels=1))  # a 4D DWI of several b-values: said so
    if label_key or scan_label_key:  # a scan label may be missing (inference without one)
        label = label_key or scan_label_key
        xs.append(CheckVolumed(label, spatial_dims=3, allow_constant=True, allow_missing_keys=not label_key))
    keys = [image_key] + ([label_key] if label_key else [])
    xs += [
        CheckGeometryd(all_keys + ([scan_label_key] if scan_label_key else []), allow_missing_keys=bool(scan_label_key)),
        ComputeEADCd(adc_key, "eadc", b_value=b_value, unit=adc_unit),
        ConcatItemsd(["eadc", dwi_key], image_key),
        DeleteItemsd(["eadc", dwi_key, adc_key]),
        # spatial transforms after stacking, so that Invertd on the image undoes them
        Orientationd(keys, axcodes="RAS", labels=None),
    ]
    xs.append(NormalizeIntensityd(image_key, nonzero=True, channel_wise=True))
    if label_key:
        xs.append(AsDiscreted(label_key, threshold=0.5))
    xs.append(inplane(keys, mode=["bilinear"] + (["nearest"] if label_key else [])))
    xs.append(EnsureTyped(keys, dtype=torch.float32, track_meta=True))
    return Compose(xs)


def stroke_train_transforms(
    dwi_key: str = "dwi",
    adc_key: str = "adc",
    label_key: str = "label",
    image_key: str = "image",
    spatial_size: int = 256,
    axis: int = 2,
    pos_ratio: float = 0.5,
    num_samples: int = 4,
    scale_range: tuple[float, float] = (0.7, 2.0),
    **volume_kwargs,
) -> Compose:
    """Stroke training pipeline: :func:`stroke_volume_transforms`, then random 2D slices and the paper's augmentation.

    ... -> ``RandSliced(pos_ratio, num_samples)`` -> ``RandZoomd(0.7-2.0, keep_size=False)`` ->
    ``SpatialPadd(256)`` -> ``RandSpatialCropd(256)``. Use it with ``CacheDataset``: everything before
    ``RandSliced`` (reading, orientation, eADC, normalisation, in-plane resize) is cached.

    Args:
        pos_ratio: probability that a sampled slice contains lesion.
        num_samples: slices per case per epoch (so the batch holds ``batch_size * num_samples`` slices).
        scale_range: random rescale factors (the paper: 0.7-2.0).
        volume_kwargs: passed to :func:`stroke_volume_transforms` (``inplane_mode``, ``inplane_spacing``,
            ``b_value``, ``adc_unit``, ``reader``).
        (other arguments: as in :func:`stroke_volume_transforms`)
    """
    base = stroke_volume_transforms(dwi_key, adc_key, label_key, image_key, spatial_size, axis, **volume_kwargs)
    keys = [image_key, label_key]
    return Compose(
        list(base.transforms)
        + [
            RandSliced(keys, label_key=label_key, axis=axis, pos_ratio=pos_ratio, num_samples=num_samples,
                       image_key=image_key),
            RandZoomd(keys, prob=1.0, min_zoom=scale_range[0], max_zoom=scale_range[1], keep_size=False,
                      mode=["bilinear", "nearest"], padding_mode="constant"),
            SpatialPadd(keys, spatial_size=(spatial_size, spatial_size)),
            RandSpatialCropd(keys, roi_size=(spatial_size, spatial_size), random_size=False),
        ]
    )


def stroke_val_transforms(**kwargs) -> Compose:
    """Validation/evaluation: :func:`stroke_volume_transforms` with a label; slice with ``SliceDataset`` or ``SliceInferer``.

    Args:
        kwargs: as :func:`stroke_volume_transforms`.
    """
    return stroke_volume_transforms(**kwargs)


def stroke_inference_transforms(label_key: str | None = None, **kwargs) -> Compose:
    """Inference: :func:`stroke_volume_transforms` without a label in the network's grid.

    Run the 2D network with ``SliceInferer(roi_size=(256, 256), spatial_dim=2)`` on ``image``, then
    ``Invertd`` (undoes the resize and the orientation) and ``SaveImaged``: the mask comes out in the
    DWI's own grid. The stroke bundle's ``inference.json`` and the batch-inference CLI both use it.

    Args:
        label_key: an optional label (overlays), loaded when an item has one and kept in the scan's own grid,
            where the inverted prediction is (``scan_label_key`` of :func:`stroke_volume_transforms`).
        kwargs: as :func:`stroke_volume_transforms` (its ``label_key`` is None here).

    Example (``inference.json``)::

        "preprocessing": {"_target_": "monai_patcher.transforms.stroke_inference_transforms",
                          "label_key": "label", "spatial_size": "@spatial_size", "axis": "@slice_axis",
                          "b_value": "@b_value", "adc_unit": "@adc_unit"}
    """
    kwargs["label_key"] = None
    return stroke_volume_transforms(scan_label_key=label_key, **kwargs)

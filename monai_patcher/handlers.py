"""Ignite handlers and metrics for the Patcher bundles.

- :class:`SliceDiceMetric` / :class:`SliceMeanDice`: Dice per 2D slice of 3D predictions (the paper scores
  stroke segmentation per slice and per case; MONAI's ``MeanDice`` gives the per-case value).
- :class:`OverlayWriter`: PNG overlays of each prediction (TP green, FP red, FN white) after the
  evaluator's post-processing, for 3D volumes (one PNG per slice with foreground) and 2D images.
- :class:`GatingMapWriter`: PNG pictures of the mixture-of-experts gating maps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.metrics.meandice import compute_dice
from monai.metrics.meaniou import compute_iou
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction, min_version, optional_import

from .data.readers.suffixes import strip_suffix
from .visualize import gating_rgb, overlay, save_png, volume_overlays

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")
Engine, _ = optional_import("ignite.engine", "0.4.4", min_version, "Engine")

__all__ = ["SliceDiceMetric", "SliceIoUMetric", "SliceMeanDice", "SliceMeanIoU", "OverlayWriter", "GatingMapWriter"]


# anatomical plane -> the RAS world axis its slices are stacked along (MONAI affines map voxels to RAS)
_PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}


def _orientation(affine: torch.Tensor) -> np.ndarray:
    """nibabel's ``io_orientation`` of a 3D grid's affine: per array axis, its RAS world axis and direction (+-1)."""
    from nibabel.orientations import io_orientation

    return io_orientation(np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu())[:4, :4])


def _plane_axis(affine: torch.Tensor, plane: str, ornt: np.ndarray | None = None) -> int:
    """The array axis (0-2) of a 3D grid along the world axis normal to ``plane``, as nibabel's ``io_orientation``
    assigns them (what ``Orientationd`` uses, so on an oblique scan it is the axis the network sliced along; a
    per-row argmax could give another axis, or two planes the same one)."""
    ornt = _orientation(affine) if ornt is None else ornt
    return int(np.flatnonzero(ornt[:, 0] == _PLANES[plane])[0])


class SliceDiceMetric(CumulativeIterationMetric):
    """Dice of every 2D slice of ``B x C x X x Y x Z`` predictions (slices along ``slice_axis``).

    Each slice of each case is one row of the buffer, so the reduced value is the mean Dice over slices.
    Slices whose ground truth is empty give NaN (ignored by the ``mean`` reduction) when
    ``ignore_empty=True`` (MONAI's convention), else 1 if the prediction is empty too and 0 otherwise.

    Args:
        include_background: keep channel 0 (True for a single sigmoid channel).
        reduction: MONAI reduction over slices and channels (default ``"mean"``).
        get_not_nans: also return the number of non-NaN values.
        ignore_empty: see above.
        slice_axis: spatial axis of the slices (2 = the last of X, Y, Z; axial after RAS orientation), or an
            anatomical plane, ``"sagittal"``, ``"coronal"`` or ``"axial"``: the array axis closest to the
            left-right, anterior-posterior or inferior-superior direction of each prediction's affine (a
            ``MetaTensor``), whatever the orientation of its grid, e.g. predictions inverted to the scan's own grid.

    Example::

        >>> pred = MetaTensor(torch.zeros(1, 1, 8, 8, 4), affine=torch.eye(4))
        >>> SliceDiceMetric(slice_axis="axial")(pred, pred).shape  # 4 slices, 1 channel: NaN (empty truth)
        torch.Size([4, 1])
    """

    def __init__(
        self,
        include_background: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        ignore_empty: bool = True,
        slice_axis: int | str = 2,
    ) -> None:
        super().__init__()
        if isinstance(slice_axis, str):
            if slice_axis not in _PLANES:
                raise ValueError(f"slice_axis must be 0, 1, 2 or one of {list(_PLANES)}, got {slice_axis!r}.")
        elif slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1, 2 or one of {list(_PLANES)}, got {slice_axis!r}.")
        else:
            slice_axis = int(slice_axis)  # e.g. a numpy integer
        self.include_background = include_background
        self.reduction = reduction
        self.get_not_nans = get_not_nans
        self.ignore_empty = ignore_empty
        self.slice_axis = slice_axis

    def _axis(self, x: torch.Tensor) -> int:
        """The spatial axis to cut ``x`` along (``slice_axis`` itself, or the one of its anatomical plane)."""
        if isinstance(self.slice_axis, int):
            return self.slice_axis
        affine = getattr(x, "affine", None)
        if not isinstance(x, MetaTensor) or affine is None:
            raise ValueError(
                f"slice_axis={self.slice_axis!r} needs predictions with an affine (MetaTensor), got {type(x).__name__}."
            )
        affine = torch.as_tensor(affine, dtype=torch.float64)
        if affine.ndim == 3:  # a batch: every item must be cut along the same axis
            axes = {_plane_axis(a, self.slice_axis) for a in affine}
            if len(axes) != 1:
                raise ValueError(f"the {self.slice_axis} axis differs within the batch ({sorted(axes)}).")
            return axes.pop()
        return _plane_axis(affine, self.slice_axis)

    def _to_slices(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        if x.ndim == 4:  # already B x C x H x W
            return torch.as_tensor(x)
        if x.ndim != 5:
            raise ValueError(f"SliceDiceMetric expects B x C x X x Y x Z (or B x C x H x W), got {tuple(x.shape)}")
        x = torch.movedim(torch.as_tensor(x), 2 + axis, 1)  # B x Z x C x X x Y
        return x.reshape(-1, *x.shape[2:])

    def _slices(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if y_pred.shape != y.shape:
            raise ValueError(f"y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)} must have the same shape")
        axis = self._axis(y_pred) if y_pred.ndim == 5 else 0
        return self._to_slices(y_pred, axis), self._to_slices(y, axis)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        p, t = self._slices(y_pred, y)
        return compute_dice(p, t, include_background=self.include_background, ignore_empty=self.ignore_empty)

    def aggregate(self, reduction: MetricReduction | str | None = None):  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


class SliceIoUMetric(SliceDiceMetric):
    """IoU (Jaccard) of every 2D slice of ``B x C x X x Y x Z`` predictions; arguments as :class:`SliceDiceMetric`."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        p, t = self._slices(y_pred, y)
        return compute_iou(p, t, include_background=self.include_background, ignore_empty=self.ignore_empty)


class SliceMeanDice(IgniteMetricHandler):
    """Ignite handler of :class:`SliceDiceMetric`: mean Dice over all 2D slices of the evaluated volumes.

    Use it next to ``MeanDice`` (per-case Dice) in an evaluator's ``additional_metrics``. Its per-slice
    values are not per file, so do not list it in ``MetricsSaver(metric_details=...)``.

    Args:
        include_background, reduction, ignore_empty, slice_axis: as :class:`SliceDiceMetric`.
        output_transform: engine output -> ``(y_pred, y)``, e.g. ``from_engine(["pred", "label"])``.
        save_details: keep the per-slice values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        include_background: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        ignore_empty: bool = True,
        slice_axis: int | str = 2,
        output_transform: Callable = lambda x: x,
        save_details: bool = False,
    ) -> None:
        metric_fn = SliceDiceMetric(include_background, reduction, False, ignore_empty, slice_axis)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class SliceMeanIoU(IgniteMetricHandler):
    """Ignite handler of :class:`SliceIoUMetric`: mean IoU over all 2D slices; arguments as :class:`SliceMeanDice`."""

    def __init__(
        self,
        include_background: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        ignore_empty: bool = True,
        slice_axis: int | str = 2,
        output_transform: Callable = lambda x: x,
        save_details: bool = False,
    ) -> None:
        metric_fn = SliceIoUMetric(include_background, reduction, False, ignore_empty, slice_axis)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


def _case_name(item: Mapping, keys: tuple[Hashable, ...], default: str, formatter: Callable | None = None) -> str:
    for k in keys:
        v = item.get(k)
        meta = getattr(v, "meta", None) or item.get(f"{k}_meta_dict") or {}
        if formatter is not None and meta:
            return str(formatter(meta, None)["subject"])
        name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        if isinstance(name, (list, tuple)):
            name = name[-1] if name else None
        if name:
            return strip_suffix(str(name))
    return default


def _items(output: Any) -> list[Mapping]:
    if isinstance(output, Mapping):
        return [output]
    if isinstance(output, (list, tuple)):
        return [o for o in output if isinstance(o, Mapping)]
    return []


class _ItemWriter:
    """Ignite handler base: after every iteration, ``self.write`` each post-processed item of the output."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        for item in _items(engine.state.output):
            self.write(item)

    def write(self, item: Mapping) -> list[str]:
        raise NotImplementedError


class OverlayWriter(_ItemWriter):
    """Write PNG overlays of predictions (TP green, FP red, FN white, see :mod:`monai_patcher.visualize`).

    Attach to an evaluator whose post-processing leaves, per item, an image, a binary prediction and
    optionally a label of the same spatial shape (e.g. after ``Invertd`` back to the input's grid). 3D items
    (``C x X x Y x Z``) give ``<output_dir>/<case>/slice_<k>.png`` for every slice with foreground in the
    prediction or the label; 2D items (``C x H x W``) give ``<output_dir>/<case>_overlay.png``.

    Args:
        output_dir: folder for the PNGs.
        image_key, pred_key, label_key: keys in the post-processed output (label optional: if missing the
            prediction is drawn green).
        image_channel: the image channel to show for multi-channel volumes (e.g. 1 = DWI of ``[eADC, DWI]``);
            3-channel 2D images are shown in colour.
        name_keys: keys whose ``filename_or_obj`` names the case (first found wins).
        slice_axis: axis to cut 3D volumes along (0-2, drawn as if the array were RAS), or an anatomical plane,
            ``"axial"``, ``"coronal"`` or ``"sagittal"``: read from the prediction's affine (a ``MetaTensor``,
            RAS world as MONAI's readers give), so a volume in any grid orientation, e.g. inverted to a
            sagittal-stored scan's own grid, is cut across that plane and drawn in the RAS view of
            :func:`monai_patcher.visualize.volume_overlays` (anterior/superior up). The PNGs are named by the
            volume's own slice index along the axis cut.
        only_nonempty: 3D: skip slices without foreground.
        alpha: colour opacity.
        output_name_formatter: as ``SaveImaged``'s: ``(metadict, saver) -> {"subject": name, ...}`` naming the
            case from the metadata of the first of ``name_keys`` (default: the file name without extension).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str | None = "label",
        image_channel: int = 0,
        name_keys: tuple[str, ...] | list[str] | None = None,
        slice_axis: int | str = 2,
        only_nonempty: bool = True,
        alpha: float = 0.6,
        output_name_formatter: Callable | None = None,
    ) -> None:
        if isinstance(slice_axis, str) and slice_axis not in _PLANES:
            raise ValueError(f"slice_axis must be 0, 1, 2 or one of {list(_PLANES)}, got {slice_axis!r}.")
        self.output_dir = Path(output_dir)
        self.formatter = output_name_formatter
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.image_channel = image_channel
        self.name_keys = tuple(name_keys) if name_keys else (pred_key, image_key)
        self.slice_axis = slice_axis
        self.only_nonempty = only_nonempty
        self.alpha = alpha
        self._count = 0

    def write(self, item: Mapping) -> list[str]:
        """Write the overlays of one post-processed item; returns the PNG paths."""
        self._count += 1
        name = _case_name(item, self.name_keys, f"case_{self._count:04d}", self.formatter)
        img = torch.as_tensor(item[self.image_key]).detach().cpu().float().numpy()
        pred = torch.as_tensor(item[self.pred_key]).detach().cpu().float().numpy()
        lab = item.get(self.label_key) if self.label_key else None
        lab = None if lab is None else torch.as_tensor(lab).detach().cpu().float().numpy()
        paths = []
        if pred.ndim == 4:  # C x X x Y x Z
            vols = [img[min(self.image_channel, img.shape[0] - 1)], pred[0], None if lab is None else lab[0]]
            axis, index = self.slice_axis, lambda k: k
            if isinstance(axis, str):  # to the RAS grid (axes permuted and flipped), cut along the plane's axis
                vols, axis, index = self._ras_view(item, vols)
            for k, rgb in volume_overlays(*vols, axis, self.only_nonempty, self.alpha):
                paths.append(save_png(rgb, self.output_dir / name / f"slice_{index(k):03d}.png"))
        else:  # C x H x W (2D: MONAI's (W, H) array order from PIL is transposed back to rows x columns)
            shown = np.moveaxis(img[:3], 0, -1) if img.shape[0] >= 3 else img[min(self.image_channel, img.shape[0] - 1)]
            shown = np.swapaxes(shown, 0, 1)
            rgb = overlay(shown, pred[0].T, None if lab is None else lab[0].T, self.alpha)
            paths.append(save_png(rgb, self.output_dir / f"{name}_overlay.png"))
        return paths

    def _ras_view(self, item: Mapping, vols: list) -> tuple[list, int, Callable[[int], int]]:
        """``vols`` (``X x Y x Z``) in RAS order, the RAS axis of ``self.slice_axis`` and the map from a RAS slice
        index back to the volume's own slice index."""
        from nibabel.orientations import apply_orientation

        affine = getattr(item[self.pred_key], "affine", None)
        if not isinstance(item[self.pred_key], MetaTensor) or affine is None:
            raise ValueError(f"slice_axis={self.slice_axis!r} needs a prediction with an affine (MetaTensor), "
                             f"got {type(item[self.pred_key]).__name__}.")
        ornt = _orientation(affine)
        axis = _PLANES[str(self.slice_axis)]
        own = _plane_axis(affine, str(self.slice_axis), ornt)  # the volume's array axis along that RAS axis
        n, flipped = vols[1].shape[own], ornt[own, 1] < 0
        vols = [None if v is None else apply_orientation(v, ornt) for v in vols]
        return vols, axis, (lambda k: n - 1 - k) if flipped else (lambda k: k)


class GatingMapWriter(_ItemWriter):
    """Write the mixture-of-experts gating maps as colour PNGs (expert 1 red, 2 green, 3 blue, 4 yellow).

    Args:
        output_dir: folder for the PNGs.
        gating_key: key of the ``E x X x Y x Z`` (or ``E x H x W``) maps in the post-processed output.
        image_key: optional image to blend under the colours.
        image_channel: image channel shown.
        name_keys: keys naming the case.
        slice_axis: 3D: axis to cut along; every ``every``-th slice is written.
        every: 3D: slice step.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        gating_key: str = "gating",
        image_key: str | None = "image",
        image_channel: int = 0,
        name_keys: tuple[str, ...] | list[str] | None = None,
        slice_axis: int = 2,
        every: int = 1,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.gating_key, self.image_key, self.image_channel = gating_key, image_key, image_channel
        self.name_keys = tuple(name_keys) if name_keys else (gating_key, image_key or gating_key)
        self.slice_axis, self.every = slice_axis, max(1, int(every))
        self._count = 0

    def write(self, item: Mapping) -> list[str]:
        self._count += 1
        name = _case_name(item, self.name_keys, f"case_{self._count:04d}")
        g = torch.as_tensor(item[self.gating_key]).detach().cpu().float().numpy()
        img = None
        if self.image_key and self.image_key in item:
            img = torch.as_tensor(item[self.image_key]).detach().cpu().float().numpy()
            img = img[min(self.image_channel, img.shape[0] - 1)]
        paths = []
        if g.ndim == 4:
            for k in range(0, g.shape[1 + self.slice_axis], self.every):
                gs = np.take(g, k, axis=1 + self.slice_axis)
                gs = np.stack([np.flipud(c.T) for c in gs])
                im = None if img is None else np.flipud(np.take(img, k, axis=self.slice_axis).T)
                paths.append(save_png(gating_rgb(gs, im), self.output_dir / f"{name}_gating" / f"slice_{k:03d}.png"))
        else:
            gs = np.stack([c.T for c in g])
            paths.append(save_png(gating_rgb(gs, None if img is None else img.T), self.output_dir / f"{name}_gating.png"))
        return paths

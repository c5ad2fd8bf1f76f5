"""PNG overlays of predictions in the paper's colours: :class:`OverlayWriter`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import numpy as np
import torch

from ..visualize import mark_empty, overlay, save_png, upscale, volume_overlays
from .item_writer import ItemWriter, ras_view

__all__ = ["OverlayWriter"]

logger = logging.getLogger(__name__)


class OverlayWriter(ItemWriter):
    """Write PNG overlays of predictions (TP green, FP red, FN white, see :mod:`monai_patcher.visualize`).

    Attach to an evaluator whose post-processing leaves, per item, an image, a binary prediction and
    optionally a label of the same spatial shape (e.g. after ``Invertd`` back to the input's grid). 3D items
    (``C x X x Y x Z``) give ``<output_dir>/<case>/slice_<k>.png`` for every slice with foreground in the
    prediction or the label; 2D items (``C x H x W``) give ``<output_dir>/<case>_overlay.png``.

    An empty prediction is said so: a log line (logger ``monai_patcher.handlers.overlay_writer``), and its pictures
    are framed and titled "empty prediction" (:func:`~monai_patcher.visualize.mark_empty`); a 3D case with nothing
    in the prediction or the label still gets one picture, its middle slice (``slice_<k>_empty.png``).

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
        min_size: pictures whose shorter side is below this many pixels are enlarged by a whole factor (nearest
            neighbour) to reach it (:func:`~monai_patcher.visualize.upscale`): 64 x 64 slices are unreadable at
            their own size. 0 (default): the image's own size.
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
        min_size: int = 0,
    ) -> None:
        super().__init__(output_dir, name_keys or (pred_key, image_key), slice_axis, output_name_formatter)
        self.min_size = int(min_size)
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.image_channel = image_channel
        self.only_nonempty = only_nonempty
        self.alpha = alpha

    def write(self, item: Mapping) -> list[str]:
        """Write the overlays of one post-processed item; returns the PNG paths."""
        name = self.next_name(item)
        img = torch.as_tensor(item[self.image_key]).detach().cpu().float().numpy()
        pred = torch.as_tensor(item[self.pred_key]).detach().cpu().float().numpy()
        lab = item.get(self.label_key) if self.label_key else None
        lab = None if lab is None else torch.as_tensor(lab).detach().cpu().float().numpy()
        empty = not (pred > 0.5).any()
        if empty:
            logger.info("%s: the prediction is empty (no foreground); its overlay is marked 'empty prediction'", name)

        def picture(rgb: np.ndarray) -> np.ndarray:
            rgb = upscale(rgb, self.min_size)
            return mark_empty(rgb) if empty else rgb

        paths = []
        if pred.ndim == 4:  # C x X x Y x Z
            vols = [img[min(self.image_channel, img.shape[0] - 1)], pred[0], None if lab is None else lab[0]]
            axis, index = self.slice_axis, lambda k: k
            if isinstance(axis, str):  # to the RAS grid (axes permuted and flipped), cut along the plane's axis
                vols, axis, index = ras_view(item[self.pred_key], axis, vols)
            shown = volume_overlays(*vols, axis, self.only_nonempty, self.alpha)
            suffix = ""
            if not shown:  # nothing in the prediction nor the label: the middle slice, so the case has a picture
                middle = vols[0].shape[axis] // 2
                one = [None if v is None else np.take(v, [middle], axis=axis) for v in vols]
                shown = [(middle, rgb) for _, rgb in volume_overlays(*one, axis, False, self.alpha)]
                suffix = "_empty"
            for k, rgb in shown:
                paths.append(save_png(picture(rgb), self.output_dir / name / f"slice_{index(k):03d}{suffix}.png"))
        else:  # C x H x W (2D: MONAI's (W, H) array order from PIL is transposed back to rows x columns)
            shown = np.moveaxis(img[:3], 0, -1) if img.shape[0] >= 3 else img[min(self.image_channel, img.shape[0] - 1)]
            shown = np.swapaxes(shown, 0, 1)
            rgb = overlay(shown, pred[0].T, None if lab is None else lab[0].T, self.alpha)
            paths.append(save_png(picture(rgb), self.output_dir / f"{name}_overlay.png"))
        return paths

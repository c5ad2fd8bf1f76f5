"""PNG pictures of the mixture-of-experts gating maps: :class:`GatingMapWriter`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np
import torch

from ..visualize import gating_rgb, save_png
from .item_writer import ItemWriter, ras_view

__all__ = ["GatingMapWriter"]


class GatingMapWriter(ItemWriter):
    """Write the mixture-of-experts gating maps as colour PNGs (expert 1 red, 2 green, 3 blue, 4 yellow).

    Attach to an evaluator whose post-processing leaves, per item, the gating maps (the network's
    ``return_gating`` output, e.g. after ``Invertd`` back to the input's grid) and optionally the image. 3D items
    give ``<output_dir>/<case>_gating/slice_<k>.png``, 2D items ``<output_dir>/<case>_gating.png``.

    Args:
        output_dir: folder for the PNGs.
        gating_key: key of the ``E x X x Y x Z`` (or ``E x H x W``) maps in the post-processed output.
        image_key: optional image to blend under the colours.
        image_channel: image channel shown.
        name_keys: keys naming the case.
        slice_axis: 3D: axis to cut along (0-2, drawn as if the array were RAS), or an anatomical plane,
            ``"axial"``, ``"coronal"`` or ``"sagittal"``, read from the maps' affine (a ``MetaTensor``) as
            :class:`~monai_patcher.handlers.OverlayWriter` does; the PNGs are named by the volume's own slice index.
        every: 3D: write every ``every``-th slice.
        output_name_formatter: as ``SaveImaged``'s: ``(metadict, saver) -> {"subject": name, ...}`` naming the
            case from the metadata of the first of ``name_keys`` (default: the file name without extension).

    Example::

        GatingMapWriter(output_dir="eval/gating", image_channel=1, slice_axis="axial").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        gating_key: str = "gating",
        image_key: str | None = "image",
        image_channel: int = 0,
        name_keys: tuple[str, ...] | list[str] | None = None,
        slice_axis: int | str = 2,
        every: int = 1,
        output_name_formatter: Callable | None = None,
    ) -> None:
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        super().__init__(output_dir, name_keys or (gating_key, image_key or gating_key), slice_axis, output_name_formatter)
        self.gating_key, self.image_key, self.image_channel = gating_key, image_key, image_channel
        self.every = int(every)

    def write(self, item: Mapping) -> list[str]:
        """Write the gating pictures of one post-processed item; returns the PNG paths."""
        name = self.next_name(item)
        g = torch.as_tensor(item[self.gating_key]).detach().cpu().float().numpy()
        img = None
        if self.image_key and self.image_key in item:
            img = torch.as_tensor(item[self.image_key]).detach().cpu().float().numpy()
            img = img[min(self.image_channel, img.shape[0] - 1)]
        paths = []
        if g.ndim == 4:  # E x X x Y x Z
            vols, axis, index = [*g, img], self.slice_axis, lambda k: k
            if isinstance(axis, str):  # to the RAS grid (axes permuted and flipped), cut along the plane's axis
                vols, axis, index = ras_view(item[self.gating_key], axis, vols, "gating maps")
            *maps, img = vols
            for k in range(maps[0].shape[axis]):
                if index(k) % self.every:
                    continue
                gs = np.stack([np.flipud(np.take(m, k, axis=axis).T) for m in maps])
                im = None if img is None else np.flipud(np.take(img, k, axis=axis).T)
                paths.append(save_png(gating_rgb(gs, im), self.output_dir / f"{name}_gating" / f"slice_{index(k):03d}.png"))
            paths.sort()
        else:  # E x H x W
            gs = np.stack([c.T for c in g])
            paths.append(save_png(gating_rgb(gs, None if img is None else img.T), self.output_dir / f"{name}_gating.png"))
        return paths

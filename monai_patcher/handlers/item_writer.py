"""The base of the handlers that write files for every post-processed item of an engine's output.

:class:`ItemWriter` attaches to an engine at ``ITERATION_COMPLETED`` and calls :meth:`ItemWriter.write` on each
item (after the evaluator's post-processing, e.g. ``Invertd`` back to the input's grid); :func:`case_name` names
an item's files after its input, and :func:`ras_view` turns volumes in any grid orientation into RAS order so that
an anatomical plane can be cut and drawn the same way whatever the scan's storage order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.data import MetaTensor
from monai.utils import min_version, optional_import

from ..data.readers.suffixes import strip_suffix
from ..transforms.slices import PLANES, affine_orientation, plane_axis

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")
Engine, _ = optional_import("ignite.engine", "0.4.4", min_version, "Engine")

__all__ = ["ItemWriter", "case_name", "check_slice_axis", "ras_view", "output_items"]


def case_name(item: Mapping, keys: tuple[Hashable, ...], default: str, formatter: Callable | None = None) -> str:
    """The name of an item's case: ``formatter(meta, None)["subject"]`` (as ``SaveImaged``'s
    ``output_name_formatter``) or the file name without its image suffix, from the metadata of the first of ``keys``
    that has some; ``default`` if none has."""
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


def check_slice_axis(slice_axis: int | str) -> int | str:
    """``slice_axis`` if it is a spatial axis (0-2) or a key of :data:`~monai_patcher.transforms.slices.PLANES`.

    Raises:
        ValueError: anything else.
    """
    if isinstance(slice_axis, str):
        if slice_axis not in PLANES:
            raise ValueError(f"slice_axis must be 0, 1, 2 or one of {list(PLANES)}, got {slice_axis!r}.")
        return slice_axis
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1, 2 or one of {list(PLANES)}, got {slice_axis!r}.")
    return int(slice_axis)  # e.g. a numpy integer


def ras_view(reference: Any, plane: str, volumes: list, what: str = "a prediction") -> tuple[list, int, Callable[[int], int]]:
    """``volumes`` (``X x Y x Z`` arrays in the grid of ``reference``, or None) in RAS order, the RAS axis of
    ``plane`` and the map from a RAS slice index back to the grid's own slice index along that plane.

    Args:
        reference: a ``MetaTensor`` whose affine (RAS world, as MONAI's readers give) defines the grid.
        plane: ``"sagittal"``, ``"coronal"`` or ``"axial"``.
        volumes: the arrays to reorient (same spatial shape as ``reference``).
        what: how the error message names ``reference``.

    Raises:
        ValueError: ``reference`` has no affine.
    """
    from nibabel.orientations import apply_orientation

    affine = getattr(reference, "affine", None)
    if not isinstance(reference, MetaTensor) or affine is None:
        raise ValueError(f"slice_axis={plane!r} needs {what} with an affine (MetaTensor), got {type(reference).__name__}.")
    ornt = affine_orientation(affine)
    own = plane_axis(affine, plane, ornt)  # the grid's array axis along that RAS axis
    n, flipped = reference.shape[-3:][own], ornt[own, 1] < 0
    volumes = [None if v is None else apply_orientation(v, ornt) for v in volumes]
    return volumes, PLANES[plane], (lambda k: n - 1 - k) if flipped else (lambda k: k)


def output_items(output: Any) -> list[Mapping]:
    """The post-processed items of an engine's output (one dict, or a list of them after decollation)."""
    if isinstance(output, Mapping):
        return [output]
    if isinstance(output, (list, tuple)):
        return [o for o in output if isinstance(o, Mapping)]
    return []


class ItemWriter:
    """Ignite handler base: after every iteration, :meth:`write` each post-processed item of the output.

    Args:
        output_dir: folder for the files.
        name_keys: keys whose metadata name the case (first found wins, see :func:`case_name`).
        slice_axis: 3D: the spatial axis (0-2) or anatomical plane to cut volumes along (:func:`check_slice_axis`).
        output_name_formatter: as ``SaveImaged``'s: ``(metadict, saver) -> {"subject": name, ...}``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        name_keys: tuple[Hashable, ...],
        slice_axis: int | str = 2,
        output_name_formatter: Callable | None = None,
    ) -> None:
        self.slice_axis = check_slice_axis(slice_axis)
        self.output_dir = Path(output_dir)
        self.name_keys = tuple(name_keys)
        self.formatter = output_name_formatter
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Call this writer at every ``ITERATION_COMPLETED`` of ``engine``."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        for item in output_items(engine.state.output):
            self.write(item)

    def next_name(self, item: Mapping) -> str:
        """The case name of the next item written (``case_0001``, ... when its metadata name none)."""
        self._count += 1
        return case_name(item, self.name_keys, f"case_{self._count:04d}", self.formatter)

    def write(self, item: Mapping) -> list[str]:
        """Write the files of one item; returns their paths."""
        raise NotImplementedError

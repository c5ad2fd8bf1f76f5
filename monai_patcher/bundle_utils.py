"""What only the MONAI bundles in ``bundles/`` (``patcher_stroke``, ``patcher_polyp``) need from Python.

- :func:`insert_after`: a transform list with more transforms inserted after a given one (``evaluate.json``
  keeps the label as loaded, in the scan's grid, next to the network's preprocessing).

Everything else the bundles call lives with its concept: case discovery and datalists in
:mod:`monai_patcher.data.cases`, the demo data in :mod:`monai_patcher.data.demo`, checkpoints in
:mod:`monai_patcher.io` and :mod:`monai_patcher.handlers`, the stroke pipeline in :mod:`monai_patcher.transforms`.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["insert_after"]


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

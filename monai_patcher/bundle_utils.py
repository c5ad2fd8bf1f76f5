"""What only the MONAI bundles in ``bundles/`` (``patcher_stroke``, ``patcher_polyp``) need from Python.

- :func:`check_bundle_root`: ``bundle_root`` checked to be the bundle's own folder before any path is built on it;
- :func:`insert_after`: a transform list with more transforms inserted after a given one (``evaluate.json``
  keeps the label as loaded, in the scan's grid, next to the network's preprocessing);
- :func:`report_errors_plainly`: a failed run ends with the clear error (file and fix), not MONAI's wrapper.

Everything else the bundles call lives with its concept: case discovery and datalists in
:mod:`monai_patcher.data.cases`, the demo data in :mod:`monai_patcher.data.demo`, checkpoints in
:mod:`monai_patcher.io` and :mod:`monai_patcher.handlers`, the stroke pipeline in :mod:`monai_patcher.transforms`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["check_bundle_root", "insert_after", "report_errors_plainly"]


def check_bundle_root(bundle_root: str | os.PathLike, name: str) -> str:
    """``bundle_root`` unchanged, once checked to be the folder of the bundle called ``name``.

    A bundle's ``bundle_root`` is ``"."`` (model-zoo's default: the current directory) unless ``--bundle_root``
    (MONAI's override) names the folder. MONAI has no way to make it follow the config file, so a bundle run
    from another directory would read and write ``models/``, ``eval/`` and its demo data there. The configs build
    every path on the result of this check instead: the folder must hold ``configs/metadata.json`` whose
    ``name`` is ``name``.

    Args:
        bundle_root: the bundle folder given to the config (``"."`` by default).
        name: the ``name`` in the bundle's ``configs/metadata.json``.

    Raises:
        ValueError: ``bundle_root`` has no ``configs/metadata.json``, or it is not that bundle's (another
            bundle, or a file that is not JSON); the message says how to name the right folder.

    Example:
        >>> check_bundle_root("bundles/patcher_stroke", name="Patcher stroke lesion segmentation")
        'bundles/patcher_stroke'
    """
    meta = Path(bundle_root) / "configs" / "metadata.json"
    where = f"bundle_root {os.fspath(bundle_root)!r} ({Path(bundle_root).absolute()})"
    fix = (
        f"Run from inside the folder of the bundle {name!r} (bundle_root is '.' by default) or pass "
        "--bundle_root /path/to/that/bundle."
    )
    if not meta.is_file():
        raise ValueError(f"{where} is not a bundle folder: {meta} does not exist. {fix}")
    try:
        found = json.loads(meta.read_text(encoding="utf-8")).get("name")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{where}: {meta} is not a JSON object ({e}). {fix}") from e
    if found != name:
        raise ValueError(f"{where} is the folder of the bundle {found!r}, not of {name!r}. {fix}")
    return os.fspath(bundle_root)


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


def report_errors_plainly() -> None:
    """Make a failed bundle run end with its clear error: ``error: <file>: <problem>; <fix>`` as the last line.

    MONAI's config parser wraps every exception raised while a config entry is built or evaluated in
    ``RuntimeError("Failed to evaluate <the expression>")``, so the last line of a failed ``python -m monai.bundle
    run`` is the expression, and the message that names the file and the fix (a ``DataError``, a
    ``CheckpointError``, a ``FileNotFoundError``) is buried in the traceback above it. This installs a
    ``sys.excepthook`` that prints Python's traceback as before and then, when the exception wraps such an error
    (:func:`monai_patcher.data.errors.clear_error`), that error's message as the last line. Other exceptions are
    printed as before. The bundles call it first in ``initialize``; calling it again changes nothing.

    Example (``inference.json``): ``"initialize": ["$monai_patcher.bundle_utils.report_errors_plainly()", ...]``
    """
    if getattr(sys.excepthook, "_reports_errors_plainly", False):
        return
    previous = sys.excepthook

    def hook(exc_type, value, tb) -> None:
        from .data.errors import clear_error

        previous(exc_type, value, tb)
        inner = clear_error(value) if isinstance(value, BaseException) else None
        if inner is not None and inner is not value:
            message = " ".join(str(inner).split()) or type(inner).__name__
            print(f"\nerror: {message}", file=sys.stderr, flush=True)

    hook._reports_errors_plainly = True  # type: ignore[attr-defined]
    sys.excepthook = hook

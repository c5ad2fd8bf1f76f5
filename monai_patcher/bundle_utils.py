"""What only the MONAI bundles in ``bundles/`` (``patcher_stroke``, ``patcher_polyp``) need from Python.

- :func:`find_bundle_root`: the bundle folder, whatever the current directory is;
- :func:`insert_after`: a transform list with more transforms inserted after a given one (``evaluate.json``
  keeps the label as loaded, in the scan's grid, next to the network's preprocessing).

Everything else the bundles call lives with its concept: case discovery and datalists in
:mod:`monai_patcher.data.cases`, the demo data in :mod:`monai_patcher.data.demo`, checkpoints in
:mod:`monai_patcher.io` and :mod:`monai_patcher.handlers`, the stroke pipeline in :mod:`monai_patcher.transforms`.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["find_bundle_root", "insert_after"]


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

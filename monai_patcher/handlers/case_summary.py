"""One log line per case of an inference or evaluation run: :class:`CaseSummary`.

Volume inference takes minutes per case on a CPU; MONAI's ``StatsHandler`` logs nothing between "Restored" and
the end of the run, and ``SliceInferer(progress=True)`` shows the windows of the case being done (a tqdm bar)
but not what came out. :class:`CaseSummary` logs, after every case, its name, its time (reading, inference,
post-processing and writing included) and how many voxels the prediction segments, with their volume in ml when
the prediction has an affine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.utils import min_version, optional_import

from .item_writer import case_name, output_items

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")
Engine, _ = optional_import("ignite.engine", "0.4.4", min_version, "Engine")

__all__ = ["CaseSummary", "segmented_volume_ml"]


def segmented_volume_ml(pred: Any) -> float | None:
    """The volume (ml) of the foreground of ``pred`` (``C x X x Y x Z`` or ``X x Y x Z``, > 0 is foreground), from
    its affine; None without one (not a ``MetaTensor``)."""
    affine = getattr(pred, "affine", None)
    if affine is None:
        return None
    a = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=float)
    spatial = a.shape[0] - 1
    voxel_mm3 = abs(float(np.linalg.det(a[:spatial, :spatial])))
    return int((torch.as_tensor(pred) > 0).sum()) * voxel_mm3 / 1000.0


class CaseSummary:
    """Log one line per case: ``<case>: 41.2 s, 1234 voxels segmented (2.47 ml)``.

    Attach to an evaluator whose post-processing leaves a binary prediction per item (the bundles' ``pred``
    after ``AsDiscreted``). The time of a case runs from the end of the previous one (or the start of the run), so
    it includes reading and preprocessing (done by the data loader before the iteration starts) and writing.

    Args:
        pred_key: key of the binary prediction.
        name_keys: keys whose metadata name the case (first found wins); default ``(pred_key,)``.
        output_name_formatter: as ``SaveImaged``'s, to name the case like the written files.
        logger_name: the logger to write to (default ``monai_patcher.handlers.case_summary``).

    Example (``inference.json``)::

        {"_target_": "monai_patcher.handlers.CaseSummary", "pred_key": "pred",
         "output_name_formatter": "$monai_patcher.data.stroke_output_name"}
    """

    def __init__(
        self,
        pred_key: str = "pred",
        name_keys: tuple[Hashable, ...] | list[Hashable] | None = None,
        output_name_formatter: Callable | None = None,
        logger_name: str | None = None,
    ) -> None:
        self.pred_key = pred_key
        self.name_keys = tuple(name_keys or (pred_key,))
        self.formatter = output_name_formatter
        self.logger_name = logger_name
        self._start = 0.0
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Time every iteration of ``engine`` and log its cases when it completes."""
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._start, self._count = time.perf_counter(), 0

    def __call__(self, engine: Engine) -> list[str]:
        now = time.perf_counter()
        items = output_items(engine.state.output)
        seconds = (now - self._start) / max(1, len(items))
        self._start = now
        log = logging.getLogger(self.logger_name or __name__)
        lines = []
        for item in items:
            self._count += 1
            lines.append(self.line(item, seconds, f"case_{self._count:04d}"))
            log.info(lines[-1])
        return lines

    def line(self, item: Mapping, seconds: float, default_name: str = "case") -> str:
        """The summary line of one post-processed item that took ``seconds``."""
        name = case_name(item, self.name_keys, default_name, self.formatter)
        pred = item.get(self.pred_key)
        if pred is None:
            return f"{name}: {seconds:.1f} s"
        voxels = int((torch.as_tensor(pred) > 0).sum())
        ml = segmented_volume_ml(pred)
        volume = "" if ml is None else f" ({ml:.2f} ml)"
        empty = "; the prediction is empty" if voxels == 0 else ""
        return f"{name}: {seconds:.1f} s, {voxels} voxels segmented{volume}{empty}"

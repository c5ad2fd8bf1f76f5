"""Ignite handlers for the Patcher bundles, one concept per module (MONAI's ``monai.handlers`` layout).

- :class:`SliceMeanDice` / :class:`SliceMeanIoU`: the slice-wise metrics of :mod:`monai_patcher.metrics`;
- :class:`OverlayWriter` / :class:`GatingMapWriter`: PNG overlays of the predictions and pictures of the gating
  maps, per post-processed item;
- :class:`SafeCheckpointSaver` (with :class:`AtomicDiskSaver`) / :class:`SafeCheckpointLoader`: crash-safe
  checkpoint files, loaded with clear errors;
- :class:`BestMetricState`: the best key metric and the key-metric savers' lists in the trainer's checkpoint;
- :class:`EpochSeedHandler`: every epoch's randomness a function of ``(seed, epoch)``, for exact resume;
- :class:`CaseSummary`: one log line per case (time, voxels segmented).
"""

from .best_metric_state import BestMetricState
from .case_summary import CaseSummary
from .checkpoint_loader import SafeCheckpointLoader
from .checkpoint_saver import AtomicDiskSaver, SafeCheckpointSaver
from .epoch_seed_handler import EpochSeedHandler
from .gating_map_writer import GatingMapWriter
from .overlay_writer import OverlayWriter
from .slice_mean_dice import SliceMeanDice, SliceMeanIoU

__all__ = [
    "SliceMeanDice",
    "SliceMeanIoU",
    "OverlayWriter",
    "GatingMapWriter",
    "SafeCheckpointSaver",
    "AtomicDiskSaver",
    "SafeCheckpointLoader",
    "BestMetricState",
    "EpochSeedHandler",
    "CaseSummary",
]

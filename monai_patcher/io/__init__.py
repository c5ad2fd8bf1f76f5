"""Files written and read safely: atomic files (:mod:`.atomic`) and checkpoints (:mod:`.checkpoint`)."""

from . import atomic, checkpoint
from .atomic import STALE_TMP_SECONDS, TMP_SUFFIX, atomic_save, atomic_write, remove_stale_temp_files
from .checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    checkpoint_load_error,
    latest_checkpoint,
    load_error_details,
    safe_load_checkpoint,
    verify_checkpoint_file,
)

__all__ = [*atomic.__all__, *checkpoint.__all__]

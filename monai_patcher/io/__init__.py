"""Files written and read safely: atomic files (:mod:`.atomic`), checkpoints (:mod:`.checkpoint`) and the model
records they carry (:mod:`.model_record`)."""

from . import atomic, checkpoint, model_record
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
from .model_record import (
    RECORD_KEY,
    RECORD_VERSION,
    ModelRecord,
    ModelRecordMismatchError,
    guess_preset,
    load_patcher,
    patcher_from_record,
    polyp_model_record,
    read_model_record,
    record_value,
    stroke_model_record,
    weights_mismatch_error,
    weights_of,
)

__all__ = [*atomic.__all__, *checkpoint.__all__, *model_record.__all__]

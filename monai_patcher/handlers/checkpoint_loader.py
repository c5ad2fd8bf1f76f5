"""Safe checkpoint loading for Ignite: :class:`SafeCheckpointLoader`.

``monai.handlers.CheckpointLoader`` already loads with ``torch.load(..., weights_only=True)``, so a checkpoint
carrying pickled code is refused, but with PyTorch's generic message and without the file name.
:class:`SafeCheckpointLoader` (a drop-in subclass) verifies the file's checksums first and turns that, a
truncated/corrupt file and a checkpoint that does not fit into :class:`~monai_patcher.io.UnsafeCheckpointError` /
:class:`~monai_patcher.io.CheckpointError` / :class:`~monai_patcher.io.CheckpointMismatchError` naming the file.
A checkpoint with a model record (:mod:`monai_patcher.io.model_record`) is checked against the network before
its weights are loaded, and the weights of another Patcher preset are named (guessed from their shapes): one
sentence instead of PyTorch's list of missing keys.

Bundle use (``train.json``)::

    "checkpoint_loader": {"_target_": "monai_patcher.handlers.SafeCheckpointLoader", "load_path": "...",
                          "load_dict": {...}, "optional_keys": ["best_metric"]}
"""

from __future__ import annotations

import os
import pickle
import re
import weakref
import zipfile
from collections.abc import Mapping
from typing import Any, Sequence

import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from ..io.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    checkpoint_load_error,
    load_error_details,
    safe_load_checkpoint,
    verify_checkpoint_file,
)
from ..io.model_record import RECORD_KEY, ModelRecord, weights_mismatch_error, weights_of

__all__ = ["SafeCheckpointLoader", "take_resumed_checkpoint"]

# the checkpoint each engine resumed from (noted by SafeCheckpointLoader, taken over by SafeCheckpointSaver)
_RESUMED_FROM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def take_resumed_checkpoint(engine: Engine) -> str | None:
    """The checkpoint a :class:`SafeCheckpointLoader` loaded into ``engine`` (absolute path), once; None if none.

    :class:`~monai_patcher.handlers.SafeCheckpointSaver` takes it over, so that a resumed run deletes the checkpoint
    it resumed from once a newer one is written.
    """
    return _RESUMED_FROM.pop(engine, None)


class SafeCheckpointLoader(CheckpointLoader):
    """MONAI ``CheckpointLoader`` (which loads with ``weights_only=True``) with clear errors naming the file.

    Same arguments as ``CheckpointLoader``, plus ``optional_keys``. The file's checksums are verified first
    (:func:`~monai_patcher.io.verify_checkpoint_file`). An unsafe checkpoint raises :class:`UnsafeCheckpointError`, a
    missing/truncated/corrupt one :class:`CheckpointError`, instead of PyTorch's generic messages (or silently
    corrupted weights). A :class:`~monai_patcher.handlers.SafeCheckpointSaver` on the same engine deletes the loaded
    checkpoint once it has written a newer one (if it is one of its own interval checkpoints and ``n_saved`` says so).

    Args:
        optional_keys: keys of ``load_dict`` that a checkpoint may lack (e.g. an entry added to ``save_dict``
            after the checkpoint was written): their objects are then left as they are and this is logged.
            Every other key must be in the checkpoint: ignite's ``Checkpoint.load_objects`` raises for a missing
            key whatever ``strict`` says (``strict`` only applies inside ``nn.Module.load_state_dict``).
        args, kwargs: as for MONAI's ``CheckpointLoader``.
    """

    def __init__(self, *args: Any, optional_keys: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optional_keys = [optional_keys] if isinstance(optional_keys, str) else list(optional_keys)

    def __call__(self, engine: Engine) -> None:
        p = os.fspath(self.load_path)
        if not os.path.isfile(p):
            raise CheckpointError(
                f"{p}: checkpoint file does not exist; train the model first, or point the loader at a trained "
                "model.pt (a bundle's --ckpt_path)."
            )
        verify_checkpoint_file(p)
        legacy = not zipfile.is_zipfile(p)
        if legacy:  # legacy format, no checksums: a damaged one raises anything; check it first
            content = safe_load_checkpoint(p, verify=False)
        load_dict = self.load_dict
        network = getattr(load_dict.get("model"), "module", load_dict.get("model"))  # DDP: the wrapped network
        try:
            if not legacy:  # only the keys and the record are needed here: map the tensors instead of reading them
                content = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            if isinstance(content, Mapping) and RECORD_KEY in content and isinstance(network, torch.nn.Module):
                ModelRecord.from_dict(content[RECORD_KEY], source=p).check_network(network)
            if self.optional_keys:
                present = set(content) if isinstance(content, Mapping) else set()
                missing = [k for k in self.optional_keys if k in load_dict and k not in present]
                if missing and len(missing) < len(load_dict):
                    self.load_dict = {k: v for k, v in load_dict.items() if k not in missing}
                    self.logger.info(f"{p} has no {missing} (written before they were saved): left as they are")
            super().__call__(engine)
            _RESUMED_FROM[engine] = os.path.abspath(p)  # a SafeCheckpointSaver on this engine takes it over
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
            raise checkpoint_load_error(p, e) from None
        except CheckpointError:
            raise
        except RuntimeError as e:
            if "PytorchStreamReader" in str(e) or "zip archive" in str(e):
                raise checkpoint_load_error(p, e) from None
            if "state_dict" in str(e):  # load_state_dict: missing/unexpected keys, size mismatch
                if isinstance(network, torch.nn.Module):  # a plain state_dict of another preset: say which one
                    clear = weights_mismatch_error(p, weights_of(content), network)
                    if clear is not None:
                        raise clear from None
                raise CheckpointMismatchError(
                    f"{p}: this checkpoint's weights do not fit the objects to load ({load_error_details(e)})"
                ) from e
            raise
        except ValueError as e:  # ignite's Checkpoint.load_objects: "Key 'x' from ... is not found in ..."
            m = re.search(r"Key '(?P<key>.+?)' from .* is not found in \S+: (?P<have>.*)", str(e))
            if m is not None:
                raise CheckpointMismatchError(
                    f"{p}: the checkpoint has no entry {m['key']!r} to load (it holds {m['have'][:300]}); "
                    "list the key in optional_keys if checkpoints may lack it"
                ) from e
            raise
        finally:
            self.load_dict = load_dict

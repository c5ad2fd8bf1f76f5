"""BestMetricState (monai_patcher/handlers/best_metric_state.py): the best model and metric survive a resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers_helpers import train_with_validation
from monai_patcher.io import safe_load_checkpoint


def _model_weight(ckpt: Path) -> float:
    return float(safe_load_checkpoint(ckpt / "model.pt")["weight"])


def test_resume_keeps_the_best_model_and_best_metric(tmp_path):
    """Best Dice 0.8 at epoch 1; killed; resumed, epoch 2 scores 0.5: model.pt stays the epoch-1 model and the
    evaluator still reports 0.8 at epoch 1. A later, better score (0.9) still replaces it."""
    ev = train_with_validation(tmp_path, [0.8], epochs=1, resume=False)
    assert (ev.state.best_metric, ev.state.best_metric_epoch, _model_weight(tmp_path)) == (0.8, 1, 1.0)
    stored = safe_load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")["best_metric"]
    assert stored["best_metric"] == 0.8 and stored["best_metric_epoch"] == 1 and len(stored["savers"][0]) == 1

    ev = train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert _model_weight(tmp_path) == 1.0, "a worse model overwrote the best one after resume"
    assert (ev.state.best_metric, ev.state.best_metric_epoch) == (0.8, 1)

    ev = train_with_validation(tmp_path, [0.9], epochs=3, resume=True)
    assert _model_weight(tmp_path) == 3.0 and (ev.state.best_metric, ev.state.best_metric_epoch) == (0.9, 3)


def test_resume_rewrites_best_model_that_is_gone(tmp_path):
    """The restored list names model.pt; if that file was deleted, the next validation writes it again."""
    train_with_validation(tmp_path, [0.8], epochs=1, resume=False)
    (tmp_path / "model.pt").unlink()
    ev = train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert _model_weight(tmp_path) == 2.0 and (ev.state.best_metric, ev.state.best_metric_epoch) == (0.8, 1)


def test_checkpoint_without_best_metric_still_resumes(tmp_path):
    """A checkpoint written before ``best_metric`` was in save_dict: ``optional_keys`` lets it load (the best
    metric then starts afresh, as before); without it ignite refuses the missing key (``strict`` does not help)."""
    train_with_validation(tmp_path, [0.8], epochs=1, resume=False, save_best_state=False)
    assert "best_metric" not in safe_load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")
    with pytest.raises(ValueError, match="best_metric"):
        train_with_validation(tmp_path, [0.5], epochs=2, resume=True, optional_keys=())
    ev = train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert (ev.state.best_metric, ev.state.best_metric_epoch) == (0.5, 2)  # MONAI's behaviour without the state
    assert safe_load_checkpoint(tmp_path / "checkpoint_epoch=2.pt")["trainer"]["iteration"] == 2

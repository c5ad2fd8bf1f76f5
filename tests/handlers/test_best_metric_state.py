"""BestMetricState (monai_patcher/handlers/best_metric_state.py): the best model and metric survive a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from monai_patcher.handlers import BestMetricState, SafeCheckpointLoader, SafeCheckpointSaver
from monai_patcher.io import safe_load_checkpoint


class _ScriptedMetric:
    """An ignite metric whose value at each validation is the next of ``scores`` (a controlled Dice)."""

    def __new__(cls, scores):
        from ignite.metrics import Metric

        class _M(Metric):
            def __init__(self):
                self.scores = list(scores)
                super().__init__(output_transform=lambda o: None)

            def reset(self):
                pass

            def update(self, output):
                pass

            def compute(self):
                return self.scores.pop(0)

        return _M()


def _train_with_validation(ckpt: Path, scores, epochs: int, resume: bool, optional_keys=("best_metric",),
                           save_best_state: bool = True):
    """A trainer whose epoch adds 1 to the weight, validated after every epoch by a MONAI evaluator whose key
    metric takes ``scores``; like the bundles: ``model.pt`` by key metric (validation saver), the epoch
    checkpoint (trainer saver) with ``BestMetricState``; ``resume`` loads the last epoch checkpoint."""
    from monai.engines import Evaluator

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    val_saver = SafeCheckpointSaver(str(ckpt), {"model": net}, save_key_metric=True, key_metric_filename="model.pt")
    evaluator = Evaluator(device="cpu", val_data_loader=[0], epoch_length=1, iteration_update=lambda e, b: {},
                          key_val_metric={"dice": _ScriptedMetric(scores)}, val_handlers=[val_saver])
    trainer = Engine(lambda e, b: net.weight.data.add_(1.0))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run(e.state.epoch))
    state = {"model": net, "trainer": trainer}
    if save_best_state:
        state["best_metric"] = BestMetricState(evaluator, [val_saver])
    if resume:
        last = max(ckpt.glob("checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
        SafeCheckpointLoader(str(last), state, optional_keys=list(optional_keys)).attach(trainer)
    SafeCheckpointSaver(str(ckpt), state, epoch_level=True, save_interval=1, n_saved=1).attach(trainer)
    trainer.run([0], max_epochs=epochs)
    return evaluator


def _model_weight(ckpt: Path) -> float:
    return float(safe_load_checkpoint(ckpt / "model.pt")["weight"])


def test_resume_keeps_the_best_model_and_best_metric(tmp_path):
    """Best Dice 0.8 at epoch 1; killed; resumed, epoch 2 scores 0.5: model.pt stays the epoch-1 model and the
    evaluator still reports 0.8 at epoch 1. A later, better score (0.9) still replaces it."""
    ev = _train_with_validation(tmp_path, [0.8], epochs=1, resume=False)
    assert (ev.state.best_metric, ev.state.best_metric_epoch, _model_weight(tmp_path)) == (0.8, 1, 1.0)
    stored = safe_load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")["best_metric"]
    assert stored["best_metric"] == 0.8 and stored["best_metric_epoch"] == 1 and len(stored["savers"][0]) == 1

    ev = _train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert _model_weight(tmp_path) == 1.0, "a worse model overwrote the best one after resume"
    assert (ev.state.best_metric, ev.state.best_metric_epoch) == (0.8, 1)

    ev = _train_with_validation(tmp_path, [0.9], epochs=3, resume=True)
    assert _model_weight(tmp_path) == 3.0 and (ev.state.best_metric, ev.state.best_metric_epoch) == (0.9, 3)


def test_resume_rewrites_best_model_that_is_gone(tmp_path):
    """The restored list names model.pt; if that file was deleted, the next validation writes it again."""
    _train_with_validation(tmp_path, [0.8], epochs=1, resume=False)
    (tmp_path / "model.pt").unlink()
    ev = _train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert _model_weight(tmp_path) == 2.0 and (ev.state.best_metric, ev.state.best_metric_epoch) == (0.8, 1)


def test_checkpoint_without_best_metric_still_resumes(tmp_path):
    """A checkpoint written before ``best_metric`` was in save_dict: ``optional_keys`` lets it load (the best
    metric then starts afresh, as before); without it ignite refuses the missing key (``strict`` does not help)."""
    _train_with_validation(tmp_path, [0.8], epochs=1, resume=False, save_best_state=False)
    assert "best_metric" not in safe_load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")
    with pytest.raises(ValueError, match="best_metric"):
        _train_with_validation(tmp_path, [0.5], epochs=2, resume=True, optional_keys=())
    ev = _train_with_validation(tmp_path, [0.5], epochs=2, resume=True)
    assert (ev.state.best_metric, ev.state.best_metric_epoch) == (0.5, 2)  # MONAI's behaviour without the state
    assert safe_load_checkpoint(tmp_path / "checkpoint_epoch=2.pt")["trainer"]["iteration"] == 2

"""Helpers shared by the handler tests."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor

from monai_patcher.handlers import BestMetricState, SafeCheckpointLoader, SafeCheckpointSaver


def sagittal_stored_case():
    """A PIR-stored volume (array axes: anterior->posterior, superior->inferior, left->right), as a sagittal
    scan is after ``Invertd`` back to its own grid: the prediction is a block on the array's axis 1 (slices
    3 and 4), in the anterior part (low axis-0 index) and at low axis-2 indices."""
    affine = torch.tensor([[0.0, 0, 1, -10], [-1, 0, 0, 20], [0, -1, 0, 30], [0, 0, 0, 1]])  # columns: P, I, R
    shape = (10, 8, 12)  # 10 A-P, 8 S-I, 12 L-R voxels
    pred = torch.zeros(1, *shape)
    pred[0, 1:4, 3:5, 1:4] = 1
    meta = {"filename_or_obj": "/x/sag_case.nii.gz"}
    noise = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    image = MetaTensor(noise, affine=affine, meta=dict(meta))
    return {"image": image, "pred": MetaTensor(pred, affine=affine, meta=dict(meta))}


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


def train_with_validation(ckpt: Path, scores, epochs: int, resume: bool, optional_keys=("best_metric",),
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

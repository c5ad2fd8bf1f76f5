"""The Ignite handlers of the slice-wise metrics (monai_patcher/handlers/slice_mean_dice.py)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from monai_patcher.handlers import SliceMeanDice, SliceMeanIoU


def _np_slice_scores(pred: np.ndarray, label: np.ndarray, axis: int) -> tuple[list[float], list[float]]:
    """Dice and IoU of every 2D slice (along ``axis``) of two boolean ``X x Y x Z`` arrays, in plain numpy;
    slices with an empty ground truth are skipped (``ignore_empty=True``)."""
    dices, ious = [], []
    for k in range(label.shape[axis]):
        p, y = np.take(pred, k, axis=axis), np.take(label, k, axis=axis)
        if not y.any():
            continue
        inter, union = (p & y).sum(), (p | y).sum()
        dices.append(2 * inter / (p.sum() + y.sum()))
        ious.append(inter / union)
    return dices, ious


def test_slice_mean_dice_and_iou_handlers_on_an_engine():
    """Both ignite handlers, attached to an Engine fed two hand-made cases (one per iteration, as an evaluator
    with ``from_engine(["pred", "label"])``): the mean over all slices of both cases of the per-slice Dice and IoU,
    computed here in numpy; Dice and IoU differ on these cases, so one handler computing the other's metric fails."""
    from ignite.engine import Engine
    from monai.handlers import from_engine

    shape = (6, 5, 4)
    cases = []
    # case 1: slice 0 perfect, slice 1 half overlap, slice 2 FP only (empty truth: skipped), slice 3 one-third
    y1, p1 = np.zeros(shape, bool), np.zeros(shape, bool)
    y1[1:3, 1:3, 0] = p1[1:3, 1:3, 0] = True
    y1[0:2, 0:2, 1] = True
    p1[0:2, 0, 1] = True
    p1[4, 4, 2] = True
    y1[2:5, 2, 3] = True
    p1[2, 2:5, 3] = True
    cases.append((p1, y1))
    # case 2: slice 0 missed entirely, slice 1 over-segmented, slices 2-3 empty truth and empty prediction
    y2, p2 = np.zeros(shape, bool), np.zeros(shape, bool)
    y2[3, 3, 0] = True
    y2[1:3, 1:3, 1] = True
    p2[0:4, 0:4, 1] = True
    cases.append((p2, y2))

    dices, ious = [], []
    for p, y in cases:
        d, i = _np_slice_scores(p, y, axis=2)
        dices += d
        ious += i
    assert len(dices) == 5 and not np.allclose(dices, ious)
    assert np.allclose(dices, [1.0, 2 / 3, 1 / 3, 0.0, 0.4]) and np.allclose(ious, [1.0, 0.5, 0.2, 0.0, 0.25])

    data = [{"pred": [torch.tensor(p[None], dtype=torch.float32)], "label": [torch.tensor(y[None], dtype=torch.float32)]}
            for p, y in cases]
    engine = Engine(lambda e, batch: batch)
    SliceMeanDice(output_transform=from_engine(["pred", "label"]), save_details=True).attach(engine, "slice_dice")
    SliceMeanIoU(output_transform=from_engine(["pred", "label"])).attach(engine, "slice_iou")
    engine.run(data, max_epochs=1)
    assert engine.state.metrics["slice_dice"] == pytest.approx(np.mean(dices), abs=1e-6)
    assert engine.state.metrics["slice_iou"] == pytest.approx(np.mean(ious), abs=1e-6)
    details = engine.state.metric_details["slice_dice"]  # one row per slice of every case, NaN for empty truth
    assert details.shape == (2 * shape[2], 1)
    assert np.allclose(details[~torch.isnan(details)].numpy(), dices, atol=1e-6)

    # along another axis (the handler passes slice_axis to its metric)
    d0, i0 = [], []
    for p, y in cases:
        d, i = _np_slice_scores(p, y, axis=0)
        d0 += d
        i0 += i
    engine0 = Engine(lambda e, batch: batch)
    SliceMeanDice(slice_axis=0, output_transform=from_engine(["pred", "label"])).attach(engine0, "slice_dice")
    SliceMeanIoU(slice_axis=0, output_transform=from_engine(["pred", "label"])).attach(engine0, "slice_iou")
    engine0.run(data, max_epochs=1)
    assert engine0.state.metrics["slice_dice"] == pytest.approx(np.mean(d0), abs=1e-6)
    assert engine0.state.metrics["slice_iou"] == pytest.approx(np.mean(i0), abs=1e-6)

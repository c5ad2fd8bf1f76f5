"""One log line per case (monai_patcher/handlers/case_summary.py)."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from monai_patcher.handlers import CaseSummary
from monai_patcher.handlers.case_summary import segmented_volume_ml


def test_one_line_per_case_with_time_voxels_and_volume(caplog):
    affine = torch.diag(torch.tensor([2.0, 1.0, 5.0, 1.0]))  # 10 mm^3 voxels
    pred = torch.zeros(1, 4, 4, 3)
    pred[0, :2, :2, 1] = 1  # 4 voxels = 0.04 ml
    full = MetaTensor(pred, affine=affine, meta={"filename_or_obj": "/x/case1_adc.nii.gz"})
    empty = MetaTensor(torch.zeros(1, 4, 4, 3), affine=affine, meta={"filename_or_obj": "/x/case2_adc.nii.gz"})
    outputs = [[{"pred": full}], [{"pred": empty}]]
    engine = Engine(lambda e, b: outputs[e.state.iteration - 1])
    summary = CaseSummary(output_name_formatter=lambda meta, saver: {"subject": meta["filename_or_obj"][3:8]})
    summary.attach(engine)
    caplog.set_level(logging.INFO, logger="monai_patcher.handlers.case_summary")
    engine.run([0, 1], max_epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "monai_patcher.handlers.case_summary"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("case1: ") and lines[0].endswith(" s, 4 voxels segmented (0.04 ml)"), lines[0]
    assert lines[1].endswith(" s, 0 voxels segmented (0.00 ml); the prediction is empty"), lines[1]


def test_volume_needs_an_affine():
    assert segmented_volume_ml(torch.ones(1, 2, 2, 2)) is None
    assert segmented_volume_ml(MetaTensor(torch.ones(1, 2, 2, 2), affine=torch.eye(4) * 10)) == pytest.approx(8.0)

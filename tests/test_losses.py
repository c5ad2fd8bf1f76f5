import pytest
import torch
import torch.nn.functional as F

from monai_patcher.losses import BCEIoULoss


def _mask(b=2, h=32, w=32):
    y = torch.zeros(b, 1, h, w)
    y[:, :, 8:20, 10:26] = 1
    return y


def test_plain_bce_iou_matches_formula():
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 32, 32), _mask()
    got = BCEIoULoss(boundary_weight=0.0, smooth=0.0)(x, y)
    p = torch.sigmoid(x)
    inter = (p * y).sum((2, 3))
    iou = 1 - inter / ((p + y).sum((2, 3)) - inter)
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none").mean((2, 3))
    torch.testing.assert_close(got, (bce + iou).mean())


def test_perfect_prediction_beats_wrong_one_and_boundary_weight_matters():
    y = _mask()
    good, bad = (y * 2 - 1) * 10, (1 - y * 2) * 10
    loss = BCEIoULoss()
    assert loss(good, y) < 0.01 < loss(bad, y)
    x = torch.randn(2, 1, 32, 32)
    assert not torch.isclose(BCEIoULoss(boundary_weight=5)(x, y), BCEIoULoss(boundary_weight=0)(x, y))


def test_gradients_and_reduction_none():
    x = torch.randn(3, 1, 16, 16, requires_grad=True)
    out = BCEIoULoss(reduction="none")(x, torch.randint(0, 2, (3, 1, 16, 16)).float())
    assert out.shape == (3,)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{"boundary_weight": -1}, {"kernel_size": 4}, {"reduction": "avg"}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        BCEIoULoss(**kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        BCEIoULoss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_the_float32_loss(dtype):
    """Mixed precision hands the loss float16 (CUDA) or bfloat16 (CPU) logits; at 256 x 256 the per-image sums
    of the boundary weights exceed float16's range, which made the loss inf/NaN (or a constant 1 with no gradient)."""
    torch.manual_seed(0)
    y = torch.zeros(2, 1, 256, 256)
    y[:, :, 60:200, 40:180] = 1
    x32 = torch.randn(2, 1, 256, 256) * 3
    x = x32.to(dtype).requires_grad_()
    loss = BCEIoULoss()(x, y.to(dtype))
    assert loss.dtype == torch.float32
    expected = BCEIoULoss()(x.detach().float(), y)  # the same (rounded) logits in float32
    assert torch.isfinite(loss) and torch.allclose(loss, expected, rtol=1e-5), (loss, expected)
    loss.backward()
    assert torch.isfinite(x.grad.float()).all() and x.grad.float().abs().sum() > 0

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_patcher.losses import BCEIoULoss, box_mean


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


# --- independent reference of the default (boundary-weighted) loss, written from the formula in float64 numpy ---


def _box_mean_in_image(y: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``y`` (H x W) over the k x k window around each pixel, counting only the pixels inside the image."""
    h, w, r = *y.shape, k // 2
    out = np.empty_like(y)
    for i in range(h):
        for j in range(w):
            out[i, j] = y[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1].mean()
    return out


def _reference_loss(x, y, reduction, boundary_weight=5.0, kernel_size=31, smooth=1.0):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    per_item = np.zeros(x.shape[0])
    for b in range(x.shape[0]):
        terms = []
        for c in range(x.shape[1]):
            xi, yi = x[b, c], y[b, c]
            wi = 1 + boundary_weight * np.abs(_box_mean_in_image(yi, kernel_size) - yi)
            bce = np.maximum(xi, 0) - xi * yi + np.log1p(np.exp(-np.abs(xi)))  # stable BCE with logits
            wbce = (wi * bce).sum() / wi.sum()
            p = 1 / (1 + np.exp(-xi))
            inter, union = (wi * p * yi).sum(), (wi * (p + yi)).sum()
            terms.append(wbce + 1 - (inter + smooth) / (union - inter + smooth))
        per_item[b] = np.mean(terms)
    return {"mean": per_item.mean(), "sum": per_item.sum(), "none": per_item}[reduction]


def _masks(touch_border: bool, b=3, c=2, h=48, w=40):
    """Masks of different sizes per item/channel, all touching the image border or all at least 16 pixels
    (more than the 15-pixel window radius) away from it."""
    y = torch.zeros(b, c, h, w)
    for i in range(b):
        for k in range(c):
            if touch_border and (i + k) % 3 == 0:  # a corner block
                y[i, k, : 20 + 3 * i, : 12 + 2 * k] = 1
            elif touch_border and (i + k) % 3 == 1:  # a band along the right edge
                y[i, k, :, 30 - i :] = 1
            elif touch_border:  # the whole image
                y[i, k] = 1
            else:
                y[i, k, 16 + (i + k) % 3 : 16 + 10 + i, 16 : 16 + 3 + 2 * k] = 1
    if not touch_border:
        assert y[..., :16, :].sum() == y[..., -16:, :].sum() == y[..., :16].sum() == y[..., -16:].sum() == 0
    return y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("touch_border", [True, False], ids=["border", "interior"])
def test_default_loss_matches_independent_reference(touch_border, reduction):
    """Defaults (boundary_weight 5, kernel 31, smooth 1) against the float64 formula, per reduction."""
    torch.manual_seed(1)
    y = _masks(touch_border)
    x = torch.randn(y.shape) * 2 + (y * 2 - 1)  # somewhat right, so both loss terms vary
    got = BCEIoULoss(reduction=reduction)(x, y)
    expected = torch.as_tensor(_reference_loss(x.numpy(), y.numpy(), reduction), dtype=torch.float32)
    assert got.shape == expected.shape == ((3,) if reduction == "none" else ())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_mask_filling_the_image_has_no_boundary_weight():
    """Deviation (a) from PraNet, pinned: the zero padding is not counted, so a mask filling the whole image
    (no boundary anywhere) gets weight 1 everywhere and the weighted loss is the unweighted one. PraNet's
    ``avg_pool2d`` with ``count_include_pad=True`` would weight its border pixels up to 4.67 at 64 x 64."""
    torch.manual_seed(2)
    y = torch.ones(2, 1, 64, 64)
    x = torch.randn(2, 1, 64, 64) * 3
    torch.testing.assert_close(BCEIoULoss()(x, y), BCEIoULoss(boundary_weight=0)(x, y))
    padded = F.avg_pool2d(y, 31, stride=1, padding=15)  # PraNet's weight, for contrast
    assert float((1 + 5 * (padded - y).abs()).max()) > 4.6


@pytest.mark.parametrize(
    "shape,kernel",
    [((2, 3, 37), 31), ((2, 1, 45, 29), 31), ((1, 2, 9, 11), 31), ((2, 1, 40, 33), 7), ((1, 2, 11, 13, 9), 5)],
)
def test_box_mean_equals_the_full_pool(shape, kernel):
    """The separable box mean against the one-pass pool it replaces, float64, soft values, odd sizes, images
    smaller than the window, 1-3 spatial axes."""
    torch.manual_seed(0)
    x = torch.rand(shape, dtype=torch.float64)
    pool = {3: F.avg_pool1d, 4: F.avg_pool2d, 5: F.avg_pool3d}[len(shape)]
    ref = pool(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    got = box_mean(x, kernel)
    assert got.shape == x.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape,kernel", [((2, 3), 3), ((1, 1, 2, 2, 2, 2), 3), ((1, 1, 8, 8), 4), ((1, 1, 8, 8), 0)])
def test_box_mean_bad_arguments_raise(shape, kernel):
    with pytest.raises(ValueError, match="spatial axes|odd"):
        box_mean(torch.zeros(shape), kernel)

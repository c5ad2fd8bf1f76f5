"""Exact CPU kernels behind the Patcher network's fast paths.

Each kernel computes what a plain PyTorch expression computes, the same values up to float rounding, with less work
or better-shaped work for a CPU, and has its own backward where autograd's would waste work. The network uses them
in eager mode on CPU only, when its fast paths are on (:func:`~monai_patcher.networks.set_fast_paths`); scripted,
traced, exported and compiled graphs and other devices keep PyTorch's own operators.
``tests/networks/test_cpu_kernels.py`` compares every kernel with its plain expression in float64, outputs and
gradients, at odd sizes too.

- :func:`add_upsampled_conv3x3_`: ``out += conv2d(crop(upsample(low)), weight, padding=1)`` with every matrix
  product at ``low``'s resolution or in the bilinear interpolation's own (small) dimension, for the gate of
  :class:`~monai_patcher.networks.MoEDecoder`.
- :func:`mix_experts`: ``sum_i weights[:, i] * experts[i]``, the decoder's gated sum, whose backward takes the gating
  weights' gradient as one batched dot product per expert instead of a product map and a channel sum.
"""

from __future__ import annotations

from typing import List

import torch

__all__ = ["add_upsampled_conv3x3_", "gated_sum", "mix_experts", "use_cpu_kernels"]


def use_cpu_kernels(x: torch.Tensor) -> bool:
    """Whether the CPU kernels of this module may run on ``x``: eager mode (not tracing or compiling) on CPU.

    TorchScript callers must not call this (guard with ``torch.jit.is_scripting()``); scripted code takes the
    plain operators.
    """
    return x.device.type == "cpu" and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


def _shifted_upsampling(n: int, stride: int, n0: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The bilinear upsampling of one axis as matrices, shifted by the 3 taps of a 3x3 convolution.

    Returns ``(3, n0, n)``: slice ``k``, row ``y`` holds the weights of the ``n`` input pixels in pixel ``y + k - 1``
    of the upsampling of ``n`` pixels to ``n * stride`` (bilinear, ``align_corners=False``), and zeros where
    ``y + k - 1`` is outside ``[0, n0)`` (the crop to ``n0`` pixels and the convolution's zero padding). The weights
    follow PyTorch's own CPU formula (source index ``scale * (y + 0.5) - 0.5`` clamped at 0, ``scale = n / (n *
    stride)`` in the operator's compute precision), so they are the ones ``F.interpolate`` uses.
    """
    opmath = torch.float64 if dtype == torch.float64 else torch.float32
    dst = torch.arange(-1, n0 + 1, device=device, dtype=opmath)  # y + k - 1 for y in [0, n0) and k in {0, 1, 2}
    scale = torch.tensor(n, dtype=opmath) / torch.tensor(n * stride, dtype=opmath)
    src = (scale * (dst + 0.5) - 0.5).clamp(min=0)
    i0 = src.floor().clamp(max=n - 1)
    lam = (src - i0).clamp(0, 1)
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=n - 1)
    m = torch.zeros(n0 + 2, n, device=device, dtype=opmath)
    rows = torch.arange(n0 + 2, device=device)
    m.index_put_((rows, i0), 1 - lam, accumulate=True)
    m.index_put_((rows, i1), lam, accumulate=True)
    m[0].zero_()  # pixel -1: the convolution's zero padding
    m[n0 + 1].zero_()  # pixel n0: cropped away, zero padding too
    return torch.stack([m[k : k + n0] for k in range(3)]).to(dtype)


def _bands(m: torch.Tensor, block: int) -> list[tuple[int, int, int, int]]:
    """Row blocks of ``block`` rows of a banded matrix ``m`` with the columns they use: ``(r0, r1, c0, c1)``.

    Columns ``[c0, c1)`` hold every nonzero of rows ``[r0, r1)`` (``c0 == c1`` where there is none), so
    ``m[r0:r1] @ x == m[r0:r1, c0:c1] @ x[c0:c1]``.
    """
    used = m != 0
    bands = []
    for r0 in range(0, m.shape[0], block):
        r1 = min(r0 + block, m.shape[0])
        cols = used[r0:r1].any(0).nonzero()
        c0, c1 = (int(cols[0]), int(cols[-1]) + 1) if cols.numel() else (0, 0)
        bands.append((r0, r1, c0, c1))
    return bands


# output rows (or columns) per block of the interpolation products: the matrices are banded, so a block reads only
# the few input rows it needs (about block / stride + 2 per tap) instead of all of them
_BLOCK = 32


class _UpsampledConv3x3(torch.autograd.Function):
    """``out += conv2d(crop(upsample(low, stride)), weight, padding=1)``, in place on ``out``; see
    :func:`add_upsampled_conv3x3_`."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, low: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        b, c, h, w = low.shape
        o, h0, w0 = weight.shape[0], out.shape[2], out.shape[3]
        with torch.autocast(out.device.type, enabled=False):
            low_ = low.to(out.dtype).contiguous(memory_format=torch.channels_last)
            # every tap's channel map at low resolution in one product per image: columns (kx, ky, O)
            taps = weight.to(out.dtype).permute(1, 3, 2, 0).reshape(c, 9 * o)
            # bx: W0 x (j, kx), the horizontal upsampling of the three tap columns, shifted; ay: H0 x (i, ky)
            bx = _shifted_upsampling(w, stride, w0, out.dtype, out.device).permute(1, 2, 0).reshape(w0, 3 * w)
            ay = _shifted_upsampling(h, stride, h0, out.dtype, out.device).permute(1, 2, 0).reshape(h0, 3 * h)
            x_bands, y_bands = _bands(bx, _BLOCK), _bands(ay, _BLOCK)
            acc = out.permute(0, 2, 3, 1).view(b, h0, w0 * o)  # channels-last out: H0 x (W0, O) per image
            # one image at a time, so that its intermediates (9 O channels at low resolution, then 3 O at W0) are
            # still in cache when the next product reads them (measured in docs/architecture.md)
            z = out.new_empty((h * w, 9 * o))  # sizes as a tuple: MONAI's MetaTensor.new_empty takes no varargs
            v = out.new_empty((h, 3, w0, o))
            for i in range(b):
                torch.mm(low_[i].permute(1, 2, 0).reshape(h * w, c), taps, out=z)  # pixels x (kx, ky, O)
                zr = z.view(h, 3 * w, 3 * o)  # per low row: (j, kx) x (ky, O)
                # v[i_low, ky]: kernel row ky's taps upsampled horizontally and summed over kx: W0 x O
                for x0, x1, c0, c1 in x_bands:
                    a = bx[x0:x1, c0:c1].expand(h, x1 - x0, c1 - c0)
                    for ky in range(3):
                        torch.bmm(a, zr[:, c0:c1, ky * o : (ky + 1) * o], out=v[:, ky, x0:x1])
                # out[i] (H0 x (W0, O)) += ay @ v ((i_low, ky) x (W0, O)): the vertical upsampling, summed over ky
                # (out= rather than addmm_, so that torch.utils.flop_counter counts these products too)
                vr = v.view(3 * h, w0 * o)
                for y0, y1, c0, c1 in y_bands:
                    torch.addmm(acc[i, y0:y1], ay[y0:y1, c0:c1], vr[c0:c1], out=acc[i, y0:y1])
        ctx.mark_dirty(out)
        ctx.save_for_backward(low_, taps, bx, ay)
        ctx.dtypes = (low.dtype, weight.dtype)
        ctx.stride = stride
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        low, taps, bx, ay = ctx.saved_tensors
        b, c, h, w = low.shape
        o, h0, w0 = taps.shape[1] // 9, grad.shape[2], grad.shape[3]
        grad_low = grad_weight = None
        if not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            return grad, grad_low, grad_weight, None
        with torch.autocast(grad.device.type, enabled=False):
            g = grad.to(low.dtype).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
            g = g.reshape(b, h0, w0 * o)
            y_bands = _bands(ay.t(), 3 * max(1, _BLOCK // ctx.stride))
            x_bands = _bands(bx.t(), 3 * max(1, _BLOCK // ctx.stride))
            if ctx.needs_input_grad[1]:
                grad_low = low.new_empty((b, h, w, c))  # channels-last memory, permuted below
            if ctx.needs_input_grad[2]:
                grad_taps = taps.new_zeros((c, 9 * o))
            gv = g.new_empty((3 * h, w0 * o))
            gz = g.new_empty((h, 3 * w, 3 * o))
            # the forward's products transposed, in reverse order, blocked by the rows they produce; one image at a
            # time, as in the forward
            for i in range(b):
                for c0, c1, y0, y1 in y_bands:
                    if y1 > y0:
                        torch.mm(ay[y0:y1, c0:c1].t(), g[i, y0:y1], out=gv[c0:c1])
                    else:
                        gv[c0:c1].zero_()
                gvr = gv.view(h, 3, w0, o)
                for c0, c1, x0, x1 in x_bands:
                    a = bx[x0:x1, c0:c1].t().expand(h, c1 - c0, x1 - x0)
                    for ky in range(3):
                        if x1 > x0:
                            torch.bmm(a, gvr[:, ky, x0:x1], out=gz[:, c0:c1, ky * o : (ky + 1) * o])
                        else:
                            gz[:, c0:c1, ky * o : (ky + 1) * o].zero_()
                gzr = gz.view(h * w, 9 * o)
                if ctx.needs_input_grad[1]:
                    torch.mm(gzr, taps.t(), out=grad_low[i].view(h * w, c))
                if ctx.needs_input_grad[2]:
                    rows = low[i].permute(1, 2, 0).reshape(h * w, c)
                    torch.addmm(grad_taps, rows.t(), gzr, out=grad_taps)
            if ctx.needs_input_grad[1]:
                grad_low = grad_low.permute(0, 3, 1, 2).to(ctx.dtypes[0])
            if ctx.needs_input_grad[2]:
                grad_weight = grad_taps.view(c, 3, 3, o).permute(3, 0, 2, 1).to(ctx.dtypes[1])
        return grad, grad_low, grad_weight, None


def add_upsampled_conv3x3_(out: torch.Tensor, low: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``out += conv2d(upsample(low)[:, :, :H0, :W0], weight, padding=1)``, computed at ``low``'s resolution.

    ``upsample`` is bilinear (``align_corners=False``) by ``stride``, to ``h * stride x w * stride``, and the crop
    keeps the first ``H0 x W0`` pixels, as :class:`~monai_patcher.networks.MoEDecoder` aligns its experts.

    A 3x3 convolution is the sum over its 9 taps of a per-pixel channel map shifted by the tap's offset, and a
    per-pixel channel map commutes with a bilinear upsampling, which acts on every channel alike and is separable
    (a matrix on the rows times a matrix on the columns). So the 9 channel maps run on ``low`` (one matrix product
    per kernel row), each row's three taps are upsampled along the width and summed by one product with the
    horizontal interpolation matrix, shifted by the taps' offsets, and the three rows are upsampled along the
    height and summed, straight into ``out``, by one product with the vertical matrix. The crop and the zero
    padding are rows of zeros in those matrices, and the matrices are banded (two weights per row and tap), so the
    products run on blocks of rows that read only the input rows they need. Every step is a matrix product on
    channels-last memory with no layout copy, and the backward is the same products transposed, also at ``low``'s
    resolution; for ``stride = 2`` about a sixth of the convolution's multiply-adds, for 4 and 8 less again. The
    values are those of the convolution on the upsampled map up to float rounding, for any ``stride`` and any crop.

    Args:
        out: ``B x O x H0 x W0``, channels-last (made so if it is not; then the sum is a new tensor), added to.
        low: ``B x C x h x w`` with ``h * stride >= H0`` and ``w * stride >= W0``.
        weight: ``O x C x 3 x 3``.
        stride: the upsampling factor.

    Returns:
        ``out`` with the convolution added (autograd sees an in-place update).

    Example::

        >>> low, weight = torch.randn(2, 8, 5, 7), torch.randn(4, 8, 3, 3)
        >>> out = add_upsampled_conv3x3_(torch.zeros(2, 4, 9, 13), low, weight, 2)
        >>> up = torch.nn.functional.interpolate(low, scale_factor=2.0, mode="bilinear")[:, :, :9, :13]
        >>> torch.allclose(out, torch.nn.functional.conv2d(up, weight, padding=1), atol=1e-5)
        True
    """
    if low.shape[2] * stride < out.shape[2] or low.shape[3] * stride < out.shape[3]:
        raise ValueError(
            f"low ({low.shape[2]} x {low.shape[3]}) upsampled by {stride} does not cover out "
            f"({out.shape[2]} x {out.shape[3]})."
        )
    out = out.contiguous(memory_format=torch.channels_last)
    return _UpsampledConv3x3.apply(out, low, weight, stride)


def gated_sum(weights: List[torch.Tensor], experts: List[torch.Tensor]) -> torch.Tensor:
    """``sum_i weights[i] * experts[i]`` (``weights[i]``: ``B x 1 x H x W``), accumulated in place into the first
    product: the plain expression of :func:`mix_experts`, which TorchScript compiles too. In place is safe under
    autograd, as no product needs the sum for its gradient."""
    mixed = weights[0] * experts[0]
    for i in range(1, len(experts)):
        mixed.addcmul_(weights[i], experts[i])
    return mixed


class _MixExperts(torch.autograd.Function):
    """``sum_i weights[:, i:i+1] * experts[i]``; see :func:`mix_experts`."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, *experts: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weights, *experts)
        return gated_sum(list(weights.split(1, dim=1)), list(experts))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weights, *experts = ctx.saved_tensors
        grads: list[torch.Tensor | None] = [None] * (1 + len(experts))
        for i, e in enumerate(experts):
            if ctx.needs_input_grad[i + 1]:
                grads[i + 1] = (grad * weights[:, i : i + 1]).to(e.dtype)
        if ctx.needs_input_grad[0]:
            # the gating weight i's gradient at every pixel: the dot product of the gradient and expert i over the
            # channels, as one batched product of channels-last pixel rows (no product map, no channel sum)
            g = grad.contiguous(memory_format=torch.channels_last)
            b, c, h, w = g.shape
            rows = g.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
            dots = g.new_empty((len(experts), b * h * w, 1, 1))
            for i, e in enumerate(experts):
                cols = e.to(g.dtype).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
                torch.bmm(rows, cols.reshape(b * h * w, c, 1), out=dots[i])
            grads[0] = dots.view(len(experts), b, h, w).permute(1, 0, 2, 3).to(weights.dtype)
        return tuple(grads)


def mix_experts(weights: torch.Tensor, experts: List[torch.Tensor]) -> torch.Tensor:
    """``sum_i weights[:, i:i+1] * experts[i]``: the mixture-of-experts decoder's gated sum, with a faster backward.

    The same values as the plain expression, and the same gradients up to float rounding. The gradient of gating
    weight ``i`` at a pixel is the dot product over the channels of the incoming gradient and expert ``i``; autograd
    computes it as a full-size product map and a channel sum, this backward as one batched product of the
    channels-last pixel rows per expert.

    Args:
        weights: ``B x E x H x W`` (the softmax gating maps).
        experts: ``E`` maps of ``B x C x H x W`` (channels-last for the fast backward).

    Example::

        >>> w = torch.softmax(torch.randn(2, 3, 4, 5), dim=1)
        >>> experts = [torch.randn(2, 6, 4, 5) for _ in range(3)]
        >>> torch.allclose(mix_experts(w, experts), sum(w[:, i : i + 1] * e for i, e in enumerate(experts)))
        True
    """
    if len(experts) != weights.shape[1]:
        raise ValueError(f"{len(experts)} experts for {weights.shape[1]} gating maps.")
    return _MixExperts.apply(weights, *experts)

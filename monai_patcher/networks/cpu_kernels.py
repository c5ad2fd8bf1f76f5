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
"""

from __future__ import annotations

import torch

__all__ = ["add_upsampled_conv3x3_", "use_cpu_kernels"]


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


class _UpsampledConv3x3(torch.autograd.Function):
    """``out += conv2d(crop(upsample(low, stride)), weight, padding=1)``, in place on ``out``; see
    :func:`add_upsampled_conv3x3_`."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, low: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        b, c, h, w = low.shape
        o, h0, w0 = weight.shape[0], out.shape[2], out.shape[3]
        with torch.autocast(out.device.type, enabled=False):
            low_ = low.to(out.dtype).contiguous(memory_format=torch.channels_last)
            rows = low_.permute(0, 2, 3, 1).reshape(b * h * w, c)  # pixels x C, a view
            # taps[ky]: C x (kx, O), the three taps of a kernel row side by side
            taps = weight.to(out.dtype).permute(2, 1, 3, 0).reshape(3, c, 3 * o)
            # bx: W0 x (j, kx), the horizontal upsampling of each tap column; ay: H0 x (ky, i), the vertical one
            bx = _shifted_upsampling(w, stride, w0, out.dtype, out.device).permute(1, 2, 0).reshape(w0, 3 * w)
            ay = _shifted_upsampling(h, stride, h0, out.dtype, out.device).permute(1, 0, 2).reshape(h0, 3 * h)
            # v[b, ky]: the taps of kernel row ky, summed over kx and upsampled horizontally: h x W0 x O
            v = out.new_empty(b, 3, h, w0, o)
            bx_h = bx.expand(h, w0, 3 * w)
            for ky in range(3):
                z = torch.mm(rows, taps[ky]).view(b, h, 3 * w, o)  # per low row: (j, kx) x O
                for i in range(b):
                    torch.bmm(bx_h, z[i], out=v[i, ky])
            # out[b] (H0 x (W0, O), channels-last) += ay @ v[b] ((ky, i) x (W0, O)): the vertical upsampling, summed
            # over ky
            # (out= rather than addmm_, so that torch.utils.flop_counter counts these products too)
            acc = out.permute(0, 2, 3, 1).view(b, h0, w0 * o)
            for i in range(b):
                torch.addmm(acc[i], ay, v[i].view(3 * h, w0 * o), out=acc[i])
        ctx.mark_dirty(out)
        ctx.save_for_backward(low_, taps, bx, ay)
        ctx.dtypes = (low.dtype, weight.dtype)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        low, taps, bx, ay = ctx.saved_tensors
        b, c, h, w = low.shape
        o, h0, w0 = taps.shape[2] // 3, grad.shape[2], grad.shape[3]
        grad_low = grad_weight = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            with torch.autocast(grad.device.type, enabled=False):
                g = grad.to(low.dtype).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
                g = g.reshape(b, h0, w0 * o)
                # the transposes of the forward's products, in reverse order
                gv = grad.new_empty(b, 3 * h, w0 * o, dtype=low.dtype)
                for i in range(b):
                    torch.mm(ay.t(), g[i], out=gv[i])
                gv = gv.view(b, 3, h, w0, o)
                gz = grad.new_empty(3, b, h, 3 * w, o, dtype=low.dtype)
                bxt_h = bx.t().expand(h, 3 * w, w0)
                for ky in range(3):
                    for i in range(b):
                        torch.bmm(bxt_h, gv[i, ky], out=gz[ky, i])
                gz = gz.view(3, b * h * w, 3 * o)
                rows = low.permute(0, 2, 3, 1).reshape(b * h * w, c)
                if ctx.needs_input_grad[1]:
                    g_rows = torch.mm(gz[0], taps[0].t())
                    for ky in (1, 2):
                        torch.addmm(g_rows, gz[ky], taps[ky].t(), out=g_rows)
                    grad_low = g_rows.view(b, h, w, c).permute(0, 3, 1, 2).to(ctx.dtypes[0])
                if ctx.needs_input_grad[2]:
                    g_taps = torch.bmm(rows.t().expand(3, c, b * h * w), gz)  # ky x C x (kx, O)
                    grad_weight = g_taps.view(3, c, 3, o).permute(3, 1, 0, 2).to(ctx.dtypes[1])
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
    padding are rows of zeros in those matrices. Every step is a matrix product on channels-last memory with no
    layout copy, and the backward is the same products transposed, also at ``low``'s resolution: for
    ``stride = 2`` about a third of the convolution's multiply-adds, for 4 and 8 less again. The values are those of
    the convolution on the upsampled map up to float rounding, for any ``stride`` and any crop.

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


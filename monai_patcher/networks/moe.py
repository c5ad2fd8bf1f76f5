"""The mixture-of-experts decoder of Patcher (Ou et al., MICCAI 2022)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_kernels import add_upsampled_conv3x3_, gated_sum, mix_experts, use_cpu_kernels

__all__ = ["MoEDecoder", "PixelwiseConv"]


def _init_conv_module(module: nn.Module) -> None:
    """Initialise a convolution like mmcv's ``ConvModule``, as the reference decoder's gating convolutions and its
    ``linear_fuse`` (the head's 1x1 conv + BN + ReLU) are: kaiming normal (``mode="fan_out"``,
    ``nonlinearity="relu"``: std ``sqrt(2 / (out_channels * kh * kw))``), bias 0; BatchNorm weight 1, bias 0.

    Meant for ``module.apply``; other modules are left alone. The expert MLPs and the classifier keep PyTorch's
    default initialisation, as in the reference (plain ``nn.Linear`` / ``nn.Conv2d`` there), and so do the gating
    convolutions without BatchNorm (``gate_norm=False``), which have no ConvModule counterpart in the reference.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PixelwiseConv(nn.Conv2d):
    """A 1x1 convolution (a linear map of the channels at every pixel) that runs as one matrix product on CPU.

    The same module, parameters and ``state_dict`` as ``nn.Conv2d(in_channels, out_channels, kernel_size=1)``. On
    its fast path (the attribute ``fast_paths``, set by :func:`~monai_patcher.networks.set_fast_paths`; eager mode on
    CPU) it applies ``F.linear`` to the pixels of the channels-last map, a view, and returns a channels-last view of
    the product: the same values up to float rounding. PyTorch runs a 1x1 convolution of fewer than 16 images on one
    thread with its slow reference kernel rather than oneDNN (``ConvParams::use_mkldnn``), slower than the matrix
    product at the decoder's shapes (docs/architecture.md, "The training step"). Elsewhere (scripted, traced or
    exported graphs, other devices) it is the convolution.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        bias: add a learnable bias.

    Example::

        >>> conv = PixelwiseConv(8, 4)
        >>> conv(torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)).shape
        torch.Size([2, 4, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)
        self.fast_paths = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if self.fast_paths and use_cpu_kernels(x):
                # B x C x H x W channels-last -> B x H x W x C (a view) -> B x H x W x O -> channels-last B x O x H x W
                return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        return self._conv_forward(x, self.weight, self.bias)


def _pixel_mlp(in_channels: int, hidden: Sequence[int]) -> nn.Sequential:
    """Pixel-wise MLP as 1x1 convolutions: ``in -> hidden[0] -> ... -> hidden[-1]``, ReLU after each layer."""
    layers: list[nn.Module] = []
    for ch in hidden:
        # not in place: the convolution's output is a view on CPU, and an in-place op on a view makes autograd
        # copy the whole map in the backward
        layers += [PixelwiseConv(in_channels, ch), nn.ReLU()]
        in_channels = ch
    return nn.Sequential(*layers)


class MoEDecoder(nn.Module):
    """Mixture-of-experts decoder: one expert per encoder stage, mixed pixel-wise by a gating network.

    1. Each encoder feature map ``i`` goes through its own pixel-wise MLP (hidden ``[decoder_dim, decoder_dim]``,
       ReLU), is upsampled (bilinear, ``align_corners=False``) by its stride relative to the first (finest) map,
       ``feature_strides[i]``, and cropped to that map's size: expert features ``F_i``. Upsampling by the stride,
       not to the finest map's size, keeps the experts aligned when the encoder rounded its sizes up (a 250-pixel
       side gives stage sizes 125/63/32/16, and 125/16 is not 8).
    2. The gating network (3x3 convolutions over the concatenated experts, channels ``gate_channels`` then one
       per expert) followed by a softmax over experts gives weight maps ``W_i`` summing to 1. By default (the
       paper) a ReLU follows every convolution but the last. With ``gate_norm=True`` (the reference's variant,
       mmcv ``ConvModule`` layers) every convolution, the last one included, is a conv without bias + BatchNorm +
       ReLU, and the softmax is taken after that last ReLU. The upsampled experts' parts of the first convolution
       are computed at the experts' own resolution (the same values; see ``_gate_logits``).
    3. ``O = sum_i W_i * F_i``, then a pixel-wise MLP, a 1x1 conv + BatchNorm + ReLU, dropout and a 1x1 conv
       to the class logits (at the finest encoder resolution; the caller upsamples to the input size).

    The head's 1x1 conv before BatchNorm and, with ``gate_norm``, the gating convolutions are initialised like the
    reference's mmcv ``ConvModule`` (kaiming normal, fan_out, bias 0); the expert MLPs, the classifier and the
    gating convolutions without BatchNorm keep PyTorch's defaults (so that the gating starts near uniform).

    The gate's low-resolution parts are the decoder's *fast path*, on by default; the attribute ``fast_paths`` (set
    it with :func:`~monai_patcher.networks.set_fast_paths`) turns it off, for the plain path of the architecture as
    defined (every gating convolution on the upsampled experts), which gives the same values up to float rounding.

    Args:
        in_channels: channels of each encoder output, finest first (one expert each).
        out_channels: number of output classes (logit channels).
        decoder_dim: channels of every expert feature and of the head.
        gate_channels: hidden channels of the gating network's 3x3 convolutions (the paper: ``(256, 256, 256)``;
            the reference's best stroke/polyp config: ``(256,)``).
        gate_norm: the reference's gating variant: BatchNorm + ReLU after every gating convolution, the last one
            (to ``num_experts`` channels) included, convolutions without bias.
        dropout_rate: dropout before the classifier.
        feature_strides: stride of each encoder map relative to the first, finest first (the first is 1); default
            ``(1, 2, 4, ...)``, the Patcher encoder with ``small_patch=2``. Feature map ``i`` of ``H_i x W_i``
            must cover the first one, ``H_i * feature_strides[i] >= H_0`` (and the same for ``W``).

    Example::

        >>> dec = MoEDecoder((64, 128, 320, 512), out_channels=1)
        >>> feats = [torch.randn(1, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate((64, 128, 320, 512))]
        >>> logits, gating = dec(feats)
        >>> logits.shape, gating.shape
        (torch.Size([1, 1, 64, 64]), torch.Size([1, 4, 64, 64]))
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        decoder_dim: int = 256,
        gate_channels: Sequence[int] = (256, 256, 256),
        gate_norm: bool = False,
        dropout_rate: float = 0.1,
        feature_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels) < 1:
            raise ValueError("in_channels must list at least one encoder stage.")
        if feature_strides is None:
            feature_strides = [2**i for i in range(len(in_channels))]
        feature_strides = [int(s) for s in feature_strides]
        if len(feature_strides) != len(in_channels):
            raise ValueError(
                f"feature_strides has {len(feature_strides)} values for {len(in_channels)} encoder stages."
            )
        if feature_strides[0] != 1 or min(feature_strides) < 1:
            raise ValueError(
                f"feature_strides are relative to the first map: the first must be 1 and all >= 1, "
                f"got {feature_strides}."
            )
        if out_channels < 1 or decoder_dim < 1:
            raise ValueError(f"out_channels and decoder_dim must be >= 1, got {out_channels} and {decoder_dim}.")
        if any(c < 1 for c in gate_channels):
            raise ValueError(f"gate_channels must all be >= 1, got {tuple(gate_channels)}.")
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate}.")
        self.num_experts = len(in_channels)
        self.decoder_dim = decoder_dim
        self.feature_strides: List[int] = feature_strides
        self.experts = nn.ModuleList([_pixel_mlp(c, (decoder_dim, decoder_dim)) for c in in_channels])

        gate: list[nn.Module] = []
        ch = decoder_dim * self.num_experts
        widths = [*gate_channels, self.num_experts]
        for j, width in enumerate(widths):
            gate.append(nn.Conv2d(ch, width, kernel_size=3, padding=1, bias=not gate_norm))
            if gate_norm:  # the reference's ConvModule: conv + BN + ReLU, the last one to num_experts included
                gate += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            elif j < len(widths) - 1:
                gate.append(nn.ReLU(inplace=True))
            ch = width
        self.gate = nn.Sequential(*gate)
        if gate_norm:
            # the reference's ConvModules (conv + BN + ReLU). Without BatchNorm the reference has no convolutional
            # gating, and this init would saturate the softmax from the start (paper preset at init: mean top weight
            # 0.82, experts 3/4 at 1 % / 0.1 %), so plain convolutions keep PyTorch's default init, which starts
            # near uniform (0.25 per expert)
            self.gate.apply(_init_conv_module)

        self.head = nn.Sequential(
            _pixel_mlp(decoder_dim, (decoder_dim, decoder_dim)),
            PixelwiseConv(decoder_dim, decoder_dim, bias=False),
            nn.BatchNorm2d(decoder_dim),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout_rate),
            PixelwiseConv(decoder_dim, out_channels),
        )
        self.fast_paths = True  # see _gate_logits and monai_patcher.networks.set_fast_paths
        # experts with at least this many channels take the gate's first convolution at their own resolution
        # (_add_upsampled_conv) where the CPU kernel does not run; below it the 9 upsampled taps cost more than the
        # convolution they replace (measured in docs/architecture.md, "The upsampled experts' part of the gate")
        self.low_res_gate_min_channels = 128
        self.head[1:3].apply(_init_conv_module)  # the reference's linear_fuse (a ConvModule): 1x1 conv + BN
        # The decoder runs channels-last: a 1x1 convolution is then one GEMM over the pixels and oneDNN's 3x3
        # convolutions are faster in that layout; channels-last weights avoid a reorder on every call (and give
        # gradients the parameters' own layout, as DistributedDataParallel expects).
        self.to(memory_format=torch.channels_last)

    def _gate_logits(self, low: List[torch.Tensor], experts: List[torch.Tensor]) -> torch.Tensor:
        """The gating network on the experts side by side (``B x (E * decoder_dim) x H_0 x W_0``), without the cat.

        The first 3x3 convolution over the concatenation is the sum of one convolution per expert with that
        expert's slice of the weight: the same values up to float rounding, with no ``E * decoder_dim`` channel
        buffer (67 MB for a 256 x 256 input) and faster on CPU (docs/architecture.md). On the fast path
        (``fast_paths``, default on) the upsampled experts' parts run at their own resolution: in eager mode on CPU,
        with and without autograd, by :func:`~monai_patcher.networks.cpu_kernels.add_upsampled_conv3x3_`; elsewhere
        (scripted, traced or exported graphs, other devices) without autograd only, by :meth:`_add_upsampled_conv`,
        and for experts of at least ``low_res_gate_min_channels`` (an attribute, 128) channels only, below which its
        9 upsampled taps cost more than the convolution they replace. Otherwise every part is a convolution on the
        upsampled expert.

        Args:
            low: each expert's MLP output at its stage's resolution.
            experts: the same upsampled by the stage's stride and cropped to ``H_0 x W_0`` (``F_i``).
        """
        first = self.gate[0]
        dim = self.decoder_dim
        x = F.conv2d(experts[0], first.weight[:, :dim], first.bias, padding=1)
        kernels = False
        if not torch.jit.is_scripting():
            kernels = self.fast_paths and use_cpu_kernels(x)
        for i in range(1, self.num_experts):
            weight = first.weight[:, i * dim : (i + 1) * dim]
            stride = self.feature_strides[i]
            if stride > 1 and kernels:
                x = add_upsampled_conv3x3_(x, low[i], weight, stride)
            elif stride > 1 and self.fast_paths and dim >= self.low_res_gate_min_channels and not torch.is_grad_enabled():
                self._add_upsampled_conv(x, low[i], weight, stride)
            else:
                x += F.conv2d(experts[i], weight, None, padding=1)
        for j, layer in enumerate(self.gate):
            if j > 0:
                x = layer(x)
        return x

    @staticmethod
    def _add_upsampled_conv(out: torch.Tensor, low: torch.Tensor, weight: torch.Tensor, stride: int) -> None:
        """``out += conv2d(crop(upsample(low)), weight, padding=1)``, with the GEMMs at ``low``'s resolution.

        A 3x3 convolution is the sum over its 9 taps of a 1x1 convolution (a per-pixel linear map of the channels)
        shifted by the tap's offset, with zeros outside the image (the padding). A per-pixel channel map commutes
        with bilinear upsampling (a per-channel spatial map) and with the crop, so each tap's 1x1 convolution runs
        on the ``stride``-times smaller map, and only its ``out_channels`` result is upsampled, cropped and added
        at the tap's offset. The same values up to float rounding, with ``1 / stride**2`` of the multiply-adds
        (counts in docs/architecture.md). It is made of operators that TorchScript and both ONNX exporters handle;
        eager CPU code takes :func:`~monai_patcher.networks.cpu_kernels.add_upsampled_conv3x3_` instead.

        Args:
            out: ``B x out_channels x H_0 x W_0``, added to in place.
            low: ``B x C x h x w`` with ``h * stride >= H_0`` and ``w * stride >= W_0``.
            weight: ``out_channels x C x 3 x 3``.
            stride: the upsampling factor of ``low``.
        """
        b, c, h, w = low.shape
        h0, w0 = out.shape[2], out.shape[3]
        taps = weight.permute(2, 3, 1, 0).reshape(9, c, weight.shape[0])  # (ky, kx) x C x out_channels
        # B x C x h x w (channels-last) -> 1 x (B*h*w) x C; one GEMM per tap: 9 x (B*h*w) x out_channels
        z = torch.matmul(low.permute(0, 2, 3, 1).reshape(1, b * h * w, c), taps)
        for t in range(9):
            # out[p] += up[p + d] for the tap's offset d = (ky - 1, kx - 1), where both are inside the image
            ky, kx = t // 3, t % 3
            tap = z[t].view(b, h, w, -1).permute(0, 3, 1, 2)  # a channels-last view
            # upsampled to h*stride x w*stride; the slices below stay inside its first h0 x w0 (the crop)
            up = F.interpolate(tap, size=[h * stride, w * stride], mode="bilinear", align_corners=False)
            dst_y, src_y, ny = (1, 0, h0 - 1) if ky == 0 else (0, ky - 1, h0 - ky + 1)
            dst_x, src_x, nx = (1, 0, w0 - 1) if kx == 0 else (0, kx - 1, w0 - kx + 1)
            out[:, :, dst_y : dst_y + ny, dst_x : dst_x + nx] += up[:, :, src_y : src_y + ny, src_x : src_x + nx]

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mix the experts.

        Args:
            features: encoder outputs, finest first, ``B x in_channels[i] x H_i x W_i``.

        Returns:
            ``(logits, gating)``: ``B x out_channels x H_0 x W_0`` and ``B x num_experts x H_0 x W_0`` (softmax
            weights, summing to 1 at every pixel).
        """
        if len(features) != self.num_experts:
            raise ValueError(f"expected {self.num_experts} feature maps, got {len(features)}.")
        h0, w0 = features[0].shape[2], features[0].shape[3]
        low: List[torch.Tensor] = []  # each expert at its stage's resolution
        experts: List[torch.Tensor] = []  # upsampled to the first map's size
        for i, mlp in enumerate(self.experts):  # indexing, not zip: TorchScript needs a static ModuleList loop
            # the MLP runs at the stage's own resolution, before upsampling
            e = mlp(features[i].contiguous(memory_format=torch.channels_last))
            low.append(e)
            if i > 0:
                # upsample by the stage's stride (to H_i * s, the same values as scale_factor=s), then crop what
                # the encoder's rounding up added; the crop is a no-op view when the sizes divide exactly, skipped
                # then in eager mode (its backward would zero-fill a full-size gradient), and kept in scripted and
                # traced graphs, which must work at other sizes
                s = self.feature_strides[i]
                if e.shape[2] * s < h0 or e.shape[3] * s < w0:
                    raise ValueError(
                        f"feature map {i} ({e.shape[2]} x {e.shape[3]}) at stride {s} does not cover the first map "
                        f"({h0} x {w0})."
                    )
                e = F.interpolate(e, size=[e.shape[2] * s, e.shape[3] * s], mode="bilinear", align_corners=False)
                crop = True
                if not torch.jit.is_scripting():
                    crop = torch.jit.is_tracing() or e.shape[2] != h0 or e.shape[3] != w0
                if crop:
                    e = e[:, :, :h0, :w0]
                e = e.contiguous(memory_format=torch.channels_last)
            experts.append(e)
        gating = torch.softmax(self._gate_logits(low, experts), dim=1)  # B x E x H_0 x W_0
        # the same sum, with the gating maps' gradient as batched dot products (cpu_kernels; TorchScript compiles
        # only the plain branch)
        if not torch.jit.is_scripting() and self.fast_paths and use_cpu_kernels(gating):
            mixed = mix_experts(gating, experts)
        else:  # split: one backward copy for all the maps (slicing would zero-fill a full one each)
            mixed = gated_sum(gating.split(1, dim=1), experts)  # B x decoder_dim x H_0 x W_0
        return self.head(mixed).contiguous(), gating.contiguous()

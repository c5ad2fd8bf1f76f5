"""Polyp (RGB endoscopy) pipelines: Kvasir-SEG style JPEG/PNG image + mask pairs.

Images and masks are read by :class:`~monai_patcher.data.PolypImageReader` (images as RGB whatever their PIL mode,
masks with their stored values, palette masks as their indices; damaged files and decompression bombs refused with
the file named). Like MONAI's ``PILReader`` it returns 2D images transposed to ``(W, H)``; image and mask are read
the same way, so they stay aligned, and ``SaveImaged`` (``PILWriter``) transposes back, so a saved mask has the
image's ``H x W``. The existing checkpoints were trained on that layout.

Masks may be 0/255 or 0/1, gray, RGB or RGBA (:class:`BinarizeMaskd`). :class:`EnsureRGBd` makes channel-first images
RGB for readers that do not (the pipelines here do not need it).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropd,
    RandZoomd,
    Resized,
    ScaleIntensityRanged,
    SpatialPadd,
)

from ..data.errors import DataError
from ..data.readers.polyp_reader import PolypImageReader
from .checks import CheckGeometryd, CheckVolumed, source_name

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BinarizeMaskd",
    "EnsureRGBd",
    "polyp_load_transforms",
    "polyp_train_transforms",
    "polyp_val_transforms",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _drop_alpha(t: torch.Tensor) -> torch.Tensor:
    """Channel-first gray+alpha (2) or RGBA (4) -> gray (1) or RGB (3); other channel counts unchanged."""
    return t[:-1] if t.shape[0] in (2, 4) else t


class BinarizeMaskd(MapTransform):
    """Turn a mask (gray, RGB or RGBA; 0/255 or 0/1) into one channel of {0, 1}: mean over channels ``> threshold``.

    Kvasir-SEG masks are JPEG, so their edges carry compression noise; thresholding at 127 (of 255)
    gives the binary mask. An alpha channel (gray+alpha, RGBA) is dropped first.

    0/1 masks (PNG label maps, palette PNGs with indices 0/1): with ``detect_01`` (default) a mask whose
    values are all in [0, 1] is thresholded at 0.5 instead, so it is not silently read as empty. A mask
    with values above 1 but none above ``threshold`` (e.g. a 0/1/2 label map, or a 0/100 mask) would come
    out empty: that raises a :class:`~monai_patcher.data.DataError` naming the file, rather than training
    on an empty label. An all-zero mask is a legitimate empty label.

    Args:
        keys: mask keys (channel-first).
        threshold: values strictly above it are foreground (default 127, for 0/255 masks).
        detect_01: threshold masks whose maximum is at most 1 at 0.5 (default True).
        allow_missing_keys: skip missing keys.

    Raises:
        DataError: non-empty mask with nothing above ``threshold`` (and not a 0/1 mask).

    Example:
        >>> import torch
        >>> BinarizeMaskd("m")({"m": torch.tensor([[[0., 130.], [255., 127.]]])})["m"].tolist()
        [[[0.0, 1.0], [1.0, 0.0]]]
        >>> BinarizeMaskd("m")({"m": torch.tensor([[[0., 1.], [1., 0.]]])})["m"].tolist()  # a 0/1 mask
        [[[0.0, 1.0], [1.0, 0.0]]]
    """

    def __init__(self, keys: KeysCollection, threshold: float = 127.0, detect_01: bool = True,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold
        self.detect_01 = detect_01

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            m = d[key]
            mean = _drop_alpha(torch.as_tensor(m).float()).mean(dim=0, keepdim=True)
            top = float(mean.max()) if mean.numel() else 0.0
            threshold = self.threshold
            if self.detect_01 and top <= 1.0 < threshold:
                threshold = 0.5
            elif 0 < top <= threshold:
                raise DataError(
                    f"{source_name(d, key)}: mask values go up to {top:g} but none is above the threshold "
                    f"{threshold:g}, so the label would be empty. Expected a 0/255 (or 0/1) mask; for another "
                    f"encoding pass BinarizeMaskd(threshold=...)")
            out = (mean > threshold).float()
            if isinstance(m, MetaTensor):
                out = MetaTensor(out, meta=dict(m.meta), applied_operations=list(m.applied_operations))
            d[key] = out
        return d


class EnsureRGBd(MapTransform):
    """Make channel-first 2D images RGB: gray -> 3 equal channels, gray+alpha / RGBA -> alpha dropped.

    What PIL's ``convert("RGB")`` does (alpha dropped, not composited), so grayscale or RGBA endoscopy
    frames go through the ImageNet normalisation (3 channels) instead of failing there with MONAI's
    generic "img has N channels, but subtrahend has 3 components".

    Args:
        keys: image keys (after ``EnsureChannelFirstd``).
        allow_missing_keys: skip missing keys.

    Raises:
        DataError: a channel count other than 1-4, naming the file.

    Example:
        >>> import torch
        >>> tuple(EnsureRGBd("x")({"x": torch.zeros(1, 4, 5)})["x"].shape)
        (3, 4, 5)
    """

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            c = int(x.shape[0])
            if c == 3:
                continue
            if c not in (1, 2, 4):
                raise DataError(f"{source_name(d, key)}: image has {c} channels; expected RGB (3), RGBA (4), "
                                f"gray (1) or gray+alpha (2)")
            x = _drop_alpha(x)
            d[key] = x.repeat(3, *([1] * (x.ndim - 1))) if x.shape[0] == 1 else x
        return d


def polyp_load_transforms(image_key: str = "image", label_key: str | None = "label") -> list:
    """Read + check + binarise + ImageNet-normalise (no resizing).

    ``LoadImaged(PolypImageReader)`` (images RGB, masks ``PolypImageReader(label=True)``) -> ``EnsureChannelFirstd``
    -> ``CheckVolumed(spatial_dims=2)`` -> ``CheckGeometryd`` (same size) -> ``BinarizeMaskd(127)`` (0/255 or 0/1
    masks) -> ``ScaleIntensityRanged(0-255 -> 0-1)`` -> ``NormalizeIntensityd(ImageNet mean/std, channel_wise)``.
    """
    keys = [image_key] + ([label_key] if label_key else [])
    xs = [LoadImaged(image_key, reader=PolypImageReader(), image_only=True)]
    if label_key:
        xs.append(LoadImaged(label_key, reader=PolypImageReader(label=True), image_only=True))
    xs += [
        EnsureChannelFirstd(keys),
        CheckVolumed(image_key, spatial_dims=2),
    ]
    if label_key:
        xs += [
            CheckVolumed(label_key, spatial_dims=2, allow_constant=True),
            CheckGeometryd(keys, check_affine=False),
            BinarizeMaskd(label_key, threshold=127),
        ]
    xs += [
        ScaleIntensityRanged(image_key, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0),
        NormalizeIntensityd(image_key, subtrahend=IMAGENET_MEAN, divisor=IMAGENET_STD, channel_wise=True),
    ]
    return xs


def polyp_train_transforms(
    image_key: str = "image",
    label_key: str = "label",
    spatial_size: int = 256,
    scale_range: tuple[float, float] = (0.5, 1.5),
) -> Compose:
    """Polyp training: load/normalise -> ``Resized(256)`` -> the reference augmentation.

    ``RandZoomd(0.5-1.5, keep_size=False)`` -> ``SpatialPadd(256)`` -> ``RandSpatialCropd(256)`` ->
    ``RandFlipd`` (both axes, p = 0.5 each) -> ``RandRotate90d`` (p = 0.5, k in 1..3).
    Output: ``image`` (3, 256, 256) float32, ``label`` (1, 256, 256) in {0, 1}.

    Args:
        image_key, label_key: datalist keys.
        spatial_size: network input size.
        scale_range: random rescale factors.
    """
    keys = [image_key, label_key]
    s = (spatial_size, spatial_size)
    return Compose(
        polyp_load_transforms(image_key, label_key)
        + [
            Resized(keys, spatial_size=s, mode=["bilinear", "nearest"]),
            RandZoomd(keys, prob=1.0, min_zoom=scale_range[0], max_zoom=scale_range[1], keep_size=False,
                      mode=["bilinear", "nearest"], padding_mode="constant"),
            SpatialPadd(keys, spatial_size=s),
            RandSpatialCropd(keys, roi_size=s, random_size=False),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandRotate90d(keys, prob=0.5, max_k=3),
            EnsureTyped(keys, dtype=torch.float32),
        ]
    )


def polyp_val_transforms(image_key: str = "image", label_key: str | None = "label", spatial_size: int = 256) -> Compose:
    """Polyp validation/inference: load/normalise -> ``Resized(256)`` (``Invertd`` restores the image size).

    Args:
        image_key, label_key: datalist keys (label_key None for inference).
        spatial_size: network input size.
    """
    keys = [image_key] + ([label_key] if label_key else [])
    return Compose(
        polyp_load_transforms(image_key, label_key)
        + [
            Resized(keys, spatial_size=(spatial_size, spatial_size), mode=["bilinear"] + (["nearest"] if label_key else [])),
            EnsureTyped(keys, dtype=torch.float32),
        ]
    )

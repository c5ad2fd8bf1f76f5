"""Overlays in the paper's colours and gating-map pictures.

The Patcher paper (Ou et al., MICCAI 2022, Fig. 3) shows predictions over the image with true positives
in **green**, false positives in **red** and false negatives in **white**. :func:`overlay` builds that
picture from an image slice, a predicted mask and (optionally) the ground truth; without a ground truth
the prediction is drawn in green. :func:`gating_rgb` turns the 4 mixture-of-experts weight maps into one
colour image (expert 1 red, 2 green, 3 blue, 4 yellow) like the paper's Fig. 4.
"""

from __future__ import annotations

import os
import numpy as np

__all__ = [
    "TP_COLOR",
    "FP_COLOR",
    "FN_COLOR",
    "to_uint8",
    "overlay",
    "gating_rgb",
    "save_png",
    "volume_overlays",
    "upscale",
    "mark_empty",
]

TP_COLOR = (0, 255, 0)  #: true positive: green
FP_COLOR = (255, 0, 0)  #: false positive: red
FN_COLOR = (255, 255, 255)  #: false negative: white
_EXPERT_COLORS = np.asarray([(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25)], dtype=np.float32)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_uint8(image, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Grey or RGB image -> ``uint8`` (H x W or H x W x 3), contrast stretched between two percentiles.

    Args:
        image: ``H x W`` (grey) or ``H x W x 3`` / ``3 x H x W`` (RGB) array or tensor, any range.
        percentiles: the lower/upper percentiles mapped to 0 and 255 (an image already in ``uint8`` is kept).
    """
    img = _np(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype == np.uint8:
        return img
    img = img.astype(np.float32)
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return np.zeros(img.shape, np.uint8)
    lo, hi = np.percentile(finite, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def overlay(image, pred, label=None, alpha: float = 0.6) -> np.ndarray:
    """Colour a prediction over an image: TP green, FP red, FN white (paper colours).

    Args:
        image: ``H x W`` grey or ``H x W x 3`` RGB image (any range, see :func:`to_uint8`).
        pred: ``H x W`` predicted mask (``> 0.5`` is foreground).
        label: optional ``H x W`` ground truth (``> 0.5``). Without it every predicted pixel is drawn green.
        alpha: opacity of the colours (1: solid).

    Returns:
        ``H x W x 3`` ``uint8`` RGB image.

    Raises:
        ValueError: the shapes differ.
    """
    base = to_uint8(image)
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=-1)
    p = _np(pred).squeeze() > 0.5
    if p.shape != base.shape[:2]:
        raise ValueError(f"pred has shape {p.shape}, the image {base.shape[:2]}: they must match")
    out = base.astype(np.float32)
    if label is None:
        layers = [(p, TP_COLOR)]
    else:
        g = _np(label).squeeze() > 0.5
        if g.shape != p.shape:
            raise ValueError(f"label has shape {g.shape}, pred {p.shape}: they must match")
        layers = [(p & g, TP_COLOR), (p & ~g, FP_COLOR), (~p & g, FN_COLOR)]
    for mask, color in layers:
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


def gating_rgb(gating, image=None, alpha: float = 0.5) -> np.ndarray:
    """Mixture-of-experts weight maps (``4 x H x W``, summing to 1) -> one RGB picture.

    Each pixel's colour is the weight-averaged colour of the experts (1 red, 2 green, 3 blue, 4 yellow),
    blended over ``image`` if given.

    Args:
        gating: ``E x H x W`` weights (E <= 4).
        image: optional ``H x W`` (or RGB) image to blend under the colours.
        alpha: opacity of the colours over the image.
    """
    g = _np(gating).astype(np.float32)
    if g.ndim != 3 or g.shape[0] > len(_EXPERT_COLORS):
        raise ValueError(f"gating must be E x H x W with E <= {len(_EXPERT_COLORS)}, got shape {g.shape}")
    rgb = np.tensordot(g, _EXPERT_COLORS[: g.shape[0]], axes=([0], [0]))  # H x W x 3
    if image is not None:
        base = to_uint8(image)
        if base.ndim == 2:
            base = np.repeat(base[..., None], 3, axis=-1)
        rgb = (1 - alpha) * base.astype(np.float32) + alpha * rgb
    return rgb.round().clip(0, 255).astype(np.uint8)


def save_png(rgb: np.ndarray, path: str | os.PathLike) -> str:
    """Write an ``H x W x 3`` (or ``H x W``) ``uint8`` array as PNG, creating the folder. Returns the path."""
    from PIL import Image

    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path)
    return path


def upscale(rgb: np.ndarray, min_size: int) -> np.ndarray:
    """``rgb`` (``H x W [x 3]``) enlarged by the smallest whole factor that makes its shorter side at least
    ``min_size`` pixels, each voxel a block of pixels (nearest neighbour: no colour is blended); unchanged if it is
    large enough already (or ``min_size`` <= 0). A 64 x 64 slice becomes 256 x 256 for ``min_size=256``."""
    short = min(rgb.shape[0], rgb.shape[1])
    if min_size <= 0 or short >= min_size or short == 0:
        return rgb
    f = -(-int(min_size) // short)
    return np.repeat(np.repeat(rgb, f, axis=0), f, axis=1)


def mark_empty(rgb: np.ndarray, text: str = "empty prediction") -> np.ndarray:
    """``rgb`` (``H x W x 3`` uint8) with a yellow frame and ``text`` in its top-left corner: the picture of a
    prediction with no foreground, so it is not mistaken for a missing or unread overlay."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(picture)
    w, h = picture.size
    draw.rectangle([0, 0, w - 1, h - 1], outline=(255, 225, 25), width=max(1, min(w, h) // 64))
    draw.text((4, 2), text, fill=(255, 225, 25))
    return np.asarray(picture)


def _display(slice_2d: np.ndarray) -> np.ndarray:
    """A RAS voxel slice ``X x Y`` -> a picture ``rows x cols``: the second axis points up (anterior or superior), the first
    runs left to right, so an axial RAS slice shows the patient's left on the picture's left (neurological convention)."""
    return np.flipud(np.asarray(slice_2d).T)


def volume_overlays(
    image, pred, label=None, axis: int = 2, only_nonempty: bool = True, alpha: float = 0.6
) -> list[tuple[int, np.ndarray]]:
    """Overlays of every slice of a volume (``X x Y x Z`` arrays; a leading channel axis of 1 is dropped).

    Args:
        image, pred, label: volumes of one shape (label optional).
        axis: the axis to cut along.
        only_nonempty: keep only slices where the prediction or the label has foreground.
        alpha: colour opacity.

    Returns:
        ``[(slice_index, H x W x 3 uint8), ...]``
    """
    img, prd = _np(image), _np(pred)
    lab = None if label is None else _np(label)
    vols = [img, prd] + ([lab] if lab is not None else [])
    vols = [v[0] if v.ndim == 4 else v for v in vols]
    img, prd = vols[0], vols[1]
    lab = vols[2] if lab is not None else None
    out = []
    for i in range(img.shape[axis]):
        p = np.take(prd, i, axis=axis)
        g = None if lab is None else np.take(lab, i, axis=axis)
        if only_nonempty and not ((p > 0.5).any() or (g is not None and (g > 0.5).any())):
            continue
        out.append(
            (i, overlay(_display(np.take(img, i, axis=axis)), _display(p), None if g is None else _display(g), alpha))
        )
    return out



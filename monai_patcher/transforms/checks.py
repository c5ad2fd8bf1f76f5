"""Input checks as MONAI dictionary transforms: bad data fails early with a message naming the file.

Put them right after ``LoadImaged`` + ``EnsureChannelFirstd`` (they need channel-first arrays). They
never modify the data; they only raise :class:`monai_patcher.data.DataError`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

from ..data.errors import DataError

__all__ = ["CheckVolumed", "CheckGeometryd", "source_name"]


def source_name(data: Mapping, key: Hashable) -> str:
    """Where ``data[key]`` came from: the file in its metadata, else ``"<key 'name'>"``.

    Args:
        data: a MONAI data dictionary.
        key: the key of a (Meta)Tensor in it.
    """
    value = data.get(key)
    meta = value.meta if isinstance(value, MetaTensor) else data.get(f"{key}_meta_dict", {})
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return f"{name} (key {key!r})" if name else f"<key {key!r}>"


def _spatial_shape(x) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape[1:])


class CheckVolumed(MapTransform):
    """Check channel-first images: spatial dimensionality, NaN/Inf voxels, empty or constant content.

    Args:
        keys: keys of channel-first arrays (after ``EnsureChannelFirstd``).
        spatial_dims: expected number of spatial axes (3 for volumes, 2 for images).
        min_size: every spatial axis must have at least this many voxels (so a single-slice "volume",
            e.g. one DICOM file read where a series was expected, is refused with ``min_size=2``).
        allow_nonfinite: accept NaN/Inf voxels (default False: refuse them).
        allow_constant: accept a channel whose voxels all have one value, e.g. an empty (all-zero) scan
            (default False). Set True for labels, which may be legitimately empty.
        num_channels: the number of channels each image must have (None: any). A 4D file (several b-values, echoes
            or time points) where one volume is expected is refused with a message saying so.
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        DataError: ``"<file> (key 'adc'): contains 3 NaN and 0 infinite voxels"`` and the like.

    Example:
        >>> from monai.transforms import Compose, LoadImaged, EnsureChannelFirstd
        >>> from monai_patcher.data import SimpleITKReader
        >>> check = Compose([LoadImaged(["dwi", "adc"], reader=SimpleITKReader()), EnsureChannelFirstd(["dwi", "adc"]),
        ...                  CheckVolumed(["dwi", "adc"], spatial_dims=3)])  # doctest: +SKIP
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int = 3,
        min_size: int = 2,
        allow_nonfinite: bool = False,
        allow_constant: bool = False,
        num_channels: int | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if num_channels is not None and num_channels < 1:
            raise ValueError(f"num_channels must be positive or None, got {num_channels}")
        self.num_channels = num_channels
        self.spatial_dims = spatial_dims
        self.min_size = min_size
        self.allow_nonfinite = allow_nonfinite
        self.allow_constant = allow_constant

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            where = source_name(d, key)
            shape = _spatial_shape(x)
            if len(shape) != self.spatial_dims:
                kind = "volume" if self.spatial_dims == 3 else f"{self.spatial_dims}D image"
                raise DataError(
                    f"{where}: expected a {kind} (channel + {self.spatial_dims} spatial axes), got an array of shape "
                    f"{tuple(x.shape)} ({len(shape)} spatial axes)"
                )
            channels = int(x.shape[0])
            if self.num_channels is not None and channels != self.num_channels:
                several = (
                    f": the file holds {channels} volumes (a 4D image: several b-values, echoes or time points in one "
                    "file?); give the one volume to use: for a DWI, the b = 1000 trace image (from a DICOM series "
                    "holding several b-values SimpleITKReader(b_value=1000) picks it; from a 4D NIfTI extract it "
                    "first, e.g. nibabel's img.slicer[..., k] with k the b = 1000 entry of its .bval file)"
                    if self.num_channels == 1 and channels > 1 else ""
                )
                raise DataError(f"{where}: expected {self.num_channels} channel(s), got {channels}{several}")
            if min(shape) < self.min_size:
                raise DataError(
                    f"{where}: spatial shape {shape} has an axis with fewer than {self.min_size} voxels; "
                    + ("a 2D image (single slice) was given where a volume is expected" if self.spatial_dims == 3
                       else "the image is degenerate")
                )
            t = convert_to_tensor(x, track_meta=False)  # plain tensor ops: no MetaTensor bookkeeping
            if t.is_floating_point() and not self.allow_nonfinite and not bool(torch.isfinite(t).all()):
                n_nan = int(torch.isnan(t).sum())  # counted only for the message
                n_inf = int(torch.isinf(t).sum())
                raise DataError(f"{where}: contains {n_nan} NaN and {n_inf} infinite voxels")
            if not self.allow_constant:
                for c in range(t.shape[0]):
                    lo, hi = torch.aminmax(t[c])
                    if lo == hi:
                        what = "empty (every voxel is 0)" if float(lo) == 0 else f"constant (every voxel is {float(lo):g})"
                        raise DataError(f"{where}: channel {c} is {what}")
        return d


class CheckGeometryd(MapTransform):
    """Check that images (channels of one case, and its label) share one voxel grid.

    Compares the spatial shape and the affine of every key with the first one (the reference).

    Args:
        keys: keys of channel-first MetaTensors, reference first (e.g. ``["dwi", "adc", "label"]``).
        atol: tolerance on affine entries (mm).
        check_affine: also compare affines (default True); shapes are always compared.
        allow_missing_keys: skip missing keys (e.g. no label at inference).

    Raises:
        DataError: e.g. ``"label.nii.gz (key 'label') has spatial shape (64, 64, 16) but dwi.nii.gz (key 'dwi')
            has (64, 64, 15): they must share one voxel grid"``.
    """

    def __init__(self, keys: KeysCollection, atol: float = 1e-3, check_affine: bool = True,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.atol = atol
        self.check_affine = check_affine

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if len(keys) < 2:
            return d
        ref = keys[0]
        ref_shape = _spatial_shape(d[ref])
        ref_affine = d[ref].affine if isinstance(d[ref], MetaTensor) else None
        for key in keys[1:]:
            shape = _spatial_shape(d[key])
            if shape != ref_shape:
                raise DataError(
                    f"{source_name(d, key)} has spatial shape {shape} but {source_name(d, ref)} has {ref_shape}: "
                    "they must share one voxel grid"
                )
            if self.check_affine and ref_affine is not None and isinstance(d[key], MetaTensor):
                a, b = np.asarray(d[key].affine, dtype=float), np.asarray(ref_affine, dtype=float)
                if a.shape != b.shape or not np.allclose(a, b, atol=self.atol):
                    diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
                    raise DataError(
                        f"{source_name(d, key)} has a different affine (orientation/spacing/origin) from "
                        f"{source_name(d, ref)} (largest difference {diff:.4g}): resample them onto one grid first"
                    )
        return d

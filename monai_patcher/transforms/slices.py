"""3D volumes -> 2D slice samples, and back.

* Training: :class:`RandSliced`, a randomizable dictionary transform that returns a list of
  ``num_samples`` 2D samples (like MONAI's ``RandCropByPosNegLabeld``), drawing lesion slices with
  probability ``pos_ratio``. Put it after the deterministic volume transforms in a
  ``CacheDataset``: MONAI caches everything before the first random transform, so each volume is
  decoded, oriented and normalised once, and each epoch only slices the cached arrays.
* Validation / evaluation: :class:`SliceDataset` yields every slice of every volume of a (cached)
  volume dataset, with its case and slice index in the metadata; :func:`stack_slices` puts slice
  predictions back into a volume for per-case metrics. (For whole-volume inference MONAI's own
  ``SliceInferer(roi_size=(256, 256), spatial_dim=2)`` runs a 2D network over all slices directly;
  both give the same slices.)

Axes: ``axis`` is a *spatial* axis of a channel-first volume ``(C, X, Y, Z)``: 0, 1 or 2. After
``Orientationd(axcodes="RAS")`` axis 2 is the axial (superior-inferior) axis, the default.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from monai.transforms.traits import MultiSampleTrait
from monai.utils import MetaKeys, convert_to_tensor

from ..data.errors import DataError
from .checks import source_name

__all__ = ["RandSliced", "SliceDataset", "extract_slice", "stack_slices", "slice_labels", "PLANES", "plane_axis"]

#: metadata entries every 2D sample carries (so predictions can be put back into their volume)
SLICE_INDEX = "slice_index"
SLICE_AXIS = "slice_axis"
NUM_SLICES = "num_slices"
VOLUME_AFFINE = "volume_affine"

#: anatomical plane -> the RAS world axis its slices are stacked along (MONAI affines map voxels to RAS)
PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}


def affine_orientation(affine) -> np.ndarray:
    """nibabel's ``io_orientation`` of a 3D grid's affine: per array axis, its RAS world axis and direction (+-1)."""
    from nibabel.orientations import io_orientation

    return io_orientation(np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu())[:4, :4])


def plane_axis(affine, plane: str, ornt: np.ndarray | None = None) -> int:
    """The array axis (0-2) of a 3D grid along the world axis normal to ``plane`` (a key of :data:`PLANES`).

    Axes are assigned as nibabel's ``io_orientation`` assigns them (what ``Orientationd`` uses, so on an oblique
    scan it is the axis the network sliced along; a per-row argmax could give another axis, or two planes the same
    one).

    Args:
        affine: the grid's voxel-to-RAS affine (4 x 4).
        plane: ``"sagittal"``, ``"coronal"`` or ``"axial"``.
        ornt: :func:`affine_orientation` of ``affine``, if already computed.

    Example:
        >>> affine = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])  # array axis 0 is S
        >>> plane_axis(affine, "axial"), plane_axis(affine, "sagittal")
        (0, 1)
    """
    ornt = affine_orientation(affine) if ornt is None else ornt
    return int(np.flatnonzero(ornt[:, 0] == PLANES[plane])[0])
VOLUME_SHAPE = "volume_spatial_shape"


def extract_slice(x, axis: int, index: int):
    """Slice ``index`` of a channel-first volume along spatial ``axis``: ``(C, X, Y, Z) -> (C, H, W)``.

    A MetaTensor keeps its metadata (file name etc.) plus ``slice_index``, ``slice_axis``, ``num_slices``,
    ``volume_affine`` and ``volume_spatial_shape``; its affine becomes the 2D in-plane scaling (3x3, the
    in-plane voxel sizes), and its transform history is not carried over (invert volume-level transforms
    on the volume after :func:`stack_slices`).

    Args:
        x: channel-first 3D array/tensor.
        axis: spatial axis (0, 1 or 2) to slice along.
        index: slice index along that axis.
    """
    if x.ndim != 4:
        raise DataError(f"expected a channel-first volume (C, X, Y, Z) to slice, got shape {tuple(x.shape)}")
    n = x.shape[axis + 1]
    if not 0 <= index < n:
        raise IndexError(f"slice {index} out of range for axis {axis} with {n} slices")
    idx = [slice(None)] * 4
    idx[axis + 1] = index
    plane = x[tuple(idx)]
    if not isinstance(x, MetaTensor):
        return plane
    arr = plane.as_tensor().clone()
    meta = {k: copy.copy(v) for k, v in x.meta.items() if k not in (MetaKeys.AFFINE,)}
    vol_affine = np.asarray(x.affine, dtype=float)
    in_plane = [a for a in range(3) if a != axis]
    spacing = np.sqrt((vol_affine[:3, :3] ** 2).sum(axis=0))
    affine2d = np.diag([spacing[in_plane[0]], spacing[in_plane[1]], 1.0])
    meta.update(
        {
            SLICE_INDEX: int(index),
            SLICE_AXIS: int(axis),
            NUM_SLICES: int(n),
            VOLUME_AFFINE: torch.as_tensor(vol_affine),
            VOLUME_SHAPE: torch.as_tensor(list(x.shape[1:])),
            MetaKeys.SPATIAL_SHAPE: np.asarray(arr.shape[1:]),
        }
    )
    return MetaTensor(arr, affine=torch.as_tensor(affine2d, dtype=torch.float64), meta=meta)


def slice_labels(label, axis: int) -> np.ndarray:
    """Boolean vector: does slice ``i`` of ``label`` (channel-first) along spatial ``axis`` contain any ``> 0``?

    Args:
        label: channel-first label volume.
        axis: spatial axis.
    """
    t = torch.as_tensor(label) > 0
    dims = [d for d in range(t.ndim) if d != axis + 1]
    return t.amax(dim=dims).cpu().numpy().astype(bool) if t.numel() else np.zeros(0, bool)


class RandSliced(Randomizable, MapTransform, MultiSampleTrait):
    """Draw ``num_samples`` random 2D slices from a case's volumes, lesion slices with probability ``pos_ratio``.

    Lesion slices are rare in stroke MRI (often < 10 % of the slices), so uniform sampling would show the
    network mostly empty slices. Each sample is a lesion ("positive") slice with probability ``pos_ratio``
    and a negative slice otherwise; when a case has no positive (or no negative) slice, the other kind is
    used. With ``image_key`` set, negative slices are drawn only among slices where that image has a
    non-zero voxel (inside the head), not from the empty slices above and below it.

    Args:
        keys: keys of channel-first volumes to slice together (e.g. ``["image", "label"]``).
        label_key: the label defining positive slices (any voxel ``> 0``).
        axis: spatial axis to slice along (2 = axial after ``Orientationd("RAS")``).
        pos_ratio: probability that a sample is a positive slice, in [0, 1].
        num_samples: number of 2D samples returned per case (a list of dicts).
        image_key: optional key whose non-zero slices are the only negative candidates.
        allow_missing_keys: skip missing keys.

    Returns:
        a list of ``num_samples`` dicts; keys in ``keys`` hold ``(C, H, W)`` MetaTensors (see
        :func:`extract_slice` for their metadata), other keys are copied.

    Example:
        >>> import torch
        >>> from monai.data import MetaTensor
        >>> label = torch.zeros(1, 8, 8, 10); label[0, 2:4, 2:4, 7] = 1
        >>> d = {"image": MetaTensor(torch.rand(2, 8, 8, 10)), "label": MetaTensor(label)}
        >>> out = RandSliced(["image", "label"], "label", pos_ratio=1.0, num_samples=3).set_random_state(0)(d)
        >>> [o["label"].meta["slice_index"] for o in out]
        [7, 7, 7]
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: Hashable,
        axis: int = 2,
        pos_ratio: float = 0.5,
        num_samples: int = 4,
        image_key: Hashable | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis}")
        if not 0.0 <= pos_ratio <= 1.0:
            raise ValueError(f"pos_ratio must be in [0, 1], got {pos_ratio}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.label_key = label_key
        self.axis = axis
        self.pos_ratio = pos_ratio
        self.num_samples = num_samples
        self.image_key = image_key
        self._indices: list[int] = []

    def randomize(self, positives: np.ndarray, negatives: np.ndarray) -> None:  # type: ignore[override]
        picks = []
        for _ in range(self.num_samples):
            want_pos = self.R.rand() < self.pos_ratio
            pool = positives if (want_pos and positives.size) or not negatives.size else negatives
            picks.append(int(pool[self.R.randint(pool.size)]))
        self._indices = picks

    def __call__(self, data: Mapping) -> list[dict]:
        d = dict(data)
        if self.label_key not in d:
            raise DataError(f"RandSliced: no label {self.label_key!r} in the sample (keys {list(d)})")
        label = d[self.label_key]
        if label.ndim != 4:
            raise DataError(
                f"{source_name(d, self.label_key)}: RandSliced needs channel-first volumes (C, X, Y, Z), "
                f"got shape {tuple(label.shape)}"
            )
        pos_mask = slice_labels(label, self.axis)
        candidates = np.ones_like(pos_mask)
        if self.image_key is not None and self.image_key in d:
            candidates = slice_labels(torch.as_tensor(d[self.image_key]) != 0, self.axis)
        positives = np.flatnonzero(pos_mask)
        negatives = np.flatnonzero(~pos_mask & candidates)
        if not negatives.size and not positives.size:
            negatives = np.flatnonzero(~pos_mask)
        self.randomize(positives, negatives)
        out = []
        for index in self._indices:
            sample = {k: (v if k in self.keys else copy.deepcopy(v)) for k, v in d.items()}
            for key in self.key_iterator(d):
                sample[key] = extract_slice(d[key], self.axis, index)
            out.append(sample)
        return out


class SliceDataset(torch.utils.data.Dataset):
    """Every slice of every volume of a volume dataset, as 2D samples (for validation and evaluation).

    Wrap a ``CacheDataset`` of the deterministic volume transforms, so each volume is decoded once; the
    slice index is built from the cached volumes' shapes. Item ``k`` is slice ``s`` of case ``c``; both
    are in the sample (``"case_index"`` key, and ``slice_index`` in each MetaTensor's metadata), so the
    predictions can be grouped by case and put back with :func:`stack_slices`.

    Args:
        volumes: a map-style dataset (or list) of dicts of channel-first volumes.
        keys: keys to slice (e.g. ``["image", "label"]``); other keys are copied.
        axis: spatial axis (2 = axial after ``Orientationd("RAS")``).
        transform: optional transform applied to each 2D sample (e.g. a final ``EnsureTyped``).

    Example:
        >>> from monai.data import CacheDataset, DataLoader
        >>> from monai_patcher.transforms import stroke_volume_transforms
        >>> vols = CacheDataset(datalist, stroke_volume_transforms())  # doctest: +SKIP
        >>> loader = DataLoader(SliceDataset(vols, ["image", "label"]), batch_size=16)  # doctest: +SKIP
    """

    def __init__(self, volumes, keys: Sequence[Hashable], axis: int = 2, transform=None):
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis}")
        self.volumes = volumes
        self.keys = list(keys) if not isinstance(keys, str) else [keys]
        self.axis = axis
        self.transform = transform
        self.index: list[tuple[int, int]] = []
        for c in range(len(volumes)):
            vol = volumes[c][self.keys[0]]
            self.index.extend((c, s) for s in range(int(vol.shape[axis + 1])))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict:
        case, s = self.index[k]
        d = self.volumes[case]
        sample = {key: (v if key in self.keys else copy.deepcopy(v)) for key, v in d.items()}
        for key in self.keys:
            sample[key] = extract_slice(d[key], self.axis, s)
        sample["case_index"] = case
        return self.transform(sample) if self.transform is not None else sample


def stack_slices(slices: Sequence, axis: int = 2, indices: Sequence[int] | None = None) -> torch.Tensor:
    """Put 2D ``(C, H, W)`` slices back into a ``(C, X, Y, Z)`` volume along spatial ``axis``.

    Args:
        slices: the 2D slices of one case.
        axis: the spatial axis they were cut along.
        indices: slice index of each item; default: each item's ``meta["slice_index"]`` if present,
            else the order given. The indices must cover ``0..n-1`` exactly once.

    Returns:
        a tensor (not a MetaTensor: attach the volume's metadata yourself, e.g. by copying it from the
        volume, before ``Invertd``/``SaveImaged``).
    """
    if not len(slices):
        raise ValueError("stack_slices: no slices given")
    if indices is None:
        indices = [
            int(s.meta[SLICE_INDEX]) if isinstance(s, MetaTensor) and SLICE_INDEX in s.meta else i
            for i, s in enumerate(slices)
        ]
    indices = [int(i) for i in indices]
    if sorted(indices) != list(range(len(slices))):
        raise ValueError(f"stack_slices: slice indices must be 0..{len(slices) - 1} once each, got {sorted(indices)}")
    order = np.argsort(indices)
    planes = [convert_to_tensor(slices[i], track_meta=False) for i in order]
    return torch.stack(planes, dim=axis + 1)

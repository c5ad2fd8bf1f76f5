"""Model records: what a checkpoint needs to be used, stored next to its weights.

A checkpoint of weights alone does not say which network they fit or how its inputs were made; repeating the
preset, the slice size and the channel order by hand at inference is where mistakes come from. A
:class:`ModelRecord` is that information, in plain types (so ``torch.load(..., weights_only=True)`` reads it),
saved under the key ``"model_record"`` next to ``"model"`` in ``model.pt`` and in every training checkpoint: the
nnU-Net "plans travel with the model" / Hugging Face "config travels with the weights" idea.

It holds:

- ``network``: the network's constructor arguments as the preset they start from and the arguments that differ
  from it (``{"preset": "small", "in_channels": 2, "out_channels": 1, "overrides": {...}}``);
- ``channels``: the input channels in order (stroke: ``["eADC", "DWI"]``) and ``b_value`` (the eADC's b);
- ``inplane_mode`` (``"resize"``: slices resized to ``spatial_size``; ``"spacing"``: resampled to
  ``inplane_spacing`` mm), ``spatial_size``, ``inplane_spacing`` and ``slice_axis``;
- ``normalization``: the intensity normalisation (the transform and its arguments).

Inference builds the network from the record (:func:`patcher_from_record`) and takes its pipeline parameters
from it (:func:`record_value`); a setting given explicitly that disagrees with the record is refused with one
sentence naming the file and what differs (:class:`ModelRecordMismatchError`). A checkpoint without a record (a
plain ``state_dict``, written before records existed) loads as before, with the settings given explicitly.

Example:
    >>> from monai_patcher.networks import patcher_preset
    >>> net = patcher_preset("tiny", in_channels=2, out_channels=1)
    >>> record = stroke_model_record(net, spatial_size=64)
    >>> record.network["preset"], record.channels, record.spatial_size
    ('tiny', ['eADC', 'DWI'], 64)
    >>> patcher_from_record(ModelRecord.from_dict(record.state_dict())).config == net.config
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import torch

from .checkpoint import CheckpointError, CheckpointMismatchError

__all__ = [
    "RECORD_KEY",
    "RECORD_VERSION",
    "ModelRecord",
    "ModelRecordMismatchError",
    "stroke_model_record",
    "polyp_model_record",
    "read_model_record",
    "patcher_from_record",
    "record_value",
    "guess_preset",
    "weights_of",
    "weights_mismatch_error",
    "load_patcher",
]

#: the key of the record in a checkpoint dict (next to ``"model"``).
RECORD_KEY = "model_record"
#: the version of the record's layout written by this code; a newer one is refused with a clear error.
RECORD_VERSION = 1

#: constructor arguments that change how the network is run or trained, not which network it is: never compared.
_RUNTIME_ARGS = ("return_gating", "use_checkpoint", "drop_path_rate", "dropout_rate")

#: the stroke pipeline's normalisation (``stroke_volume_transforms``): per channel, over the non-zero voxels.
STROKE_NORMALIZATION = {"transform": "NormalizeIntensityd", "nonzero": True, "channel_wise": True}
#: the polyp pipeline's normalisation (``bundles/patcher_polyp``): 0-255 to 0-1, then ImageNet's mean and std.
POLYP_NORMALIZATION = {
    "transform": "NormalizeIntensityd", "scale_from": [0.0, 255.0], "subtrahend": [0.485, 0.456, 0.406],
    "divisor": [0.229, 0.224, 0.225], "channel_wise": True,
}


class ModelRecordMismatchError(CheckpointMismatchError):
    """A setting asked for (a preset, a slice size, ...) disagrees with the checkpoint's record or weights; the
    message is one sentence naming the file, what differs and the fix."""


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: the record holds only what ``weights_only=True`` loads and JSON can show."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclass
class ModelRecord:
    """What a checkpoint's weights need to be used: the network's arguments and how its inputs are made.

    Args:
        network: ``{"preset", "in_channels", "out_channels", "overrides"}``: the Patcher preset and the
            constructor arguments that differ from it.
        channels: input channels in order (stroke: ``["eADC", "DWI"]``).
        inplane_mode: ``"resize"`` (slices resized to ``spatial_size``) or ``"spacing"`` (resampled to
            ``inplane_spacing`` mm, then tiled in windows of ``spatial_size``).
        spatial_size: in-plane size of the network's slices or windows (``[x, y]``, or an int for a square).
        inplane_spacing: ``[x, y]`` mm for ``inplane_mode="spacing"``; None for ``"resize"``.
        slice_axis: the axis the volumes are sliced along (after RAS orientation; 2 = axial); None for 2D images.
        normalization: the intensity normalisation (``{"transform": ..., <its arguments>}``).
        b_value: b (s/mm^2) of the eADC channel; None when there is none.
        version: the record layout's version (:data:`RECORD_VERSION`).
        source: the file the record was read from (for error messages; not saved).

    An object with ``state_dict``/``load_state_dict``, so a bundle's ``CheckpointSaver`` saves it like the network
    (``"save_dict": {"model": "@network_def", "model_record": "@model_record"}``).
    """

    network: dict
    channels: list = field(default_factory=list)
    inplane_mode: str = "resize"
    spatial_size: list | None = None
    inplane_spacing: list | None = None
    slice_axis: int | None = 2
    normalization: dict = field(default_factory=dict)
    b_value: float | None = None
    version: int = RECORD_VERSION
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.inplane_mode not in ("resize", "spacing"):
            raise ValueError(f"inplane_mode must be 'resize' or 'spacing', got {self.inplane_mode!r}")
        missing = [k for k in ("preset", "in_channels", "out_channels") if k not in self.network]
        if missing:
            raise ValueError(f"the record's network has no {', '.join(missing)}")
        self.network = {"overrides": {}, **_plain(self.network)}
        for name in ("channels", "spatial_size", "inplane_spacing", "normalization"):
            setattr(self, name, _plain(getattr(self, name)))

    @property
    def preset(self) -> str:
        """The Patcher preset the network starts from."""
        return str(self.network["preset"])

    def state_dict(self) -> dict[str, Any]:
        """The record as a plain dict (what is saved; ``source`` is not)."""
        d = asdict(self)
        d.pop("source")
        return d

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace this record's content with ``state`` (as :meth:`from_dict`)."""
        new = ModelRecord.from_dict(state, source=self.source)
        for f in fields(self):
            if f.name != "source":
                setattr(self, f.name, getattr(new, f.name))

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], source: str | os.PathLike = "") -> ModelRecord:
        """The record saved as ``state``; ``source`` (the checkpoint file) is named in errors.

        Raises:
            CheckpointError: not a record, a record of a newer layout, or one that misses required entries.
        """
        src = os.fspath(source) or "the checkpoint"
        if not isinstance(state, Mapping) or not isinstance(state.get("network"), Mapping):
            raise CheckpointError(f"{src}: its {RECORD_KEY!r} entry is not a model record (no 'network' entry)")
        version = state.get("version", RECORD_VERSION)
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise CheckpointError(
                f"{src}: its model record has version {version!r}, newer than this monai_patcher reads "
                f"({RECORD_VERSION}); update monai_patcher"
            )
        known = {f.name for f in fields(cls)} - {"source"}
        try:
            return cls(**{k: v for k, v in state.items() if k in known}, source=os.fspath(source))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{src}: its model record is malformed ({e})") from None

    def network_args(self) -> dict[str, Any]:
        """The Patcher constructor arguments of the recorded network (preset values with the overrides)."""
        from ..networks import PATCHER_PRESETS

        if self.preset not in PATCHER_PRESETS:
            raise CheckpointError(
                f"{self.source or 'the checkpoint'}: its record names the Patcher preset {self.preset!r}, which this "
                f"monai_patcher does not have ({', '.join(sorted(PATCHER_PRESETS))})"
            )
        return {
            **_plain(PATCHER_PRESETS[self.preset]),
            **self.network["overrides"],
            "in_channels": int(self.network["in_channels"]),
            "out_channels": int(self.network["out_channels"]),
        }

    def check(self, **given: Any) -> None:
        """Refuse settings that disagree with the record: ``given`` are pipeline settings by their record names
        (``spatial_size``, ``inplane_mode``, ``inplane_spacing``, ``slice_axis``, ``b_value``, ``channels``);
        None means "not given". An int ``spatial_size`` means a square.

        Raises:
            ModelRecordMismatchError: the first setting that differs, in one sentence naming the file.
        """
        for key, value in given.items():
            if value is None or key not in {f.name for f in fields(self)}:
                continue
            recorded = getattr(self, key)
            if recorded is None:
                continue
            asked = _plain(value)
            if key == "spatial_size" and isinstance(asked, list) != isinstance(recorded, list):  # 64 == [64, 64]
                asked, recorded = ([v] * 2 if isinstance(v, (int, float)) else v for v in (asked, recorded))
            same = (
                [float(a) for a in asked] == [float(r) for r in recorded]
                if key in ("spatial_size", "inplane_spacing") and isinstance(asked, list)
                else (float(asked) == float(recorded) if key == "b_value" else asked == recorded)
            )
            if not same:
                raise ModelRecordMismatchError(
                    f"{self.source or 'the checkpoint'} was trained with {key} {recorded} but {asked} is asked for: "
                    f"drop the --{key} override to use the checkpoint's value, or use a checkpoint trained with it."
                )

    def check_network(self, network: torch.nn.Module, what: str = "the config", flag: str = "--network_def#name") -> None:
        """Refuse a network whose constructor arguments differ from the record's (before loading weights into it).

        Raises:
            ModelRecordMismatchError: one sentence naming the file, the recorded and the built preset and the first
                argument that differs.
        """
        config = getattr(network, "config", None)
        if not isinstance(config, Mapping):
            return  # not a Patcher (or a wrapper that hides its arguments): load_state_dict decides
        built = {k: _plain(v) for k, v in config.items() if k not in _RUNTIME_ARGS}
        recorded = {k: v for k, v in self.network_args().items() if k not in _RUNTIME_ARGS}
        default = _default_args()
        for key in sorted(set(built) | set(recorded)):
            a, b = recorded.get(key, default.get(key)), built.get(key, default.get(key))
            if a != b:
                raise ModelRecordMismatchError(
                    f"{self.source or 'the checkpoint'} holds a {_describe(recorded)} (its model record) but {what} builds a "
                    f"{_describe(built)} ({key} {a} vs {b}): {_fix(self.preset, self.network['overrides'], flag)}."
                )


def _fix(preset: str, overrides: Mapping[str, Any], flag: str) -> str:
    if not overrides:
        return f"pass {flag} {preset}"
    extra = " ".join(f"--network_def#{k} {v}" for k, v in sorted(overrides.items()))
    return f"pass {flag} {preset} {extra}" if flag.startswith("--network_def") else f"pass {flag} {preset} with {extra}"


def _default_args() -> dict[str, Any]:
    import inspect

    from ..networks import Patcher

    sig = inspect.signature(Patcher.__init__)
    return {k: _plain(p.default) for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def _preset_of(args: Mapping[str, Any]) -> str | None:
    """The preset whose arguments ``args`` has (ignoring channels and runtime arguments), or None."""
    from ..networks import PATCHER_PRESETS

    default = _default_args()
    ignore = set(_RUNTIME_ARGS) | {"in_channels", "out_channels"}
    for name, preset in PATCHER_PRESETS.items():
        full = {**default, **_plain(preset)}
        if all(_plain(args.get(k, default.get(k))) == v for k, v in full.items() if k not in ignore):
            return name
    return None


def _describe(args: Mapping[str, Any]) -> str:
    """``'small' Patcher with decoder_dim=64 (2 -> 1 channels)``: the closest preset and what differs from it."""
    from ..networks import PATCHER_PRESETS

    preset = min(PATCHER_PRESETS, key=lambda name: len(_overrides(args, name)))
    extra = ", ".join(f"{k}={v}" for k, v in sorted(_overrides(args, preset).items()))
    return f"{preset!r} Patcher{' with ' + extra if extra else ''} ({args.get('in_channels')} -> {args.get('out_channels')} channels)"


def _overrides(config: Mapping[str, Any], preset: str) -> dict[str, Any]:
    from ..networks import PATCHER_PRESETS

    default = _default_args()
    base = {**default, **_plain(PATCHER_PRESETS[preset])}
    return {
        k: _plain(v)
        for k, v in config.items()
        if k not in ("in_channels", "out_channels", *_RUNTIME_ARGS) and _plain(v) != base.get(k)
    }


def _network_part(network: torch.nn.Module) -> dict:
    """A record's ``network`` entry of a Patcher: the preset its ``config`` matches best (the fewest overrides;
    ties: the first, "paper"), the channels and the overrides."""
    from ..networks import PATCHER_PRESETS

    config = getattr(network, "config", None)
    if not isinstance(config, Mapping):
        raise TypeError(f"network must be a monai_patcher Patcher (with .config), got {type(network).__name__}")
    preset = min(PATCHER_PRESETS, key=lambda name: len(_overrides(config, name)))
    return {
        "preset": preset,
        "in_channels": int(config["in_channels"]),
        "out_channels": int(config["out_channels"]),
        "overrides": _overrides(config, preset),
    }


def stroke_model_record(
    network: torch.nn.Module,
    spatial_size: int | Sequence[int] = 256,
    slice_axis: int = 2,
    b_value: float = 1000.0,
    inplane_mode: str = "resize",
    inplane_spacing: Sequence[float] | None = None,
) -> ModelRecord:
    """The record of a stroke model (channels eADC, DWI; per-channel normalisation over the non-zero voxels).

    Args:
        network: the Patcher being trained (its ``config`` gives the constructor arguments; the preset is the one
            they match best: the one with the fewest overrides).
        spatial_size: in-plane size of the slices (``resize``) or windows (``spacing``); an int is a square.
        slice_axis: slice axis after RAS orientation.
        b_value: b of the eADC channel.
        inplane_mode: ``"resize"`` or ``"spacing"``.
        inplane_spacing: ``[x, y]`` mm, for ``"spacing"``.

    Example (``train.json``)::

        "model_record": {"_target_": "monai_patcher.io.stroke_model_record", "network": "@network_def",
                         "spatial_size": "@spatial_size", "slice_axis": "@slice_axis", "b_value": "@b_value",
                         "inplane_mode": "@inplane_mode", "inplane_spacing": "@inplane_spacing"}
    """
    size = int(spatial_size) if isinstance(spatial_size, (int, float)) else [int(s) for s in spatial_size]
    spacing = None if inplane_spacing is None else [float(s) for s in inplane_spacing]
    if inplane_mode == "spacing" and spacing is None:
        raise ValueError("inplane_mode='spacing' needs inplane_spacing ([x, y] mm)")
    return ModelRecord(
        network=_network_part(network),
        channels=["eADC", "DWI"],
        inplane_mode=inplane_mode,
        spatial_size=size,
        inplane_spacing=spacing if inplane_mode == "spacing" else None,
        slice_axis=int(slice_axis),
        normalization=dict(STROKE_NORMALIZATION),
        b_value=float(b_value),
    )


def polyp_model_record(network: torch.nn.Module, spatial_size: int | Sequence[int] = 256) -> ModelRecord:
    """The record of a polyp model (2D RGB images resized to ``spatial_size``, ImageNet normalisation).

    Args:
        network: the Patcher being trained (its ``config`` gives the constructor arguments).
        spatial_size: the size images are resized to; an int is a square.

    Example (``train.json``)::

        "model_record": {"_target_": "monai_patcher.io.polyp_model_record", "network": "@network_def",
                         "spatial_size": "@spatial_size"}
    """
    network_part = _network_part(network)
    size = int(spatial_size) if isinstance(spatial_size, (int, float)) else [int(s) for s in spatial_size]
    return ModelRecord(
        network=network_part, channels=["R", "G", "B"], inplane_mode="resize", spatial_size=size,
        slice_axis=None, normalization=dict(POLYP_NORMALIZATION), b_value=None,
    )


def read_model_record(path: str | os.PathLike | None, missing_ok: bool = True) -> ModelRecord | None:
    """The record of the checkpoint ``path``; None for a checkpoint without one (a plain ``state_dict``).

    The tensors are memory-mapped, not read (``weights_only=True``, ``mmap=True``); loading the weights checks the
    file fully later. ``missing_ok``: a missing file (or an empty path) gives None, so configs that build the
    network without a trained checkpoint (``verify_net_in_out``) still work; the loader reports the missing file.

    Raises:
        CheckpointError: an unreadable checkpoint or a malformed record, naming the file.
    """
    if path in (None, ""):
        return None
    p = os.fspath(path)
    if not os.path.isfile(p) and missing_ok:
        return None
    from .checkpoint import checkpoint_load_error, safe_load_checkpoint, verify_checkpoint_file

    verify_checkpoint_file(p) if not os.path.isfile(p) or os.path.getsize(p) == 0 else None
    try:
        content = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise checkpoint_load_error(p, e) from None
        content = safe_load_checkpoint(p)  # a legacy (non-zip) file cannot be memory-mapped
    except Exception as e:  # noqa: BLE001 - torch/zip/pickle raise many types on damaged files
        raise checkpoint_load_error(p, e) from None
    if isinstance(content, Mapping) and RECORD_KEY in content:
        return ModelRecord.from_dict(content[RECORD_KEY], source=p)
    return None


def weights_of(content: Any) -> Any:
    """The network's ``state_dict`` in a loaded checkpoint: the ``"model"``/``"network"``/``"state_dict"`` entry
    of a checkpoint dict, else the content itself (a plain ``state_dict``)."""
    if isinstance(content, Mapping):
        for key in ("model", "network", "state_dict"):
            if key in content and isinstance(content[key], Mapping):
                return content[key]
    return content


def record_value(record: ModelRecord | None, key: str, default: Any) -> Any:
    """The record's ``key`` (e.g. ``"spatial_size"``), or ``default`` without a record (or without that entry).

    Example (``inference.json``): ``"spatial_size": "$monai_patcher.io.record_value(@model_record, 'spatial_size', 256)"``.
    """
    if record is None:
        return default
    value = getattr(record, key, None)
    return default if value is None else value


def patcher_from_record(
    record: ModelRecord | None,
    name: str | None = None,
    in_channels: int | None = None,
    out_channels: int | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """The Patcher a checkpoint's record describes; without a record, ``patcher_preset(name or "paper", ...)``.

    Args:
        record: the checkpoint's record (:func:`read_model_record`), or None.
        name, in_channels, out_channels: the preset and channels asked for; None: the record's (without a record:
            ``"paper"``, 2, 1). Given and different from the record: refused.
        kwargs: other Patcher arguments. Runtime ones (``return_gating``, ``use_checkpoint``, the dropout rates)
            are applied; architecture ones must agree with the record.

    Raises:
        ModelRecordMismatchError: what was asked for is not the recorded network (one sentence naming the file).

    Example (``inference.json``)::

        "network_def": {"_target_": "monai_patcher.io.patcher_from_record", "record": "@model_record",
                        "name": null, "in_channels": 2, "out_channels": 1, "return_gating": "@save_gating"}
    """
    from ..networks import patcher_preset

    if record is None:
        return patcher_preset(
            name or "paper", in_channels=2 if in_channels is None else in_channels,
            out_channels=1 if out_channels is None else out_channels, **kwargs,
        )
    args = record.network_args()
    if name is not None and name != record.preset:
        asked = patcher_preset(name, in_channels=args["in_channels"], out_channels=args["out_channels"],
                               **{k: v for k, v in kwargs.items() if k not in _RUNTIME_ARGS}).config
        if _preset_of(asked) != _preset_of(args) or _overrides(asked, record.preset) != record.network["overrides"]:
            raise ModelRecordMismatchError(
                f"{record.source or 'the checkpoint'} holds a {_describe(args)} (its model record) but the "
                f"{name!r} preset is asked for: drop --network_def#name (or --preset) to build the checkpoint's network."
            )
    if in_channels is not None and in_channels != args["in_channels"]:
        channels = ", ".join(map(str, record.channels)) or str(args["in_channels"])
        raise ModelRecordMismatchError(
            f"{record.source or 'the checkpoint'} holds a network of {args['in_channels']} input channels ({channels}, "
            f"its model record) but this pipeline gives {in_channels}: use a checkpoint trained for these inputs "
            "(a polyp model in the stroke bundle, or the other way round?)."
        )
    asked = {"in_channels": in_channels, "out_channels": out_channels}
    asked.update({k: v for k, v in kwargs.items() if k not in _RUNTIME_ARGS})
    for key, value in asked.items():
        if value is not None and _plain(value) != args.get(key, _default_args().get(key)):
            raise ModelRecordMismatchError(
                f"{record.source or 'the checkpoint'} holds a network with {key} {args.get(key, _default_args().get(key))} "
                f"(its model record) but {key} {_plain(value)} is asked for: drop that setting to build the checkpoint's network."
            )
    from ..networks import Patcher

    return Patcher(**{**args, **{k: v for k, v in kwargs.items() if k in _RUNTIME_ARGS}})


def guess_preset(state_dict: Mapping[str, Any]) -> str | None:
    """The Patcher preset whose parameter names and shapes ``state_dict`` has (any channel counts), or None.

    The presets are built on the ``meta`` device: no memory, no weights.
    """
    from ..networks import PATCHER_PRESETS, patcher_preset

    if not isinstance(state_dict, Mapping):
        return None
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    for name in PATCHER_PRESETS:
        with torch.device("meta"):
            ref = patcher_preset(name, in_channels=1, out_channels=1).state_dict()
        if set(ref) != set(shapes):
            continue
        convs = [k for k, v in ref.items() if v.ndim == 4]  # the patch embedding first, the classifier last
        with torch.device("meta"):
            ref = patcher_preset(name, in_channels=shapes[convs[0]][1], out_channels=shapes[convs[-1]][0]).state_dict()
        if all(tuple(v.shape) == shapes[k] for k, v in ref.items()):
            return name
    return None


def weights_mismatch_error(
    path: str | os.PathLike,
    weights: Mapping[str, Any],
    network: torch.nn.Module,
    flag: str = "--network_def#name",
    what: str = "the config",
) -> ModelRecordMismatchError | None:
    """One sentence for weights (without a record) that do not fit ``network``: the preset they look like.

    Args:
        path: the checkpoint file.
        weights: its ``state_dict``.
        network: the network they failed to load into.
        flag: how the user chooses the preset (``--network_def#name`` in a bundle, ``--preset`` in the CLI).
        what: what built ``network``, as the sentence names it.

    Returns:
        the error, or None when the weights are no preset's (then report ``load_state_dict``'s own error).
    """
    guessed = guess_preset(weights)
    config = getattr(network, "config", None)
    if guessed is None or not isinstance(config, Mapping):
        return None
    convs = [k for k, v in weights.items() if isinstance(v, torch.Tensor) and v.ndim == 4]
    from ..networks import PATCHER_PRESETS

    held = {**_default_args(), **_plain(PATCHER_PRESETS[guessed]),
            "in_channels": int(weights[convs[0]].shape[1]), "out_channels": int(weights[convs[-1]].shape[0])}
    return ModelRecordMismatchError(
        f"{os.fspath(path)} holds a {_describe(held)} (guessed from its shapes) but {what} builds a "
        f"{_describe(config)}: pass {flag} {guessed}"
        + ("" if (held["in_channels"], held["out_channels"]) == (config.get("in_channels"), config.get("out_channels"))
           else " with those channel counts")
        + "."
    )


def load_patcher(
    checkpoint: str | os.PathLike,
    name: str | None = None,
    in_channels: int | None = None,
    out_channels: int | None = None,
    network: torch.nn.Module | None = None,
    flag: str = "--preset",
) -> tuple[torch.nn.Module, ModelRecord | None]:
    """The network of ``checkpoint`` with its weights (read with ``weights_only=True``), and its record or None.

    The network is built from the record (:func:`patcher_from_record`: ``name``/channels given must agree with it),
    else from ``name`` (default ``"paper"``) and the channels; ``network``: load into this one instead.

    Args:
        checkpoint: a checkpoint dict (``"model"`` + ``"model_record"``) or a plain ``state_dict``.
        name, in_channels, out_channels: as :func:`patcher_from_record`.
        network: a network to load the weights into (nothing is built).
        flag: how the user chooses the preset, for the error message.

    Raises:
        CheckpointError: unreadable or unsafe file, malformed record; ``ModelRecordMismatchError`` (one sentence
            naming the file) or ``CheckpointMismatchError``: the weights are not the network asked for.
    """
    from .checkpoint import load_error_details, safe_load_checkpoint

    content = safe_load_checkpoint(checkpoint, map_location="cpu")
    record = None
    if isinstance(content, Mapping) and RECORD_KEY in content:
        record = ModelRecord.from_dict(content[RECORD_KEY], source=checkpoint)
    net = network if network is not None else patcher_from_record(record, name, in_channels, out_channels)
    weights = weights_of(content)
    try:
        net.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as e:
        clear = weights_mismatch_error(checkpoint, weights, net, flag, f"{flag} {name or 'paper'}") if isinstance(
            weights, Mapping) else None
        raise clear or CheckpointMismatchError(
            f"{os.fspath(checkpoint)}: its weights do not fit the {name or 'paper'!r} Patcher preset "
            f"({load_error_details(e)})"
        ) from None
    return net, record

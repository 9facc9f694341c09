"""Preprocessing steps: PIL image -> PIL image, named by a ``kind`` and saved with the model.

A model's :class:`~siamkit.input_spec.InputSpec` holds an ordered tuple of steps; the one
prepare function (:func:`siamkit.data.prepare.prepare_array`) applies them after the
channel conversion and before the final resize, wherever a raw file is embedded (training
data, compare, evaluate, the gallery, the service, the ONNX runtime).

A step is any class with ``from_dict(dict) -> step`` (a classmethod), ``to_dict() -> dict``
(JSON-able, without ``kind``) and ``__call__(img) -> img``, registered under its kind with
:func:`register_preprocess`. Steps use numpy and PIL only (never torch): the torch-free
ONNX runtime applies them too.

Built-in kinds (registered at the bottom of this module; a new kind is one line there):

- ``signature``: :class:`~siamkit.data.signature_scan.SignaturePreprocess` (ink crop,
  aspect padding, inversion);
- ``crop``: :class:`Crop` (a centre or box crop, optionally padded to an aspect ratio);
- ``invert``: :class:`Invert` (``255 - x``);
- ``strokes``: :class:`~siamkit.data.strokes.StrokeNormalize` (binarised ink redrawn at one
  stroke width, after ``signature``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image, ImageOps

from .illumination import IlluminationNorm
from .signature_scan import SignaturePreprocess
from .strokes import StrokeNormalize

__all__ = [
    "PreprocessStep",
    "register_preprocess",
    "preprocess_kinds",
    "step_from_dict",
    "step_to_dict",
    "Crop",
    "Invert",
    "apply_steps",
]


class PreprocessStep(Protocol):
    """What a registered step provides."""

    def __call__(self, img: Image.Image) -> Image.Image: ...  # pragma: no cover

    def to_dict(self) -> dict[str, Any]: ...  # pragma: no cover


_REGISTRY: dict[str, type] = {}


def register_preprocess(kind: str, cls: type) -> type:
    """Register a step class under ``kind`` (the name model files and recipes use).

    Args:
        kind: the step's name, e.g. ``"crop"``.
        cls: a class with ``from_dict`` (classmethod), ``to_dict`` and ``__call__``.

    Returns:
        ``cls`` (so this can be used as ``register_preprocess("x", X)`` after a class).

    Raises:
        ValueError: an empty kind, a kind registered to another class, or a class
            without the three methods.
    """
    if not kind or not isinstance(kind, str):
        raise ValueError(f"a preprocessing kind must be a non-empty string, got {kind!r}")
    missing = [m for m in ("from_dict", "to_dict", "__call__") if not callable(getattr(cls, m, None))]
    if missing:
        raise ValueError(f"preprocessing step {cls.__name__} lacks {missing}")
    if _REGISTRY.get(kind, cls) is not cls:
        raise ValueError(f"preprocessing kind {kind!r} is already registered to {_REGISTRY[kind].__name__}")
    _REGISTRY[kind] = cls
    return cls


def preprocess_kinds() -> list[str]:
    """The registered kinds, sorted."""
    return sorted(_REGISTRY)


def step_from_dict(d: Mapping[str, Any]) -> Any:
    """Build a step from its JSON form ``{"kind": ..., <its fields>}``.

    Args:
        d: the mapping (``kind`` plus the step's own fields).

    Returns:
        The step object.

    Raises:
        ValueError: not a mapping, no or an unknown kind, or fields the step refuses.
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"a preprocessing step must be a table with a 'kind', got {d!r}")
    kind = d.get("kind")
    if kind not in _REGISTRY:
        raise ValueError(f"unknown preprocessing kind {kind!r}; registered kinds: {preprocess_kinds()}")
    fields = {k: v for k, v in d.items() if k != "kind"}
    try:
        return _REGISTRY[kind].from_dict(fields)
    except TypeError as e:  # unexpected / missing keyword arguments
        raise ValueError(f"preprocessing step {kind!r}: {e}") from None


def step_to_dict(step: Any) -> dict[str, Any]:
    """The JSON form of a registered step: ``{"kind": ..., **step.to_dict()}``.

    Args:
        step: an instance of a registered class.

    Returns:
        The mapping.

    Raises:
        ValueError: the step's class is not registered.
    """
    for kind, cls in _REGISTRY.items():
        if type(step) is cls:
            return {"kind": kind, **step.to_dict()}
    raise ValueError(f"{type(step).__name__} is not a registered preprocessing step (register_preprocess)")


def apply_steps(img: Image.Image, steps: tuple[Any, ...] | list[Any]) -> Image.Image:
    """Apply steps in order.

    Args:
        img: the PIL image.
        steps: the steps.

    Returns:
        The processed image.
    """
    for step in steps:
        img = step(img)
    return img


def _pair(value: Any, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{what} must be [height, width] of positive integers, got {value!r}")


@dataclass(frozen=True)
class Crop:
    """Crop a frame, then optionally pad it to an aspect ratio (e.g. a wide face frame).

    Args:
        box: ``(left, top, right, bottom)`` in pixels of the input; None = a centre crop.
        size: ``(height, width)`` of the centre crop (clipped to the image); ignored with
            ``box``; None with no box = no crop.
        fraction: with neither ``box`` nor ``size``: keep this central fraction of each
            side (1.0 = all).
        pad_to: ``(height, width)`` whose aspect ratio the crop is padded to with
            ``fill`` (centred), so the final resize does not distort; None = no padding.
        fill: the padding's grey value (0-255).
    """

    box: tuple[int, int, int, int] | None = None
    size: tuple[int, int] | None = None
    fraction: float = 1.0
    pad_to: tuple[int, int] | None = None
    fill: int = 0

    def __post_init__(self) -> None:
        if self.box is not None:
            b = tuple(self.box)
            if len(b) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in b) or b[0] >= b[2] or b[1] >= b[3] or min(b) < 0:
                raise ValueError(f"crop box must be [left, top, right, bottom] with left < right, top < bottom, got {self.box!r}")
            object.__setattr__(self, "box", b)
        object.__setattr__(self, "size", _pair(self.size, "crop size"))
        object.__setattr__(self, "pad_to", _pair(self.pad_to, "crop pad_to"))
        if not 0.0 < float(self.fraction) <= 1.0:
            raise ValueError(f"crop fraction must be in (0, 1], got {self.fraction!r}")
        if not 0 <= int(self.fill) <= 255:
            raise ValueError(f"crop fill must be 0-255, got {self.fill!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Crop:
        """The step from its fields (see the class)."""
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """The step's fields, JSON-able (only those that differ from the defaults)."""
        out: dict[str, Any] = {}
        if self.box is not None:
            out["box"] = list(self.box)
        if self.size is not None:
            out["size"] = list(self.size)
        if self.fraction != 1.0:
            out["fraction"] = float(self.fraction)
        if self.pad_to is not None:
            out["pad_to"] = list(self.pad_to)
        if self.fill:
            out["fill"] = int(self.fill)
        return out

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if self.box is not None:
            left, top, right, bottom = self.box
            img = img.crop((min(left, w - 1), min(top, h - 1), min(right, w), min(bottom, h)))
        elif self.size is not None or self.fraction < 1.0:
            ch, cw = self.size if self.size is not None else (max(1, round(h * self.fraction)), max(1, round(w * self.fraction)))
            ch, cw = min(ch, h), min(cw, w)
            top, left = (h - ch) // 2, (w - cw) // 2
            img = img.crop((left, top, left + cw, top + ch))
        if self.pad_to is not None:
            img = _pad_to_aspect(img, self.pad_to, int(self.fill))
        return img


def _pad_to_aspect(img: Image.Image, target: tuple[int, int], fill: int) -> Image.Image:
    w, h = img.size
    th, tw = target
    if w * th < tw * h:  # too narrow: pad left and right
        new_w, new_h = max(w, int(round(h * tw / th))), h
    else:
        new_w, new_h = w, max(h, int(round(w * th / tw)))
    if (new_w, new_h) == (w, h):
        return img
    colour: Any = fill if img.mode in ("L", "1", "I", "F") else (fill,) * len(img.getbands())
    canvas = Image.new(img.mode, (new_w, new_h), colour)
    canvas.paste(img, ((new_w - w) // 2, (new_h - h) // 2))
    return canvas


@dataclass(frozen=True)
class Invert:
    """``255 - x`` (dark ink on white -> bright ink on black)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Invert:
        """The step (it has no fields)."""
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """No fields."""
        return {}

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB" if len(img.getbands()) >= 3 else "L")
        return ImageOps.invert(img)


# -- the built-in kinds; register a new kind with one line here (or anywhere before use) --
register_preprocess("signature", SignaturePreprocess)
register_preprocess("crop", Crop)
register_preprocess("invert", Invert)
register_preprocess("illumination", IlluminationNorm)
register_preprocess("strokes", StrokeNormalize)

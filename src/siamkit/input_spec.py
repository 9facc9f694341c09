"""InputSpec: what a network takes and how a raw file becomes it (torch-free).

Saved with every model (``config.json``'s ``network.input_spec``) and every ONNX export
(``siamkit-onnx.json``), read by :func:`siamkit.data.prepare.prepare_array`, the one
function that turns a raw image into the network's input everywhere. Imported by
:mod:`siamkit.network` (``network.InputSpec``) and by the torch-free ONNX runtime.

JSON form (version 2; a spec without ``version`` is version 1: no preprocessing, no TTA)::

    {"shape": [1, 56, 46], "channels": 1, "height": 56, "width": 46,
     "version": 2, "preprocess": [{"kind": "crop", "fraction": 0.9}], "tta": "flip"}

``version``, ``preprocess`` and ``tta`` are written only when a step or a TTA is set, so
the specs of plain models are written as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable

from .data.preprocess import apply_steps, step_from_dict, step_to_dict
from .errors import DataError

__all__ = ["InputSpec", "TTA_MODES", "SPEC_VERSION", "parse_tta"]

#: test-time augmentations (see :func:`siamkit.inference.embed_all`)
TTA_MODES = ("shift", "flip", "shift+flip")
#: the newest input-spec format this siamkit reads and writes
SPEC_VERSION = 2


def parse_tta(value: Any) -> str | None:
    """A TTA setting: None / ``"none"`` -> None, else one of :data:`TTA_MODES`.

    Args:
        value: the setting as written in a recipe or a model file.

    Returns:
        The mode, or None.

    Raises:
        ValueError: another value.
    """
    if value is None or value == "none":
        return None
    if value not in TTA_MODES:
        raise ValueError(f"tta {value!r}: choose none, {', '.join(TTA_MODES)}")
    return str(value)


@dataclass(frozen=True)
class InputSpec:
    """What the network takes, saved with the model so that every caller prepares raw
    inputs the same way (the one typed reading of ``config.json``'s ``input_spec``).

    Attributes:
        shape: one sample's shape without the batch dimension, e.g. ``(1, 28, 28)`` or
            ``(8,)``; empty when unknown.
        channels: image channels (1 grey, 3 RGB); None for non-image inputs.
        height: image height in pixels; None for non-image inputs.
        width: image width in pixels; None for non-image inputs.
        preprocess: the steps applied to each decoded image (PIL, after the channel
            conversion, before the final resize); see :mod:`siamkit.data.preprocess`.
        tta: the test-time augmentation of every embedding made for a user (None,
            ``"shift"``, ``"flip"`` or ``"shift+flip"``).
    """

    shape: tuple[int, ...] = ()
    channels: int | None = None
    height: int | None = None
    width: int | None = None
    preprocess: tuple[Any, ...] = ()
    tta: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "preprocess", tuple(self.preprocess))
        object.__setattr__(self, "tta", parse_tta(self.tta))

    @classmethod
    def from_dict(cls, spec: InputSpec | Mapping[str, Any] | None) -> InputSpec:
        """Read the JSON form (as written by :meth:`to_dict`); None gives an empty spec.

        Args:
            spec: the ``input_spec`` mapping of a model config, an InputSpec, or None.

        Returns:
            The typed spec.

        Raises:
            ValueError: a field is not an integer (or the shape not a list of them), a
                newer version, an unknown preprocessing kind or TTA.
        """
        if spec is None:
            return cls()
        if isinstance(spec, InputSpec):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(f"an input spec must be a mapping, got {type(spec).__name__}")
        version = spec.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SPEC_VERSION:
            raise ValueError(f"input spec version {version!r}: this siamkit reads versions 1 to {SPEC_VERSION} (upgrade siamkit)")

        def _int(name: str) -> int | None:
            v = spec.get(name)
            return None if v is None else int(v)

        steps = spec.get("preprocess", []) or []
        if not isinstance(steps, (list, tuple)):
            raise ValueError(f"input spec preprocess must be a list of steps, got {steps!r}")
        shape = tuple(int(s) for s in spec.get("shape", ()) or ())
        return cls(shape=shape, channels=_int("channels"), height=_int("height"), width=_int("width"),
                   preprocess=tuple(step_from_dict(s) for s in steps), tta=spec.get("tta"))

    @classmethod
    def for_sample(cls, sample_shape: Sequence[int]) -> InputSpec:
        """The spec of samples shaped ``sample_shape``: (C, H, W) is an image, else a vector/sequence.

        Args:
            sample_shape: one sample's shape, without the batch dimension.

        Returns:
            The spec.
        """
        shape = tuple(int(s) for s in sample_shape)
        if len(shape) == 3:
            return cls(shape=shape, channels=shape[0], height=shape[1], width=shape[2])
        return cls(shape=shape)

    def with_recipe(self, preprocess: Sequence[Any] = (), tta: str | None = None) -> InputSpec:
        """This spec with preprocessing steps and a TTA.

        Args:
            preprocess: step objects or their JSON form (``{"kind": ...}``).
            tta: None, ``"none"`` or one of :data:`TTA_MODES`.

        Returns:
            The new spec.

        Raises:
            ValueError: an unknown kind or TTA.
        """
        steps = tuple(step_from_dict(s) if isinstance(s, Mapping) else s for s in preprocess)
        return replace(self, preprocess=steps, tta=tta)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: only the fields that are set (``shape`` as a list)."""
        out: dict[str, Any] = {}
        if self.shape:
            out["shape"] = list(self.shape)
        for name in ("channels", "height", "width"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        if self.preprocess or self.tta is not None:
            out["version"] = SPEC_VERSION
            out["preprocess"] = [step_to_dict(s) for s in self.preprocess]
            out["tta"] = self.tta
        return out

    def preprocessor(self) -> Callable[[Any], Any] | None:
        """The steps as one PIL -> PIL function, or None when there are none."""
        if not self.preprocess:
            return None
        steps = self.preprocess
        return lambda img: apply_steps(img, steps)

    @property
    def is_image(self) -> bool:
        """True when the model takes images (height and width are known)."""
        return self.height is not None and self.width is not None

    def require_image(self) -> InputSpec:
        """Self, when the model takes images of 1 or 3 channels.

        Raises:
            DataError: the model was not trained on images, or takes another channel count.
        """
        if not self.is_image:
            raise DataError("this model was not trained on images (its input spec has no image size)")
        if self.channels not in (1, 3):
            raise DataError(f"the model takes {self.channels} channels; images are 1 (grey) or 3 (RGB)")
        return self

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of an image model.

        Raises:
            DataError: the model was not trained on images.
        """
        self.require_image()
        return int(self.height), int(self.width)  # type: ignore[arg-type]

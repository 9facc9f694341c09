"""A gallery built at a Matryoshka embedding size: the model at that size, the size in
the gallery's meta (``prefix_dim``), and the check on opening that the gallery is used at
the size it was built with (:meth:`~siamkit.gallery.Gallery.open` ``dim=``)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import EmbeddingSizeError, GalleryError
from ..network import SiameseNetwork
from ..verify import Verifier

__all__ = ["model_at_dim", "check_same_size", "size_meta"]


def model_at_dim(model: Any, dim: int | None) -> Any:
    """What :meth:`Gallery.open` was given, at the embedding size ``dim``.

    Args:
        model: a model folder, a Verifier or a SiameseNetwork (or None).
        dim: the size (None: as given).

    Returns:
        A model folder -> ``Verifier.from_dir(folder, dim=dim)`` (that size's
        ``calibration-dimD.json``); a Verifier -> the same calibration with the network at
        ``dim`` (refused on opening unless the calibration is that size's); a network -> its view.

    Raises:
        GalleryError: ``dim`` without a model, or another kind of model.
        EmbeddingSizeError: a size the model does not take.
    """
    if dim is None:
        return model
    if model is None:
        raise GalleryError("dim= needs a model")
    if isinstance(model, (str, os.PathLike)):
        return Verifier.from_dir(model, dim=dim)
    if isinstance(model, Verifier):
        return Verifier(model.network.at_dim(dim), model.calibrator)
    if isinstance(model, SiameseNetwork):
        return model.at_dim(dim)
    raise GalleryError(f"the model must be a Verifier, a SiameseNetwork or a model folder, got {type(model).__name__}")


def size_meta(network: SiameseNetwork) -> dict[str, Any]:
    """The meta a gallery records of its model's size: ``{"prefix_dim": D}`` for a view
    at a Matryoshka size, nothing at the full size."""
    dim = getattr(network, "dim", None)
    return {} if dim is None else {"prefix_dim": int(dim)}


def _base(fingerprint: Any) -> Any:
    return fingerprint.split("#dim=")[0] if isinstance(fingerprint, str) else None


def check_same_size(stored: dict[str, Any], given: dict[str, Any], path: Any) -> None:
    """Refuse a gallery opened with its own model at another size (before the hash check,
    whose message would name two models).

    Args:
        stored: the gallery's meta.
        given: the meta of the model it is opened with.
        path: names the gallery.

    Raises:
        EmbeddingSizeError: the same weights, another size.
    """
    was, now = stored.get("prefix_dim"), given.get("prefix_dim")
    if was == now or _base(stored.get("model_fingerprint")) is None:
        return
    if _base(stored.get("model_fingerprint")) != _base(given.get("model_fingerprint")):
        return  # another model: the model check says so
    built = f"at {was} dimensions" if was is not None else "at the model's full size"
    fix = f"--dim {was} (Gallery.open(..., dim={was}))" if was is not None else "no --dim"
    raise EmbeddingSizeError(f"gallery {path} was built {built} of this model, not at {now or 'the full size'}: open it with {fix}")

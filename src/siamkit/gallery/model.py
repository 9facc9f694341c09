"""The model a gallery is tied to: resolving what the caller passes, the hash a gallery
records of it, and the check that a gallery is opened with the model it was built with.

Embeddings of two models are not comparable, so a gallery records :func:`model_hash`
(recipe + weights) and refuses another model (:func:`check_same_model`);
:meth:`~siamkit.gallery.Gallery.reembed` moves it to a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

from .. import __version__
from ..calibration import Calibrator
from ..errors import GalleryError, GalleryFileError, ModelMismatchError
from ..io import check_fingerprint
from ..network import SiameseNetwork
from ..verify import Verifier
from .sizes import check_same_size, size_meta

__all__ = ["model_hash", "distance_name", "resolve_model", "model_meta", "check_same_model"]


def model_hash(network: SiameseNetwork) -> str:
    """sha256 of a network's recipe and weights: what a gallery checks on opening.

    Unlike the weights file's fingerprint it exists for unsaved networks too, and it is
    the same before and after saving / loading.
    """
    h = hashlib.sha256()
    try:
        recipe: Any = network.config()
    except ValueError:  # an encoder not made by create_encoder
        recipe = {
            "encoder": f"{type(network.encoder).__module__}.{type(network.encoder).__qualname__}",
            "distance": network.distance.name,
            "normalize": network.normalize,
            "head": network.head_type,
            "input_spec": network.input_spec.to_dict(),
        }
    h.update(json.dumps(recipe, sort_keys=True).encode())
    for name, t in sorted(network.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def distance_name(network: SiameseNetwork) -> str:
    """How a gallery names a network's distance: its distance, or ``"pair_head"``."""
    return "pair_head" if network.pair_head is not None else network.distance.name


def resolve_model(model: Any, calibrator: Calibrator | None) -> tuple[SiameseNetwork | None, Calibrator | None]:
    """The network and calibration from what a caller passes.

    Args:
        model: a :class:`~siamkit.verify.Verifier`, a
            :class:`~siamkit.network.SiameseNetwork`, a model folder, or None.
        calibrator: overrides the Verifier's calibration; with a bare network, its
            calibration.

    Returns:
        (network in eval mode, calibrator), or (None, None) without a model.

    Raises:
        GalleryError: a calibrator without a model, another kind of model, an unfitted
            calibrator, or a calibrator fitted for another model.
    """
    if model is None:
        if calibrator is not None:
            raise GalleryError("a calibrator was given without a model")
        return None, None
    if isinstance(model, (str, os.PathLike)):
        model = Verifier.from_dir(model)
    if isinstance(model, Verifier):
        net, cal = model.network, (calibrator if calibrator is not None else model.calibrator)
    elif isinstance(model, SiameseNetwork):
        net, cal = model, calibrator
    else:
        raise GalleryError(
            f"the model must be a Verifier, a SiameseNetwork or a model folder, got {type(model).__name__}"
        )
    if cal is not None:
        if not hasattr(cal, "threshold_"):
            raise GalleryError("the calibrator is not fitted")
        check_fingerprint(
            getattr(cal, "model_fingerprint_", None),
            getattr(net, "fingerprint", None),
            where="the calibrator",
            error=GalleryError,
            allow_unsaved=True,  # a gallery may serve a network that was never saved
        )
    return net.eval(), cal


def model_meta(network: SiameseNetwork) -> dict[str, Any]:
    """The meta values a gallery records of its model (on creation and on re-embedding).

    Returns:
        model_fingerprint, model_hash, embedding_dim, distance, normalize, input_spec,
        siamkit_version.
    """
    return {
        "model_fingerprint": getattr(network, "fingerprint", None),
        "model_hash": model_hash(network),
        "embedding_dim": int(network.embedding_dim),
        "distance": distance_name(network),
        "normalize": bool(network.normalize),
        "input_spec": network.input_spec.to_dict(),
        "siamkit_version": __version__,
        **size_meta(network),  # a gallery at a Matryoshka size records it (prefix_dim)
    }


def check_same_model(stored: dict[str, Any], given: dict[str, Any], path: Any) -> None:
    """Refuse to open a gallery with another model than the one it was built with.

    Compares the recorded :func:`model_hash` (not :func:`siamkit.io.check_fingerprint`:
    the hash exists for unsaved networks too, and a mismatch is a
    :class:`~siamkit.errors.ModelMismatchError` that names the way out).

    Args:
        stored: the gallery's meta.
        given: :func:`model_meta` of the model it is opened with.
        path: the gallery file (for the message).

    Raises:
        ModelMismatchError: the hashes differ (the message names both models and
            ``siamkit gallery reembed``).
        GalleryFileError: the same model, but the recorded ``embedding_dim`` is not the
            network's (the meta table was edited or damaged).
    """
    check_same_size(stored, given, path)
    if stored["model_hash"] == given["model_hash"]:
        dim = stored.get("embedding_dim")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim != given["embedding_dim"]:
            raise GalleryFileError(
                f"gallery {path} is damaged: its meta records embedding_dim {dim!r}, but its model's "
                f"embeddings have {given['embedding_dim']} values"
            )
        return
    was = stored.get("model_fingerprint") or stored["model_hash"]
    this = given["model_fingerprint"] or given["model_hash"]
    raise ModelMismatchError(
        f"gallery {path} was built with model {was} but is opened with model {this}: their "
        "embeddings are not comparable. Open it with the model it was built with, or migrate it "
        f"to this model with `siamkit gallery reembed --gallery {path} --model MODEL_DIR` "
        "(Gallery.migrate)"
    )

"""The gallery: enrol identities, verify against the record (1:1), identify (1:N, open set).

A :class:`Gallery` is one SQLite file (:mod:`siamkit.gallery.store`) plus a model: the
network that embeds inputs and, when the model is calibrated, its
:class:`~siamkit.calibration.Calibrator` (the threshold of every decision).

- Several samples (templates) per identity. The *scoring rule* says how an identity is
  compared with a probe: ``"best"`` = the distance to its closest sample;
  ``"mean"`` = the distance to the mean of its samples' embeddings (re-normalised for
  L2-normalised networks). ``bench/bench_faces_openset.py`` compares them.
- Distances are the network's own (lower = closer; a pair-head network: ``-logit``),
  exactly as :class:`~siamkit.verify.Verifier` computes them for a pair, so the calibrated
  threshold means the same thing here. Search indexes (:mod:`siamkit.gallery.search`)
  only propose candidates; their distances are recomputed with the network.
- ``identify`` is open-set: the answer is ``"unknown"`` when the best candidate's
  distance is above the calibrated threshold. Without a calibration it still ranks,
  and its decision is None (the result says why).
- Opening a gallery with another model than the one it was built with is refused
  (embeddings of two models are not comparable); :meth:`Gallery.reembed` /
  :meth:`Gallery.migrate` recompute every embedding from the stored inputs.
- Enrolling an identity that already exists is an error (:class:`IdentityExistsError`),
  not a silent merge: two people given the same name by mistake must not become one
  record. Add samples to an identity with :meth:`Gallery.add_samples`.

Example:
    >>> from siamkit.gallery import Gallery                                   # doctest: +SKIP
    >>> g = Gallery.open("staff.db", "runs/faces/model")                      # doctest: +SKIP
    >>> g.enroll("alice", ["alice1.png", "alice2.png"], metadata={"team": "R&D"})  # doctest: +SKIP
    >>> g.identify("door-camera.png", k=5).decision                           # doctest: +SKIP
    'alice'
    >>> g.verify("alice", "badge-photo.png").same                             # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import __version__
from ..calibration import Calibrator
from ..errors import DataError
from ..inference import embed_all
from ..network import SiameseNetwork
from ..verify import Verifier, load_image_for
from ..inference import network_pairwise
from .search import EXACT_MAX, INDEX_KINDS, ExactIndex, FaissIndex, choose_index, metric_for_network
from .store import (
    GalleryError,
    GalleryStore,
    ModelMismatchError,
    Snapshot,
    StoredSample,
    UnknownIdentityError,
    check_identity,
)

__all__ = [
    "Gallery",
    "IdentityRecord",
    "SampleInfo",
    "GalleryVerification",
    "Candidate",
    "Identification",
    "model_hash",
    "SCORING_RULES",
    "UNKNOWN",
]

logger = logging.getLogger(__name__)

SCORING_RULES = ("best", "mean")
#: the decision of :meth:`Gallery.identify` for a probe that matches no enrolled identity
UNKNOWN = "unknown"
_INDEX_PARAM_KEYS = ("m", "ef_construction", "ef_search", "nlist", "nprobe", "train_size", "seed")
_CACHED_KINDS = ("hnsw", "ivf")  # flat / exact indexes cost nothing to rebuild


# --------------------------------------------------------------------------- results


@dataclass
class SampleInfo:
    """One enrolled sample: its id, metadata, time, and whether its input is kept."""

    id: int
    metadata: dict[str, Any]
    created: float
    has_input: bool
    format: str | None = None


@dataclass
class IdentityRecord:
    """An enrolled identity (``samples`` is filled by :meth:`Gallery.get`, empty in
    :meth:`Gallery.list`)."""

    identity: str
    metadata: dict[str, Any]
    n_samples: int
    created: float
    updated: float
    samples: list[SampleInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GalleryVerification:
    """The answer of :meth:`Gallery.verify` (1:1 against an enrolled record).

    Attributes:
        identity: the claimed identity.
        distance: lower = closer, by the scoring rule (best: to the closest sample;
            mean: to the mean template).
        score: higher = more similar (the network's display score of ``distance``).
        same: the decision at the calibrated threshold (None: model not calibrated).
        confidence: calibrated probability of "same" (None: not calibrated).
        threshold: the calibrated distance threshold (accept when distance <= threshold).
        sample_id: the enrolled sample closest to the probe; sample_distance: its distance.
        n_samples: samples of the identity; scoring: the rule used.
    """

    identity: str
    distance: float
    score: float
    same: bool | None
    confidence: float | None
    threshold: float | None
    sample_id: int
    sample_distance: float
    n_samples: int
    scoring: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    """One ranked identity of :meth:`Gallery.identify`.

    Attributes:
        identity, distance (lower = closer), score (higher = more similar),
        sample_id: the identity's closest sample among those compared (None for the
        ``mean`` rule, which compares templates).
    """

    identity: str
    distance: float
    score: float
    sample_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Identification:
    """The answer of :meth:`Gallery.identify` (1:N, open set).

    Attributes:
        candidates: the best ``k`` identities, closest first.
        decision: the best candidate's identity, ``"unknown"`` when its distance is above
            the calibrated threshold (or the gallery is empty), None when the model is
            not calibrated (see ``note``).
        unknown: True / False, None when not calibrated.
        threshold: the calibrated threshold (None: not calibrated).
        confidence: calibrated probability that the best candidate is the same person.
        scoring: the rule used. index: the search index kind used.
        note: why there is no decision, if there is none.
    """

    candidates: list[Candidate]
    decision: str | None
    unknown: bool | None
    threshold: float | None
    confidence: float | None
    scoring: str
    index: str
    note: str | None = None

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


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


def _distance_name(network: SiameseNetwork) -> str:
    return "pair_head" if network.pair_head is not None else network.distance.name


def _resolve_model(model: Any, calibrator: Calibrator | None) -> tuple[SiameseNetwork | None, Calibrator | None]:
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
        fp_cal, fp_net = getattr(cal, "model_fingerprint_", None), getattr(net, "fingerprint", None)
        if fp_cal is not None and fp_net is not None and fp_cal != fp_net:
            raise GalleryError(f"the calibrator was fitted for model {fp_cal!r}, not for this model ({fp_net!r})")
    return net.eval(), cal


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _is_pathlike(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


# --------------------------------------------------------------------------- gallery


class Gallery:
    """Enrolled identities in a SQLite file, searched with a model's embeddings.

    Use :meth:`Gallery.open` (this constructor only stores its arguments).

    Args:
        store: the open :class:`~siamkit.gallery.store.GalleryStore`.
        network: the model (None: only list / get / remove / metadata work).
        calibrator: the model's calibration (None: no decisions, only rankings).
        scoring: ``"best"`` or ``"mean"`` (see the module doc).
        index: ``"auto"`` (:func:`~siamkit.gallery.search.choose_index`), ``"exact"``,
            ``"flat"``, ``"hnsw"`` or ``"ivf"``.
        index_params: FAISS parameters (m, ef_construction, ef_search, nlist, nprobe,
            train_size, seed).
        exact_max: ``index="auto"`` searches exactly up to this many entries.
        keep_inputs: store each sample's input (needed by :meth:`reembed`).
        cache_index: keep HNSW / IVF indexes in files next to the gallery.
        batch_size: inputs embedded per batch.
    """

    def __init__(
        self,
        *,
        store: GalleryStore,
        network: SiameseNetwork | None = None,
        calibrator: Calibrator | None = None,
        scoring: str = "best",
        index: str = "auto",
        index_params: dict[str, Any] | None = None,
        exact_max: int = EXACT_MAX,
        keep_inputs: bool = True,
        cache_index: bool = True,
        batch_size: int = 256,
    ) -> None:
        self.store = store
        self.network = network
        self.calibrator = calibrator
        self.scoring = scoring
        self.index = index
        self.index_params = index_params
        self.exact_max = exact_max
        self.keep_inputs = keep_inputs
        self.cache_index = cache_index
        self.batch_size = batch_size

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        model: Verifier | SiameseNetwork | str | os.PathLike[str] | None = None,
        *,
        calibrator: Calibrator | None = None,
        create: bool = True,
        scoring: str | None = None,
        index: str = "auto",
        index_params: dict[str, Any] | None = None,
        exact_max: int = EXACT_MAX,
        keep_inputs: bool = True,
        cache_index: bool = True,
        batch_size: int = 256,
        timeout: float = 60.0,
        check_model: bool = True,
    ) -> Gallery:
        """Open a gallery file, creating it (with ``create``) when it does not exist.

        Args:
            path: the SQLite file.
            model: a :class:`~siamkit.verify.Verifier` (network + calibration), a
                :class:`~siamkit.network.SiameseNetwork` (with ``calibrator``), a model
                folder, or None to only list / inspect / remove.
            calibrator: with a bare network: its calibration (None: rankings only).
            create: create the file if missing (needs a model).
            scoring: ``"best"`` or ``"mean"``; None = the gallery's stored default
                (``"best"`` for a new gallery). A value given when creating is stored as
                the default; later it only applies to this handle.
            index, index_params, exact_max, keep_inputs, cache_index, batch_size: see
                the class.
            timeout: seconds to wait for another process's write lock.
            check_model: refuse a model other than the gallery's (False only for
                :meth:`migrate`).

        Raises:
            GalleryFileError: missing / damaged / not a gallery / newer schema.
            ModelMismatchError: the gallery was built with another model.
            GalleryError: bad options.
        """
        net, cal = _resolve_model(model, calibrator)
        if scoring is not None and scoring not in SCORING_RULES:
            raise GalleryError(f"scoring must be one of {list(SCORING_RULES)}, got {scoring!r}")
        if index not in ("auto",) + INDEX_KINDS:
            raise GalleryError(f"index must be one of {['auto', *INDEX_KINDS]}, got {index!r}")
        params = dict(index_params or {})
        bad = sorted(set(params) - set(_INDEX_PARAM_KEYS))
        if bad:
            raise GalleryError(f"unknown index parameter(s) {bad}; known: {list(_INDEX_PARAM_KEYS)}")
        if net is not None and metric_for_network(net) is None and index not in ("auto", "exact"):
            raise GalleryError(
                f"this model compares embeddings with {_distance_name(net)!r}, which only exact search "
                f"serves; index={index!r} is not possible (use 'auto' or 'exact')"
            )
        init_meta = None
        if net is not None:
            init_meta = {
                "model_fingerprint": getattr(net, "fingerprint", None),
                "model_hash": model_hash(net),
                "embedding_dim": int(net.embedding_dim),
                "distance": _distance_name(net),
                "normalize": bool(net.normalize),
                "input_spec": net.input_spec.to_dict(),
                "scoring": scoring or "best",
                "siamkit_version": __version__,
            }
        store = GalleryStore.open(path, create=create, init_meta=init_meta, timeout=timeout)
        try:
            meta = store.meta()
            if net is not None and check_model and meta["model_hash"] != init_meta["model_hash"]:  # type: ignore[index]
                stored = meta.get("model_fingerprint") or meta["model_hash"]
                this = getattr(net, "fingerprint", None) or init_meta["model_hash"]  # type: ignore[index]
                raise ModelMismatchError(
                    f"gallery {path} was built with model {stored} but is opened with model {this}: their "
                    "embeddings are not comparable. Open it with the model it was built with, or migrate it "
                    f"to this model with `siamkit gallery reembed --gallery {path} --model MODEL_DIR` "
                    "(Gallery.migrate)"
                )
            g = cls(
                store=store, network=net, calibrator=cal, scoring=scoring or meta.get("scoring", "best"),
                index=index, index_params=params, exact_max=exact_max, keep_inputs=keep_inputs,
                cache_index=cache_index, batch_size=batch_size,
            )
        except BaseException:
            store.close()
            raise
        g._reset(None if init_meta is None else init_meta["model_hash"])
        return g

    @classmethod
    def migrate(
        cls,
        path: str | os.PathLike[str],
        model: Verifier | SiameseNetwork | str | os.PathLike[str],
        **open_kwargs: Any,
    ) -> Gallery:
        """Open a gallery built with another model and re-embed it with ``model``
        (every stored input is embedded again; one transaction). Returns the opened
        gallery. Refused (nothing changes) when some sample's input was not kept."""
        open_kwargs = {**open_kwargs, "create": False, "check_model": False}
        g = cls.open(path, model, **open_kwargs)
        try:
            g.reembed(g.network if g.calibrator is None else Verifier(g.network, g.calibrator))  # type: ignore[arg-type]
        except BaseException:
            g.close()
            raise
        return g

    def _reset(self, this_hash: str | None = None) -> None:
        self._lock = threading.RLock()
        self._snap: Snapshot | None = None
        self._emb: torch.Tensor | None = None
        self._rows_of: list[np.ndarray] | None = None
        self._templates: torch.Tensor | None = None
        self._code_of: dict[str, int] | None = None
        self._indexes: dict[str, tuple[Any, int]] = {}  # rule -> (index, generation)
        self._dirty: set[str] = set()
        meta = self.store.meta()
        self._meta = meta
        if self.network is not None and this_hash is None:
            this_hash = model_hash(self.network)
        self._model_ok = self.network is not None and meta["model_hash"] == this_hash

    # ----------------------------------------------------------------- context

    def close(self) -> None:
        """Save index caches that changed, and close the file (idempotent)."""
        lock = getattr(self, "_lock", None) or threading.RLock()
        with lock:
            if self.store.closed:
                return
            try:
                self._save_dirty_caches()
            except Exception as e:  # noqa: BLE001 - a cache: never lose the close over it
                logger.warning("could not save the index cache of %s: %s", self.store.path, e)
            self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.store.count()[0]

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, str) and self.store.has_identity(identity)

    def __repr__(self) -> str:
        closed = self.store.closed
        extra = "" if closed else f", {len(self)} identities"
        return f"Gallery({str(self.store.path)!r}, scoring={self.scoring!r}, index={self.index!r}{extra}{', closed' if closed else ''})"

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def meta(self) -> dict[str, Any]:
        """The gallery's stored meta (model fingerprint, version, embedding_dim, ...)."""
        return self.store.meta()

    @property
    def threshold(self) -> float | None:
        """The calibrated distance threshold, None when the model is not calibrated."""
        return None if self.calibrator is None else float(self.calibrator.threshold_)

    def _need_model(self, what: str) -> SiameseNetwork:
        if self.network is None:
            raise GalleryError(f"{what} needs a model: open the gallery with one")
        if not self._model_ok:
            raise ModelMismatchError(
                f"gallery {self.path} holds embeddings of another model; run reembed() before {what}"
            )
        return self.network

    # ----------------------------------------------------------------- inputs

    def _prepare(self, inputs: Any, *, what: str = "inputs", network: SiameseNetwork | None = None) -> tuple[torch.Tensor, list[StoredSample]]:
        """Inputs -> (batch for the network, what to store). Accepts image paths (one or
        a list), or a uint8 / float array (N, *shape) or one sample (*shape)."""
        net = network or self.network
        assert net is not None
        spec_shape = net.input_spec.shape
        if _is_pathlike(inputs):
            inputs = [inputs]
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 0:
                raise GalleryError(f"{what}: the list of samples is empty")
            if all(_is_pathlike(p) for p in inputs):
                tensors, stored = [], []
                for p in inputs:
                    p = Path(p)
                    tensors.append(load_image_for(net, p))
                    stored.append(StoredSample(f"file:{p.suffix.lower() or '.img'}", p.read_bytes()))
                return torch.stack(tensors), stored
            if all(isinstance(x, (torch.Tensor, np.ndarray)) for x in inputs):
                try:
                    inputs = torch.stack([torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x for x in inputs])
                except RuntimeError as e:
                    raise DataError(f"{what}: the samples differ in shape ({e})") from None
            else:
                kinds = sorted({type(x).__name__ for x in inputs})
                raise GalleryError(f"{what} must be image paths or arrays, not a mix of {kinds}")
        if isinstance(inputs, np.ndarray):
            inputs = torch.from_numpy(np.ascontiguousarray(inputs))
        if not isinstance(inputs, torch.Tensor):
            raise GalleryError(
                f"{what} must be image file paths or a uint8 array (N, C, H, W), got {type(inputs).__name__}"
            )
        x = inputs.detach().cpu()
        if spec_shape and x.ndim == len(spec_shape):
            x = x[None]
        if x.ndim < 2:
            raise DataError(f"{what}: expected a batch (N, ...) of samples, got shape {_shape_text(x.shape)}")
        if x.shape[0] == 0:
            raise GalleryError(f"{what}: no samples (an empty batch)")
        if spec_shape and tuple(x.shape[1:]) != spec_shape:
            raise DataError(
                f"{what}: samples of shape {_shape_text(x.shape[1:])}, but the model takes {_shape_text(spec_shape)}"
                + (" (channels, height, width)" if len(spec_shape) == 3 else "")
            )
        if x.dtype == torch.uint8:
            x = x.contiguous()
            arr = x.numpy()
            stored = [StoredSample("uint8", arr[i].tobytes(), tuple(arr.shape[1:])) for i in range(arr.shape[0])]
        elif x.is_floating_point():
            x = x.float().contiguous()
            if not torch.isfinite(x).all():
                raise DataError(f"{what} contain NaN or infinite values")
            arr = x.numpy().astype("<f4", copy=False)
            stored = [StoredSample("float32", arr[i].tobytes(), tuple(arr.shape[1:])) for i in range(arr.shape[0])]
        else:
            raise DataError(f"{what} must be uint8 images (0-255) or floats, got dtype {x.dtype}")
        return x, stored

    def _embed(self, x: torch.Tensor, network: SiameseNetwork | None = None) -> torch.Tensor:
        net = network or self.network
        assert net is not None
        e = embed_all(net, x, batch_size=self.batch_size).detach().cpu().float()
        if not torch.isfinite(e).all():
            raise DataError("the model produced NaN or infinite embeddings for these inputs")
        return e

    def _embed_one(self, probe: Any, what: str) -> torch.Tensor:
        x, _ = self._prepare(probe, what=what)
        if x.shape[0] != 1:
            raise GalleryError(f"{what}: expected one sample, got {x.shape[0]}")
        return self._embed(x)

    # ----------------------------------------------------------------- writes

    def enroll(
        self,
        identity: str,
        inputs: Any,
        metadata: dict[str, Any] | None = None,
        *,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> IdentityRecord:
        """Enrol a new identity from one or more samples (one transaction).

        Args:
            identity: a new identity name (see
                :func:`~siamkit.gallery.store.check_identity`).
            inputs: image file paths (one or a list), or uint8 images (N, C, H, W) /
                one image (C, H, W) (float arrays for vector models).
            metadata: a JSON-able dict kept with the identity.
            sample_metadata: one JSON-able dict (or None) per sample.

        Returns:
            The new :class:`IdentityRecord`.

        Raises:
            IdentityExistsError: already enrolled (use :meth:`add_samples`).
            DataError / GalleryError: empty, unreadable or wrongly shaped inputs, bad
                metadata.
        """
        check_identity(identity)
        self._need_model("enroll")
        x, stored = self._prepare(inputs, what=f"samples of {identity!r}")
        emb = self._embed(x)
        with self._lock:
            old, new, ids = self.store.add_identity(
                identity, emb.numpy(), stored if self.keep_inputs else [None] * len(stored),
                metadata=metadata, sample_metadata=sample_metadata,
            )
            self._after_add(old, new, identity, ids, emb)
        return self.get(identity)

    def add_samples(
        self,
        identity: str,
        inputs: Any,
        *,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> IdentityRecord:
        """Add samples to an enrolled identity (one transaction).

        Raises:
            UnknownIdentityError: not enrolled.
        """
        self._need_model("add_samples")
        if not self.store.has_identity(identity):
            raise UnknownIdentityError(f"identity {identity!r} is not enrolled; enrol it first")
        x, stored = self._prepare(inputs, what=f"samples of {identity!r}")
        emb = self._embed(x)
        with self._lock:
            old, new, ids = self.store.add_samples(
                identity, emb.numpy(), stored if self.keep_inputs else [None] * len(stored), sample_metadata=sample_metadata
            )
            self._after_add(old, new, identity, ids, emb)
        return self.get(identity)

    def remove(self, identity: str) -> int:
        """Remove an identity and its samples (one transaction). Returns the number of
        samples removed.

        Raises:
            UnknownIdentityError: not enrolled.
        """
        with self._lock:
            old, new, n = self.store.remove_identity(identity)
            snap = self._snap
            code = self._code(identity) if snap is not None else None
            if snap is not None and old == snap.generation and code is not None:
                keep = snap.codes != code
                codes = snap.codes[keep]
                codes = codes - (codes > code)
                names = snap.identities[:code] + snap.identities[code + 1 :]
                self._set_snapshot(Snapshot(new, snap.sample_ids[keep], codes, names, snap.embeddings[keep]))
            else:
                self._invalidate()
        return n

    def set_metadata(self, identity: str, metadata: dict[str, Any]) -> IdentityRecord:
        """Replace an identity's metadata (one transaction)."""
        with self._lock:
            old, new = self.store.set_metadata(identity, metadata)
            if self._snap is not None and old == self._snap.generation:
                self._snap.generation = new
                for rule, (idx, gen) in list(self._indexes.items()):
                    if gen == old:
                        self._indexes[rule] = (idx, new)
        return self.get(identity)

    def _after_add(self, old: int, new: int, identity: str, ids: list[int], emb: torch.Tensor) -> None:
        """Keep the in-memory view and indexes in step with our own write, when nothing
        else wrote in between; otherwise reload lazily."""
        snap = self._snap
        if snap is None or old != snap.generation:
            self._invalidate()
            return
        names = list(snap.identities)
        code = self._code(identity)
        if code is None:
            names.append(identity)
            code = len(names) - 1
        new_snap = Snapshot(
            new,
            np.concatenate([snap.sample_ids, np.asarray(ids, dtype=np.int64)]),
            np.concatenate([snap.codes, np.full(len(ids), code, dtype=np.int64)]),
            names,
            np.concatenate([snap.embeddings, emb.numpy().astype(np.float32)]),
        )
        best = self._indexes.get("best")
        dirty = "best" in self._dirty
        self._set_snapshot(new_snap)
        if best is not None and best[1] == old:
            index = best[0]
            index.add(emb.numpy())
            self._indexes["best"] = (index, new)
            if index.kind in _CACHED_KINDS or dirty:
                self._dirty.add("best")

    def _invalidate(self) -> None:
        self._snap = None
        self._emb = None
        self._rows_of = None
        self._templates = None
        self._code_of = None
        self._indexes = {}
        self._dirty = set()

    def _set_snapshot(self, snap: Snapshot) -> None:
        self._snap = snap
        self._emb = torch.from_numpy(np.array(snap.embeddings, dtype=np.float32, copy=True))
        self._rows_of = None
        self._templates = None
        self._code_of = None
        self._indexes = {}
        self._dirty = set()

    def _code(self, identity: str) -> int | None:
        """The code of an identity in the in-memory view (None: not enrolled)."""
        snap = self._snap
        assert snap is not None
        if self._code_of is None:
            self._code_of = {name: i for i, name in enumerate(snap.identities)}
        return self._code_of.get(identity)

    # ----------------------------------------------------------------- reads

    def list(self) -> list[IdentityRecord]:
        """Every identity (metadata, sample count, times), in enrolment order."""
        return [IdentityRecord(**r) for r in self.store.list_identities()]

    def get(self, identity: str) -> IdentityRecord:
        """One identity with its samples.

        Raises:
            UnknownIdentityError: not enrolled.
        """
        r = self.store.get_identity(identity)
        r["samples"] = [SampleInfo(**s) for s in r["samples"]]
        return IdentityRecord(**r)

    def audit_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Enrol / add / remove / reembed events, newest first."""
        return self.store.audit_log(limit)

    @property
    def n_samples(self) -> int:
        return self.store.count()[1]

    def _fresh(self) -> Snapshot:
        """The in-memory view, reloaded if any process wrote since it was read."""
        gen = self.store.generation()
        if self._snap is None or self._snap.generation != gen:
            dim = int(self._meta["embedding_dim"]) if self.network is None else self.network.embedding_dim
            self._set_snapshot(self.store.snapshot(dim))
        assert self._snap is not None
        return self._snap

    def _rows(self) -> list[np.ndarray]:
        snap = self._snap
        assert snap is not None
        if self._rows_of is None:
            order = np.argsort(snap.codes, kind="stable")
            bounds = np.searchsorted(snap.codes[order], np.arange(len(snap.identities) + 1))
            self._rows_of = [order[bounds[i] : bounds[i + 1]] for i in range(len(snap.identities))]
        return self._rows_of

    def _template_matrix(self) -> torch.Tensor:
        snap = self._snap
        assert snap is not None and self._emb is not None and self.network is not None
        if self._templates is None:
            n_id, d = len(snap.identities), self._emb.shape[1]
            sums = torch.zeros(n_id, d, dtype=torch.float64)
            sums.index_add_(0, torch.from_numpy(snap.codes), self._emb.double())
            counts = torch.bincount(torch.from_numpy(snap.codes), minlength=n_id).clamp_min(1)
            t = (sums / counts[:, None]).float()
            if self.network.normalize:
                t = torch.nn.functional.normalize(t, dim=1)
            self._templates = t
        return self._templates

    def _distance_to_rows(self, q: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Network distances of one query (1, D) to vectors (M, D) -> (M,), exactly as a
        Verifier computes a pair."""
        assert self.network is not None
        with torch.no_grad():
            if vectors.shape[0] == 0:
                return vectors.new_zeros(0)
            return self.network.embedding_distance(q.expand(vectors.shape[0], -1), vectors).float()

    # ----------------------------------------------------------------- index

    def _cache_path(self, rule: str, kind: str) -> Path:
        return Path(f"{self.store.path}.{rule}-{kind}.faiss")

    def _cache_state(self, rule: str) -> dict[str, Any]:
        assert self._snap is not None
        return {
            "gallery_id": self._meta["gallery_id"],
            "generation": int(self._snap.generation),
            "model_hash": self._meta["model_hash"],
            "content": rule,
        }

    def _index_for(self, rule: str) -> tuple[Any, str]:
        """The search index of ``rule``'s vectors (samples or templates), built, loaded
        from the cache or kept from before."""
        snap = self._snap
        assert snap is not None and self.network is not None and self._emb is not None
        vectors = self._emb if rule == "best" else self._template_matrix()
        n = int(vectors.shape[0])
        metric = metric_for_network(self.network)
        kind = self.index if self.index != "auto" else choose_index(n, exact_max=self.exact_max, supports_faiss=metric is not None)
        have = self._indexes.get(rule)
        if have is not None and have[1] == snap.generation and have[0].kind == kind:
            if not (isinstance(have[0], FaissIndex) and have[0].outgrown(n)):
                return have[0], kind
        net = self.network
        if kind == "exact":
            index: Any = ExactIndex(distance_fn=lambda q, x: network_pairwise(net, q, x)).build(vectors)
        else:
            assert metric is not None
            index = FaissIndex(kind=kind, metric=metric, **(self.index_params or {}))
            loaded = False
            path = self._cache_path(rule, kind)
            state = self._cache_state(rule)
            if self.cache_index and kind in _CACHED_KINDS:
                loaded = index.load(path, state=state)
                if loaded and (index.ntotal != n or index.outgrown(n)):
                    loaded = False
            if not loaded:
                if n == 0:
                    index = ExactIndex(distance_fn=lambda q, x: network_pairwise(net, q, x)).build(vectors)
                else:
                    index.build(vectors.numpy())
                    logger.info("built a %s index of %d vectors in %.1f s", kind, n, index.build_seconds_)
                    if self.cache_index and kind in _CACHED_KINDS:
                        try:
                            index.save(path, state=state)
                        except OSError as e:
                            logger.warning("could not write the index cache %s: %s", path, e)
        self._indexes[rule] = (index, snap.generation)
        self._dirty.discard(rule)
        return index, kind

    def _save_dirty_caches(self) -> None:
        if not self._dirty or self._snap is None or not self.cache_index:
            return
        if self.store.generation() != self._snap.generation:
            return  # someone else wrote: our index no longer matches the file
        for rule in list(self._dirty):
            idx, gen = self._indexes.get(rule, (None, -1))
            if idx is not None and gen == self._snap.generation and idx.kind in _CACHED_KINDS:
                idx.save(self._cache_path(rule, idx.kind), state=self._cache_state(rule))
        self._dirty = set()

    def build_index(self, scoring: str | None = None) -> str:
        """Build (or load from the cache) the search index now rather than on the first
        query. Returns the index kind."""
        rule = self._rule(scoring)
        self._need_model("build_index")
        with self._lock:
            self._fresh()
            return self._index_for(rule)[1]

    # ----------------------------------------------------------------- queries

    def _rule(self, scoring: str | None) -> str:
        rule = scoring or self.scoring
        if rule not in SCORING_RULES:
            raise GalleryError(f"scoring must be one of {list(SCORING_RULES)}, got {rule!r}")
        return rule

    def verify(self, identity: str, probe: Any, *, scoring: str | None = None) -> GalleryVerification:
        """1:1: is ``probe`` the enrolled ``identity``?

        Args:
            identity: an enrolled identity.
            probe: one image path, or one uint8 image (C, H, W) / (1, C, H, W).
            scoring: override the gallery's rule for this call.

        Returns:
            :class:`GalleryVerification` (decision and confidence None when the model is
            not calibrated).

        Raises:
            UnknownIdentityError: not enrolled.
        """
        rule = self._rule(scoring)
        net = self._need_model("verify")
        q = self._embed_one(probe, "the probe")
        with self._lock:
            snap = self._fresh()
            code = self._code(identity)
            if code is None:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            rows = self._rows()[code]
            assert self._emb is not None
            d_rows = self._distance_to_rows(q, self._emb[torch.from_numpy(rows)])
            j = int(torch.argmin(d_rows))
            sample_id, sample_d = int(snap.sample_ids[rows[j]]), float(d_rows[j])
            if rule == "best":
                dist = sample_d
            else:
                dist = float(self._distance_to_rows(q, self._template_matrix()[code : code + 1])[0])
        score = float(net.distance_to_score(torch.tensor([dist], dtype=torch.float64))[0])
        same = conf = thr = None
        if self.calibrator is not None:
            same = bool(self.calibrator.decide([dist])[0])
            conf = float(self.calibrator.confidence([dist])[0])
            thr = float(self.calibrator.threshold_)
        return GalleryVerification(
            identity=identity, distance=dist, score=score, same=same, confidence=conf, threshold=thr,
            sample_id=sample_id, sample_distance=sample_d, n_samples=int(len(rows)), scoring=rule,
        )

    def identify(self, probe: Any, k: int = 5, *, scoring: str | None = None) -> Identification:
        """1:N, open set: the ``k`` closest identities and the decision.

        Args:
            probe: one image path, or one uint8 image (C, H, W) / (1, C, H, W).
            k: candidates to return.
            scoring: override the gallery's rule for this call.

        Returns:
            :class:`Identification`: ``decision`` is the best identity, ``"unknown"``
            when its distance is above the calibrated threshold, None without a
            calibration.
        """
        self._need_model("identify")
        q = self._embed_one(probe, "the probe")
        return self._identify_embeddings(q, k, scoring)[0]

    def identify_batch(self, probes: Any, k: int = 5, *, scoring: str | None = None) -> list[Identification]:
        """:meth:`identify` for several probes (paths, or an array (N, C, H, W))."""
        self._need_model("identify")
        x, _ = self._prepare(probes, what="the probes")
        return self._identify_embeddings(self._embed(x), k, scoring)

    def _identify_embeddings(self, q: torch.Tensor, k: int, scoring: str | None) -> list[Identification]:
        rule = self._rule(scoring)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise GalleryError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        net = self.network
        assert net is not None
        with self._lock:
            snap = self._fresh()
            if not snap.identities:
                ranked: list[list[tuple[int, float, int | None]]] = [[] for _ in range(q.shape[0])]
                kind = "exact"
            else:
                index, kind = self._index_for(rule)
                ranked = self._rank(index, q, k, rule)
            names = snap.identities
            sample_ids = snap.sample_ids
        out = []
        for r in ranked:
            dists = torch.tensor([d for _, d, _ in r], dtype=torch.float64)
            scores = net.distance_to_score(dists).tolist() if r else []
            cands = [
                Candidate(names[c], float(d), float(scores[i]), None if row is None else int(sample_ids[row]))
                for i, (c, d, row) in enumerate(r)
            ]
            out.append(self._decide(cands, rule, kind))
        return out

    def _decide(self, cands: list[Candidate], rule: str, kind: str) -> Identification:
        if self.calibrator is None:
            return Identification(
                cands, None, None, None, None, rule, kind,
                note="the model is not calibrated: candidates are ranked, but there is no threshold to decide "
                "between them and 'unknown' (run `siamkit calibrate`)",
            )
        thr = float(self.calibrator.threshold_)
        if not cands:
            return Identification(cands, UNKNOWN, True, thr, None, rule, kind, note="the gallery is empty")
        top = cands[0]
        conf = float(self.calibrator.confidence([top.distance])[0])
        known = bool(self.calibrator.decide([top.distance])[0])
        return Identification(cands, top.identity if known else UNKNOWN, not known, thr, conf, rule, kind)

    def _rank(self, index: Any, q: torch.Tensor, k: int, rule: str) -> list[list[tuple[int, float, int | None]]]:
        """Per query: [(identity code, distance, best row or None)] closest first."""
        snap = self._snap
        assert snap is not None and self._emb is not None
        n_id = len(snap.identities)
        k = min(k, n_id)
        out: list[list[tuple[int, float, int | None]]] = []
        if rule == "mean":
            templates = self._template_matrix()
            if isinstance(index, ExactIndex):
                for s in self._query_chunks(q.shape[0], n_id):
                    v, c = torch.topk(index.distances(q[s].numpy()), k, dim=1, largest=False, sorted=True)
                    out += [[(int(c[i, j]), float(v[i, j]), None) for j in range(k)] for i in range(v.shape[0])]
                return out
            kk = min(n_id, max(2 * k, k + 16))
            _, cand = index.search(q.numpy(), kk)
            for i in range(q.shape[0]):
                codes = np.unique(cand[i][cand[i] >= 0])
                d = self._distance_to_rows(q[i : i + 1], templates[torch.from_numpy(codes)]).numpy()
                order = np.argsort(d, kind="stable")[:k]
                out.append([(int(codes[j]), float(d[j]), None) for j in order])
            return out
        # best sample per identity
        codes_all = snap.codes
        if isinstance(index, ExactIndex):
            every = np.arange(index.ntotal)
            for s in self._query_chunks(q.shape[0], index.ntotal):
                d_all = index.distances(q[s].numpy()).numpy()
                out += [self._group(every, d_all[i], codes_all, k) for i in range(d_all.shape[0])]
            return out
        n = index.ntotal
        s_max = int(np.bincount(codes_all).max()) if codes_all.size else 1
        rows_of = self._rows()
        for i in range(q.shape[0]):
            kk = min(n, min(4096, max(k * s_max, 4 * k, 32)))
            while True:
                _, rows = index.search(q[i : i + 1].numpy(), kk)
                rows = rows[0][rows[0] >= 0]
                cand_codes = np.unique(codes_all[rows])
                if len(cand_codes) >= k or kk >= n:
                    break
                kk = min(n, kk * 2)
            # exact distances to every sample of the candidate identities
            cand_rows = np.concatenate([rows_of[c] for c in cand_codes]) if len(cand_codes) else np.zeros(0, np.int64)
            d = self._distance_to_rows(q[i : i + 1], self._emb[torch.from_numpy(cand_rows)]).numpy()
            out.append(self._group(cand_rows, d, codes_all, k))
        return out

    @staticmethod
    def _query_chunks(n_queries: int, n_rows: int, max_elems: int = 1 << 24) -> list[slice]:
        step = max(1, max_elems // max(1, n_rows))
        return [slice(i, min(n_queries, i + step)) for i in range(0, n_queries, step)]

    @staticmethod
    def _group(rows: np.ndarray, d: np.ndarray, codes: np.ndarray, k: int) -> list[tuple[int, float, int | None]]:
        """Best (closest) row per identity, the k closest identities."""
        order = np.argsort(d, kind="stable")
        c_sorted = codes[rows[order]]
        _, first = np.unique(c_sorted, return_index=True)
        best = order[first]
        best = best[np.argsort(d[best], kind="stable")][:k]
        return [(int(codes[rows[j]]), float(d[j]), int(rows[j])) for j in best]

    # ----------------------------------------------------------------- migration

    def reembed(self, model: Verifier | SiameseNetwork | str | os.PathLike[str], *, calibrator: Calibrator | None = None) -> int:
        """Re-embed every stored sample with ``model`` and make it the gallery's model
        (one transaction: the gallery is never half old, half new).

        Returns:
            The number of samples re-embedded.

        Raises:
            GalleryError: some samples were enrolled without keeping their input
                (``keep_inputs=False``), a stored input does not fit the new model, or
                another process wrote during the re-embedding (nothing is changed).
        """
        net, cal = _resolve_model(model, calibrator)
        assert net is not None
        with self._lock:
            gen0 = self.store.generation()
            ids: list[int] = []
            parts: list[torch.Tensor] = []
            missing = 0
            for batch in self.store.iter_stored_samples(self.batch_size):
                xs = []
                for sid, s in batch:
                    if s is None:
                        missing += 1
                        continue
                    ids.append(sid)
                    xs.append(self._decode_stored(s, sid, net))
                if xs:
                    parts.append(self._embed(torch.stack(xs), net))
            if missing:
                raise GalleryError(
                    f"cannot re-embed: {missing} sample(s) were enrolled without keeping their input "
                    "(keep_inputs=False); re-enrol them from the original images"
                )
            emb = torch.cat(parts).numpy() if parts else np.zeros((0, net.embedding_dim), np.float32)
            updates = {
                "model_fingerprint": getattr(net, "fingerprint", None),
                "model_hash": model_hash(net),
                "embedding_dim": int(net.embedding_dim),
                "distance": _distance_name(net),
                "normalize": bool(net.normalize),
                "input_spec": net.input_spec.to_dict(),
                "siamkit_version": __version__,
            }
            self.store.replace_embeddings(np.asarray(ids, dtype=np.int64), emb, updates, expected_generation=gen0)
            self.network, self.calibrator = net, cal
            if metric_for_network(net) is None and self.index not in ("auto", "exact"):
                self.index = "auto"
            self._invalidate()
            self._meta = self.store.meta()
            self._model_ok = True
        return len(ids)

    @staticmethod
    def _decode_stored(s: StoredSample, sid: int, net: SiameseNetwork) -> torch.Tensor:
        spec_shape = net.input_spec.shape
        if s.format.startswith("file:"):
            suffix = s.format[5:] or ".img"
            fd, tmp = tempfile.mkstemp(suffix=suffix)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(s.data)
                return load_image_for(net, tmp)
            except DataError as e:
                raise GalleryError(f"stored sample {sid} cannot be decoded for the new model: {e}") from None
            finally:
                Path(tmp).unlink(missing_ok=True)
        arr = s.array()
        if spec_shape and tuple(arr.shape) != spec_shape:
            raise GalleryError(
                f"stored sample {sid} is a {_shape_text(arr.shape)} array but the new model takes "
                f"{_shape_text(spec_shape)}; samples enrolled from image files can be resized, raw arrays cannot"
            )
        return torch.from_numpy(arr.copy())

"""The gallery: enrol identities, verify against the record (1:1), identify (1:N, open set).

A :class:`Gallery` is a store (a SQLite file or a PostgreSQL database, :mod:`.backend`)
plus a model: the network that embeds inputs and, when calibrated, its Calibrator.

- Several samples (templates) per identity, compared with a probe by a *scoring rule*:
  ``"best"`` (closest sample) or ``"mean"`` (mean template); distances are the network's
  own, as a :class:`~siamkit.verify.Verifier` computes them (:mod:`~siamkit.gallery.ranking`).
- ``identify`` is open-set: ``"unknown"`` above the calibrated threshold (uncalibrated: it still ranks).
- Opening a gallery with another model than the one it was built with is refused
  (embeddings of two models are not comparable); :meth:`Gallery.reembed` /
  :meth:`Gallery.migrate` recompute every embedding from the stored inputs. A handle
  whose gallery another process re-embedded refuses until :meth:`Gallery.adopt_model`
  (:mod:`~siamkit.gallery.model_guard`).
- Enrolling an identity that already exists is an error (:class:`IdentityExistsError`),
  not a silent merge: two people given the same name by mistake must not become one
  record. Add samples to an identity with :meth:`Gallery.add_samples`.

:class:`Gallery` is a facade over the parts listed in :mod:`siamkit.gallery`.

Example:
    >>> from siamkit.gallery import Gallery                                   # doctest: +SKIP
    >>> g = Gallery.open("staff.db", "runs/faces/model")                      # doctest: +SKIP
    >>> g.enroll("alice", ["alice1.png", "alice2.png"], metadata={"team": "R&D"})  # doctest: +SKIP
    >>> g.identify("door-camera.png", k=5).decision                           # doctest: +SKIP
    'alice'
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..calibration import Calibrator
from ..errors import GalleryError, ModelMismatchError, UnknownIdentityError
from ..network import SiameseNetwork
from ..verify import Verifier
from .backend import GalleryBackend
from .cache import GalleryCache
from .inputs import embed_batch, embed_stored, prepare_inputs
from .model import check_same_model, model_hash, model_meta, resolve_model
from .opening import open_checked_store, watch_changes
from .ranking import SCORING_RULES, candidates, check_k, check_rule, decide, rank
from .results import UNKNOWN, Candidate, GalleryVerification, Identification, IdentityRecord, SampleInfo
from .adapt import identify_answers, verify_answer
from .search import metric_for_network
from .selfcal import decision_calibrators
from .settings import GallerySettings
from .snapshot import SnapshotView
from .store_schema import StoredSample, check_identity
from .written import record_after_write

__all__ = ["Gallery", "IdentityRecord", "SampleInfo", "GalleryVerification", "Candidate", "Identification", "model_hash",
           "SCORING_RULES", "UNKNOWN"]

logger = logging.getLogger(__name__)

ModelLike = Verifier | SiameseNetwork | str | os.PathLike[str]


class Gallery:
    """Enrolled identities in a SQLite file, searched with a model's embeddings.

    Use :meth:`Gallery.open` (this constructor only stores its arguments and sets up the
    empty in-memory state).

    Args:
        store: the open store (:class:`~siamkit.gallery.backend.GalleryBackend`: a SQLite
            file or a PostgreSQL database).
        network: the model (None: only list / get / remove / metadata work).
        calibrator: the model's calibration (None: no decisions, only rankings).
        settings: scoring rule, search index, caching, batch size
            (:class:`~siamkit.gallery.settings.GallerySettings`; None: the defaults).
    """

    def __init__(
        self,
        *,
        store: GalleryBackend,
        network: SiameseNetwork | None = None,
        calibrator: Calibrator | None = None,
        settings: GallerySettings | None = None,
    ) -> None:
        self.store = store
        self.network = network
        self.calibrator = calibrator
        self.settings = settings if settings is not None else GallerySettings()
        self._lock = threading.RLock()
        self._cache = GalleryCache(store.path)
        self._meta: dict[str, Any] = {}
        self._model_ok = False

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        model: ModelLike | None = None,
        *,
        calibrator: Calibrator | None = None,
        create: bool = True,
        timeout: float = 60.0,
        check_model: bool = True,
        **settings: Any,
    ) -> Gallery:
        """Open a gallery file, creating it (with ``create``) when it does not exist.

        Args:
            path: the SQLite file, or a PostgreSQL database ``postgresql://user@host:port/db``
                shared by several processes (:mod:`siamkit.gallery.pg_store`).
            model: a :class:`~siamkit.verify.Verifier` (network + calibration), a
                :class:`~siamkit.network.SiameseNetwork` (with ``calibrator``), a model
                folder, or None to only list / inspect / remove.
            calibrator: with a bare network: its calibration (None: rankings only).
            create: create the file if missing (needs a model).
            timeout: seconds to wait for another process's write lock.
            check_model: refuse a model other than the gallery's (False only for
                :meth:`migrate`).
            settings: fields of :class:`~siamkit.gallery.settings.GallerySettings`
                (scoring, index, index_params, exact_max, keep_inputs, cache_index,
                batch_size). A ``scoring`` given when creating is stored as the
                gallery's default; later it only applies to this handle.

        Returns:
            The open gallery (close it, or use it as a context manager).

        Raises:
            GalleryFileError: missing / damaged / not a gallery / newer schema.
            ModelMismatchError: the gallery was built with another model.
            GalleryError: bad options.
        """
        net, cal = resolve_model(model, calibrator)
        opts = GallerySettings(**settings)
        opts.check(net)
        init_meta = None if net is None else {**model_meta(net), "scoring": opts.scoring or "best"}
        store, opts = open_checked_store(path, init_meta, opts, create=create, timeout=timeout, check_model=check_model)
        g = cls(store=store, network=net, calibrator=cal, settings=opts)
        g._attach(None if init_meta is None else init_meta["model_hash"])
        watch_changes(g)
        return g

    @classmethod
    def migrate(cls, path: str | os.PathLike[str], model: ModelLike, **open_kwargs: Any) -> Gallery:
        """Open a gallery built with another model and re-embed it with ``model``
        (every stored input is embedded again; one transaction).

        Args:
            path: the gallery file.
            model: the new model (as for :meth:`open`).
            open_kwargs: other :meth:`open` arguments (not ``create`` / ``check_model``).

        Returns:
            The opened, re-embedded gallery. Refused (nothing changes) when some
            sample's input was not kept.
        """
        open_kwargs = {**open_kwargs, "create": False, "check_model": False}
        g = cls.open(path, model, **open_kwargs)
        try:
            g.reembed(g.network if g.calibrator is None else Verifier(g.network, g.calibrator))  # type: ignore[arg-type]
        except BaseException:
            g.close()
            raise
        return g

    def adopt_model(self, model: ModelLike, *, calibrator: Calibrator | None = None) -> None:
        """Serve with the model another process re-embedded the gallery with (queries and writes
        raise GalleryModelChangedError until then; ModelMismatchError for another model).

        Args:
            model: the gallery's new model (as for :meth:`open`); calibrator: its calibration, with a bare network.
        """
        net, cal = resolve_model(model, calibrator)
        with self._lock:
            check_same_model(self.store.meta(), model_meta(net), self.path)  # type: ignore[arg-type]
            self.network, self.calibrator, self.store.model_hash = net, cal, model_hash(net)  # type: ignore[arg-type]
            self._cache.reset()
            self._attach(self.store.model_hash)

    def _attach(self, this_hash: str | None) -> None:
        """Read the stored meta and whether it was built with this handle's model."""
        self._meta = self.store.meta()
        if self.network is not None and this_hash is None:
            this_hash = model_hash(self.network)
        self._model_ok = self.network is not None and self._meta["model_hash"] == this_hash

    def close(self) -> None:
        """Save index caches that changed, and close the file (idempotent)."""
        with self._lock:
            if self.store.closed:
                return
            try:
                self._cache.save(self.store, self.settings, self._meta)
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
        return f"Gallery({str(self.store.path)!r}, scoring={self.scoring!r}, index={self.settings.index!r}{extra}{', closed' if closed else ''})"

    @property
    def path(self) -> Path | str:
        """The SQLite file, or the database URL (without its password)."""
        return self.store.path

    def refresh(self) -> None:
        """Follow other processes' writes now, not at the next query (a database's listener calls it)."""
        with self._lock:
            if not self.store.closed and self._model_ok:
                self._fresh()

    @property
    def scoring(self) -> str:
        """This handle's default scoring rule."""
        return self.settings.scoring or "best"

    @property
    def meta(self) -> dict[str, Any]:
        """The gallery's stored meta (model fingerprint, version, embedding_dim, ...)."""
        return self.store.meta()

    @property
    def threshold(self) -> float | None:
        """The calibrated distance threshold, None when the model is not calibrated."""
        return None if self.calibrator is None else float(self.calibrator.threshold_)

    @property
    def n_samples(self) -> int:
        return self.store.count()[1]

    @property
    def _indexes(self) -> dict[str, tuple[Any, int]]:
        """rule -> (search index, generation it matches) (for tests and debugging)."""
        return self._cache.search.entries

    def _need_model(self, what: str) -> SiameseNetwork:
        if self.network is None:
            raise GalleryError(f"{what} needs a model: open the gallery with one")
        if not self._model_ok:
            raise ModelMismatchError(f"gallery {self.path} holds embeddings of another model; run reembed() before {what}")
        return self.network

    def _embed(self, inputs: Any, what: str, *, one: bool = False) -> tuple[torch.Tensor, list[StoredSample]]:
        """Inputs -> (embeddings, what to store of each sample); ``one``: exactly one."""
        net = self.network
        assert net is not None
        x, stored = prepare_inputs(inputs, net, what=what)
        if one and x.shape[0] != 1:
            raise GalleryError(f"{what}: expected one sample, got {x.shape[0]}")
        return embed_batch(net, x, self.settings.batch_size), stored

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
                :func:`~siamkit.gallery.store_schema.check_identity`).
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
        return self._add(
            identity, inputs,
            lambda e, s: self.store.add_identity(identity, e, s, metadata=metadata, sample_metadata=sample_metadata),
        )

    def add_samples(
        self,
        identity: str,
        inputs: Any,
        *,
        sample_metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> IdentityRecord:
        """Add samples to an enrolled identity (one transaction).

        Args:
            identity: an enrolled identity.
            inputs: as for :meth:`enroll`.
            sample_metadata: one JSON-able dict (or None) per sample.

        Returns:
            The updated :class:`IdentityRecord`.

        Raises:
            UnknownIdentityError: not enrolled.
        """
        self._need_model("add_samples")
        if not self.store.has_identity(identity):
            raise UnknownIdentityError(f"identity {identity!r} is not enrolled; enrol it first")
        return self._add(identity, inputs, lambda e, s: self.store.add_samples(identity, e, s, sample_metadata=sample_metadata))

    def _add(self, identity: str, inputs: Any, write: Callable[[np.ndarray, list[Any]], Any]) -> IdentityRecord:
        """Embed ``inputs``, ``write`` them (embeddings, kept inputs) in one transaction,
        and follow the write in memory."""
        emb, stored = self._embed(inputs, f"samples of {identity!r}")
        kept: list[Any] = list(stored) if self.settings.keep_inputs else [None] * len(stored)
        with self._lock:
            old, new, ids = write(emb.numpy(), kept)
            self._cache.added(old, new, identity, ids, emb.numpy())
        return record_after_write(self, identity, ids, kept)

    def remove(self, identity: str) -> int:
        """Remove an identity and its samples (one transaction). Returns the number of
        samples removed.

        Raises:
            UnknownIdentityError: not enrolled.
        """
        with self._lock:
            old, new, n = self.store.remove_identity(identity)
            self._cache.removed(old, new, identity)
        return n

    def set_metadata(self, identity: str, metadata: dict[str, Any]) -> IdentityRecord:
        """Replace an identity's metadata (one transaction).

        Args:
            identity: an enrolled identity.
            metadata: its new JSON-able metadata.

        Returns:
            The updated :class:`IdentityRecord`.
        """
        with self._lock:
            old, new = self.store.set_metadata(identity, metadata)
            self._cache.retagged(old, new)
        return self.get(identity)

    def _fresh(self) -> SnapshotView:
        """The in-memory view, reloaded if any process wrote since it was read."""
        return self._cache.fresh(self.store, self.network, self._meta)

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

    # ----------------------------------------------------------------- queries

    def build_index(self, scoring: str | None = None) -> str:
        """Build (or load from the cache) the search index now rather than on the first
        query. Returns the index kind."""
        rule = check_rule(scoring or self.scoring)
        net = self._need_model("build_index")
        with self._lock:
            self._fresh()
            return self._cache.index(rule, net, self.settings, self._meta)[1]

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
        rule = check_rule(scoring or self.scoring)
        net = self._need_model("verify")
        q = self._embed(probe, "the probe", one=True)[0]
        with self._lock:
            view = self._fresh()
            code = view.code(identity)
            if code is None:
                raise UnknownIdentityError(f"identity {identity!r} is not enrolled")
            return verify_answer(self, identity, code, q, view, net, rule)

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
        net = self._need_model("identify")
        return self._identify(net, self._embed(probe, "the probe", one=True)[0], k, scoring)[0]

    def identify_batch(self, probes: Any, k: int = 5, *, scoring: str | None = None) -> list[Identification]:
        """:meth:`identify` for several probes.

        Args:
            probes: image paths, or an array (N, C, H, W).
            k: candidates per probe.
            scoring: override the gallery's rule for this call.

        Returns:
            One :class:`Identification` per probe, in order.
        """
        net = self._need_model("identify")
        return self._identify(net, self._embed(probes, "the probes")[0], k, scoring)

    def _identify(self, net: SiameseNetwork, q: torch.Tensor, k: int, scoring: str | None) -> list[Identification]:
        rule = check_rule(scoring or self.scoring)
        k = check_k(k)
        with self._lock:
            view, cal = self._fresh(), decision_calibrators(self)[1]  # identify's threshold (gallery.selfcal)
            if not view.n_identities:
                ranked: list[Any] = [[] for _ in range(q.shape[0])]
                kind = "exact"
            else:
                index, kind = self._cache.index(rule, net, self.settings, self._meta)
                ranked = rank(index, view, net, q, k, rule)
            return identify_answers(self, [decide(candidates(r, view, net), rule, kind, cal) for r in ranked], q)

    def reembed(self, model: ModelLike, *, calibrator: Calibrator | None = None) -> int:
        """Re-embed every stored sample with ``model`` and make it the gallery's model
        (one transaction: the gallery is never half old, half new).

        Args:
            model: the new model (as for :meth:`open`).
            calibrator: its calibration, with a bare network.

        Returns:
            The number of samples re-embedded.

        Raises:
            GalleryError: some inputs were not kept (``keep_inputs=False``) or do not fit the new
                model, or another process wrote during the re-embedding (nothing is changed).
        """
        net, cal = resolve_model(model, calibrator)
        assert net is not None
        with self._lock:
            gen0 = self.store.generation()
            ids, emb = embed_stored(self.store, net, self.settings.batch_size)
            self.store.replace_embeddings(ids, emb, model_meta(net), expected_generation=gen0)
            self.network, self.calibrator = net, cal
            if metric_for_network(net) is None and self.settings.index not in ("auto", "exact"):
                self.settings = replace(self.settings, index="auto")
            self._cache.reset()
            self._meta = self.store.meta()
            self._model_ok = True
        return len(ids)

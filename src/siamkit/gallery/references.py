"""Writer-dependent verification in a gallery: K enrolled references, a rule, a calibrated threshold.

How banks verify a signature: the account holder enrolled K reference signatures; a
questioned one is compared with each of them and the K distances are combined by a rule
(:mod:`siamkit.evaluation.references`: ``best`` = the closest reference, ``mean`` = the
mean distance). The threshold of a rule depends on K (the best of 5 distances is smaller
than the best of 1), so it is fitted per rule and per K, on held-out writers'
genuine-vs-skilled-forgery decisions (:func:`fit_reference_calibration`), and saved
beside the model as ``reference_calibration.json`` (:class:`ReferenceCalibration`).

These are functions of a :class:`~siamkit.gallery.Gallery`:

- :func:`enroll_references`: enrol files, optionally with the signature preprocessing
  (``preprocess="signature"``: :class:`~siamkit.data.SignaturePreprocess` at the model's
  input size, as ``train --task signatures`` reads scans). The preprocessing is recorded
  in each sample's metadata, and every later probe of that identity is prepared the same
  way (:func:`probe_input`), so enrolment and verification cannot disagree.
- :func:`verify_references`: the K distances, the rule's distance and the decision at the
  calibrated threshold for that rule and K.

Example:
    >>> cal = fit_reference_calibration(net, heldout_sigs, ks=(1, 3, 5))     # doctest: +SKIP
    >>> cal.save("runs/sig/model")                                          # doctest: +SKIP
    >>> enroll_references(g, "w41", refs, preprocess="signature")           # doctest: +SKIP
    >>> verify_references(g, "w41", "cheque.png", rule="mean", calibration=cal).same  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import __version__
from .._atomic import write_json_atomic
from ..calibration import Calibrator
from ..data.images import load_image
from ..data.signatures import SignatureDataset, SignaturePreprocess
from ..errors import DataError, GalleryError, ModelFileError
from ..evaluation.reference_rule import LearnedReferenceRule
from ..evaluation.references import ALL_RULES, combine, reference_trials, trial_distance_matrix
from ..inference import embed_all, network_pairwise, pair_distances_of_embeddings
from ..io import check_fingerprint, read_versioned_json
from .inputs import embed_batch, is_pathlike, prepare_inputs

__all__ = [
    "PREPROCESS",
    "REFERENCE_CALIBRATION_FILE",
    "ReferenceCalibration",
    "ReferenceVerification",
    "enroll_references",
    "enrolled_preprocess",
    "fit_reference_calibration",
    "model_prepares",
    "probe_input",
    "verify_references",
]

#: how files are turned into network inputs: as the model's plain loader does, or as scans
PREPROCESS = ("none", "signature")
REFERENCE_CALIBRATION_FILE = "reference_calibration.json"
FORMAT = "siamkit.reference-calibration"
FORMAT_VERSION = 1


def _load(network: Any, paths: Sequence[Any], preprocess: str) -> torch.Tensor:
    """Files -> uint8 (N, C, H, W) at the network's input size, prepared by ``preprocess``."""
    if preprocess not in PREPROCESS:
        raise DataError(f"unknown preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESS)}")
    spec = network.input_spec
    if not spec.is_image:
        raise DataError("this model was not trained on images")
    fn = SignaturePreprocess(size=spec.image_size) if preprocess == "signature" else None
    if fn is not None and int(spec.channels) != 1:
        raise DataError(f"the signature preprocessing gives greyscale images; this model takes {spec.channels} channels")
    return torch.stack([load_image(p, size=spec.image_size, channels=int(spec.channels), preprocess=fn) for p in paths])


def enroll_references(
    gallery: Any, identity: str, paths: Sequence[str | Path], *, preprocess: str = "none", metadata: dict[str, Any] | None = None
) -> Any:
    """Enrol an identity from reference files, recording how they were prepared.

    Args:
        gallery: an open :class:`~siamkit.gallery.Gallery` with its model.
        identity: the new identity (e.g. the account holder).
        paths: the reference images.
        preprocess: ``"none"`` (the model's plain loader, as ``gallery enroll`` does) or
            ``"signature"`` (crop to the ink, pad to aspect, bright ink on black) for a
            model that records no input recipe; a model that records one prepares the
            files by it either way (:func:`model_prepares`), the recorded kind is kept.
        metadata: kept with the identity.

    Returns:
        The new :class:`~siamkit.gallery.IdentityRecord`.

    Raises:
        DataError: unreadable files, an unknown preprocessing. IdentityExistsError: enrolled.
    """
    if not paths:
        raise GalleryError("enroll: give at least one reference image")
    if preprocess not in PREPROCESS:
        raise DataError(f"unknown preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESS)}")
    if preprocess == "none" or model_prepares(_network(gallery, "enroll")):
        inputs: Any = [Path(p) for p in paths]  # the one prepare function, with the model's recorded input recipe
    else:
        inputs = _load(_network(gallery, "enroll"), paths, preprocess)
    sample_meta = [{"preprocess": preprocess, "file": Path(p).name} for p in paths]
    return gallery.enroll(identity, inputs, metadata=metadata, sample_metadata=sample_meta)


def model_prepares(network: Any) -> bool:
    """Whether the model records its own preprocessing steps (its input recipe): then every
    file is prepared by them, and ``preprocess="signature"`` gives way to the recipe.

    Args:
        network: the model.

    Returns:
        True when its input spec has preprocessing steps.
    """
    return bool(getattr(network.input_spec, "preprocess", ()))


def _network(gallery: Any, what: str) -> Any:
    if gallery.network is None:
        raise GalleryError(f"{what} needs a model: open the gallery with one")
    return gallery.network


def enrolled_preprocess(gallery: Any, identity: str) -> str:
    """How the samples of ``identity`` were prepared (``"none"`` unless enrolled by
    :func:`enroll_references` with another preprocessing).

    Args:
        gallery: the gallery.
        identity: an enrolled identity.

    Returns:
        One of :data:`PREPROCESS`.

    Raises:
        UnknownIdentityError: not enrolled. GalleryError: samples prepared in different ways.
    """
    kinds = {str((s.metadata or {}).get("preprocess", "none")) for s in gallery.get(identity).samples}
    if len(kinds) > 1:
        raise GalleryError(f"the samples of {identity!r} were prepared in different ways ({sorted(kinds)}); re-enrol it")
    kind = kinds.pop() if kinds else "none"
    return kind if kind in PREPROCESS else "none"


def probe_input(gallery: Any, identity: str, probe: Any) -> Any:
    """A probe file prepared the way ``identity``'s samples were (arrays pass through).

    Args:
        gallery: the gallery (with its model).
        identity: the claimed identity.
        probe: an image path or a uint8 image.

    Returns:
        The path itself, or the prepared uint8 (1, C, H, W) image.
    """
    kind = enrolled_preprocess(gallery, identity)
    if kind == "none" or not is_pathlike(probe) or model_prepares(_network(gallery, "verify")):
        return probe
    return _load(_network(gallery, "verify"), [probe], kind)


@dataclass
class ReferenceCalibration:
    """Thresholds of the reference rules, per rule and K, fitted on held-out writers.

    Attributes:
        calibrators: ``{rule: {k: Calibrator}}`` (the ``learned`` rule's threshold too).
        fitted_on: what the trials came from (data, writers, draws, seed).
        model_fingerprint: the model the distances came from.
        learned: ``{k: LearnedReferenceRule}``, the learned rule fitted for each K (its
            threshold is ``calibrators["learned"][k]``).
    """

    calibrators: dict[str, dict[int, Calibrator]]
    fitted_on: dict[str, Any] = field(default_factory=dict)
    model_fingerprint: str | None = None
    learned: dict[int, LearnedReferenceRule] = field(default_factory=dict)

    def rule_distance(self, rule: str, distances: Any, k: int | None = None) -> np.ndarray:
        """One distance per row of K reference distances, by ``rule`` (for ``learned``, the
        rule fitted for the K nearest ``k``, default the rows' own K).

        Args:
            rule: one of ``best``, ``mean``, ``learned``.
            distances: (M, K) distances to the references.
            k: the K whose learned rule to use (default: ``distances.shape[1]``).

        Shapes:
            distances (M, K) -> (M,).

        Returns:
            float64 distances, lower = more likely genuine.

        Raises:
            DataError: an unknown rule. GalleryError: ``learned`` without a fitted rule.
        """
        d = torch.as_tensor(np.asarray(distances, dtype=np.float64))
        if rule != "learned":
            return combine(d, rule).numpy()
        if not self.learned:
            raise GalleryError("this reference calibration has no learned rule; run `siamkit gallery calibrate-references` again")
        kk = k if k is not None else int(d.shape[1])
        return self.learned[min(self.learned, key=lambda c: (abs(c - kk), c))].distance(d.numpy())

    def for_k(self, rule: str, k: int) -> tuple[Calibrator, int]:
        """The calibrator of ``rule`` for ``k`` references: the one fitted for ``k``, else
        for the nearest fitted K (the smaller on a tie).

        Args:
            rule: a reference rule.
            k: the identity's number of references.

        Returns:
            (calibrator, the K it was fitted for).

        Raises:
            GalleryError: the rule was not calibrated.
        """
        per = self.calibrators.get(rule)
        if not per:
            raise GalleryError(f"the reference calibration has no threshold for rule {rule!r} (fitted: {sorted(self.calibrators)})")
        kk = min(per, key=lambda c: (abs(c - k), c))
        return per[kk], kk

    def save(self, model_dir: str | Path) -> Path:
        """Write ``model_dir/reference_calibration.json`` atomically.

        Args:
            model_dir: the model folder.

        Returns:
            The file written.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelFileError(f"model folder {model_dir} does not exist")
        path = model_dir / REFERENCE_CALIBRATION_FILE
        write_json_atomic(path, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "siamkit_version": __version__,
            "model_fingerprint": self.model_fingerprint, "fitted_on": self.fitted_on,
            "rules": {r: {str(k): c.to_dict() for k, c in per.items()} for r, per in self.calibrators.items() if r != "learned"},
            "learned": {str(k): {"rule": rule.to_dict(), "calibration": self.calibrators["learned"][k].to_dict()}
                        for k, rule in self.learned.items()},
        })
        return path

    @classmethod
    def load(cls, model_dir: str | Path, *, expected_fingerprint: str | None = None) -> ReferenceCalibration | None:
        """Read ``model_dir/reference_calibration.json``; None when there is none.

        Args:
            model_dir: the model folder.
            expected_fingerprint: the model's fingerprint (checked when given).

        Returns:
            The calibration, or None.

        Raises:
            ModelFileError: a damaged file, another format version, another model.
        """
        path = Path(model_dir) / REFERENCE_CALIBRATION_FILE
        if not path.is_file():
            return None
        d = read_versioned_json(path, fmt=FORMAT, version=FORMAT_VERSION, what="reference calibration")
        if expected_fingerprint is not None:
            check_fingerprint(d.get("model_fingerprint"), expected_fingerprint, where=str(path), hint="; run calibrate-references again")
        try:
            cals = {str(r): {int(k): Calibrator.from_dict(c) for k, c in per.items()} for r, per in d["rules"].items()}
            learned_doc = d.get("learned") or {}
            learned = {int(k): LearnedReferenceRule.from_dict(v["rule"]) for k, v in learned_doc.items()}
            if learned:
                cals["learned"] = {int(k): Calibrator.from_dict(v["calibration"]) for k, v in learned_doc.items()}
        except (KeyError, TypeError, ValueError, AttributeError, ModelFileError) as e:
            raise ModelFileError(f"{path} is damaged ({e})") from None
        return cls(cals, dict(d.get("fitted_on") or {}), d.get("model_fingerprint"), learned)


def fit_reference_calibration(
    network: Any,
    sigs: SignatureDataset,
    ks: Sequence[int] = (1, 3, 5),
    *,
    rules: Sequence[str] = ALL_RULES,
    draws: int = 5,
    seed: int = 0,
    threshold_method: str = "eer",
    target_far: float = 1e-3,
    source: str = "held-out writers",
) -> ReferenceCalibration:
    """Fit each rule's threshold for each K on held-out writers' reference trials.

    Args:
        network: the model.
        sigs: held-out writers (genuine and skilled forgeries), prepared as the network
            was trained; never writers that will be enrolled.
        ks: the reference counts to calibrate.
        rules: the rules to calibrate (``learned``: fit the logistic rule on the same trials,
            then its threshold on its distances).
        draws: reference draws per writer and K.
        seed: seeds the draws.
        threshold_method: the :class:`~siamkit.calibration.Calibrator` method (eer,
            accuracy, far).
        target_far: for ``threshold_method="far"``.
        source: names the data in ``fitted_on``.

    Returns:
        The fitted :class:`ReferenceCalibration`.
    """
    e = embed_all(network, sigs.images)

    def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return pair_distances_of_embeddings(network, e, a, b)

    unknown = [r for r in rules if r not in ALL_RULES]
    if unknown:
        raise DataError(f"unknown reference rule {unknown[0]!r}; choose among {', '.join(ALL_RULES)}")
    cals: dict[str, dict[int, Calibrator]] = {r: {} for r in rules}
    learned: dict[int, LearnedReferenceRule] = {}
    for k in sorted({int(k) for k in ks}):
        trials = reference_trials(sigs.writer_labels, sigs.is_genuine, k, draws=draws, seed=seed)
        m, same = trial_distance_matrix(trials, dist), trials.same.numpy()
        for rule in rules:
            if rule == "learned":
                learned[k] = LearnedReferenceRule().fit(m.numpy(), same)
                d = learned[k].distance(m.numpy())
            else:
                d = combine(m, rule).numpy()
            cal = Calibrator(threshold_method=threshold_method, target_far=target_far)
            cals[rule][k] = cal.fit(d, same, split_name=f"{source} (K={k}, rule {rule})", model_fingerprint=network.fingerprint)
    fitted_on = {"data": source, "writers": list(sigs.writers), "draws": draws, "seed": seed, "ks": sorted({int(k) for k in ks}),
                 "protocol": "per writer and draw: K random genuine references; the writer's other genuine "
                             "signatures = same, its skilled forgeries = different"}
    return ReferenceCalibration(cals, fitted_on, network.fingerprint, learned)


@dataclass
class ReferenceVerification:
    """The answer of :func:`verify_references`.

    Attributes:
        identity, rule: the claim and the rule. k: the enrolled references.
        distance: the rule's distance; distances / sample_ids: to each reference.
        same, confidence, threshold: the decision at the calibrated threshold (None:
            no reference calibration). calibrated_k: the K the threshold was fitted for.
        preprocess: how the probe was prepared. note: what to know about the decision.
    """

    identity: str
    rule: str
    k: int
    distance: float
    distances: list[float]
    sample_ids: list[int]
    same: bool | None
    confidence: float | None
    threshold: float | None
    calibrated_k: int | None
    preprocess: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_references(gallery: Any, identity: str, probe: Any, *, rule: str, calibration: ReferenceCalibration | None = None) -> ReferenceVerification:
    """1:1 against K references: is ``probe`` written by ``identity``?

    Args:
        gallery: an open gallery with its model.
        identity: the claimed identity.
        probe: an image path (prepared as the identity's samples were) or a uint8 image.
        rule: ``"best"``, ``"mean"`` or ``"learned"`` (which needs ``calibration``).
        calibration: thresholds per rule and K, and the learned rule (None: distances
            only, no decision).

    Returns:
        :class:`ReferenceVerification`.

    Raises:
        UnknownIdentityError: not enrolled. DataError: unknown rule, unreadable probe.
        ModelMismatchError: the gallery holds another model's embeddings.
    """
    if rule not in ALL_RULES:
        raise DataError(f"unknown reference rule {rule!r}; choose one of {', '.join(ALL_RULES)}")
    if rule == "learned" and (calibration is None or not calibration.learned):
        raise GalleryError("--rule learned is fitted by `siamkit gallery calibrate-references` (no learned rule for this model yet)")
    kind = enrolled_preprocess(gallery, identity)
    x = probe_input(gallery, identity, probe)
    gallery.verify(identity, x)  # the gallery's own checks: model, identity, probe shape
    net = gallery.network
    xb, _ = prepare_inputs(x, net, what="the probe")
    q = embed_batch(net, xb, gallery.settings.batch_size)
    snap = gallery.store.snapshot(int(q.shape[1]))
    code = snap.identities.index(identity)
    rows = np.flatnonzero(snap.codes == code)
    d = network_pairwise(net, q, torch.from_numpy(np.ascontiguousarray(snap.embeddings[rows])))[0].double()
    dist = float(combine(d[None], rule)[0]) if rule != "learned" else float(calibration.rule_distance(rule, d[None].numpy())[0])  # type: ignore[union-attr]
    same = conf = thr = None
    ck: int | None = None
    note = ""
    if calibration is None:
        note = "no reference calibration: run `siamkit gallery calibrate-references`"
    else:
        cal, ck = calibration.for_k(rule, len(rows))
        same, conf, thr = bool(cal.decide([dist])[0]), float(cal.confidence([dist])[0]), float(cal.threshold_)
        if ck != len(rows):
            note = f"threshold fitted for K={ck} references; {identity!r} has {len(rows)}"
    return ReferenceVerification(
        identity=identity, rule=rule, k=int(len(rows)), distance=dist, distances=[float(v) for v in d],
        sample_ids=[int(i) for i in snap.sample_ids[rows]], same=same, confidence=conf, threshold=thr,
        calibrated_k=ck, preprocess=kind, note=note,
    )

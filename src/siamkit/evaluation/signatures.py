"""Writer-independent signature verification: pooled and per-writer EER, shortcut probes.

The protocol (SigNet's, Dey et al. 2017) on writers the model never trained on: per
writer, every pair of distinct genuine signatures is "same" and every (genuine, skilled
forgery of that writer) pair is "different" (:func:`siamkit.data.signature_pairs`).
Optionally, *random forgeries* (a writer's genuine signature against another writer's
genuine one) are scored apart, against the same genuine pairs.

Beside the model, on the very same pairs:

- the raw-pixel baseline (Euclidean distance of the network inputs);
- the **shortcut probes**: a "distance" that uses one number per image only,
  ``|f(a) - f(b)|`` for ``f`` = the original file's pixel count (log), the ink density
  (mean value of the network input: bright ink on black, so it grows with the amount and
  darkness of the ink) and the original file's aspect ratio (log). On CEDAR the
  forgeries were scanned at other sizes and ink levels, so these separate genuine from
  forgery pairs well above chance (issue 11: scan size alone AUC ~0.74): a model that does
  no better than a probe may have learnt the scan rather than the signature.

Every metric is :mod:`siamkit.evaluation.verification`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.signature_sets import random_forgery_pairs, scan_features
from ..data.signatures import SignatureDataset, signature_pairs
from ..inference import embed_all, pair_distances_of_embeddings
from .protocols import raw_pair_distances
from .verification import equal_error_rate, verification_report

__all__ = [
    "PROBES",
    "SignatureScores",
    "probe_features",
    "probe_distances",
    "per_writer_eer",
    "score_signatures",
    "signature_metrics",
    "signature_validator",
    "evaluate_signature_folder",
]

#: the shortcut probes, in report order
PROBES = ("scan_size", "ink_density", "aspect_ratio")


def probe_features(sigs: SignatureDataset) -> dict[str, np.ndarray]:
    """One number per image for each shortcut probe.

    Args:
        sigs: the images (their ``paths`` give the original files' sizes).

    Returns:
        ``{probe: float64 (N,)}`` for :data:`PROBES` (``scan_size`` and ``aspect_ratio``
        only when the dataset has its file paths).
    """
    out: dict[str, np.ndarray] = {}
    files = scan_features(sigs.paths) if sigs.paths else {}
    ink = sigs.images.double().mean(dim=(1, 2, 3)).numpy() / 255.0
    for name in PROBES:
        if name == "ink_density":
            out[name] = ink
        elif name in files:
            out[name] = files[name]
    return out


def probe_distances(feature: np.ndarray, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """A probe's pair "distance": ``|f(a) - f(b)|``.

    Args:
        feature: one number per image.
        a: first side of each pair.
        b: second side.

    Shapes:
        feature (N,), a (P,), b (P,) -> (P,).

    Returns:
        float64 distances, lower = more alike.
    """
    f = np.asarray(feature, dtype=np.float64)
    return np.abs(f[a.numpy()] - f[b.numpy()])


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def per_writer_eer(distances: Any, same: Any, groups: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The EER of each writer's own pairs, and their mean, sd and worst.

    Args:
        distances: pair distances, lower = closer.
        same: True for genuine pairs.
        groups: the writer (int label) of each pair.
        names: writer names by label (default: the label as text).

    Shapes:
        distances (P,), same (P,), groups (P,).

    Returns:
        ``{"writers": {name: eer}, "mean", "sd" (sample sd; 0 for one writer), "worst",
        "worst_writer", "n_writers"}``; writers without both kinds of pair are left out
        (listed in ``"skipped"``).
    """
    d, s, g = _np(distances).astype(np.float64), _np(same).astype(bool), _np(groups)
    per: dict[str, float] = {}
    skipped: list[str] = []
    for w in np.unique(g):
        m = g == w
        name = names[int(w)] if names is not None else str(w)
        if s[m].all() or not s[m].any():
            skipped.append(name)
            continue
        per[name] = equal_error_rate(d[m], s[m])[0]
    vals = np.array(list(per.values()))
    out: dict[str, Any] = {"writers": per, "n_writers": len(per), "skipped": skipped}
    if vals.size:
        worst = max(per, key=lambda k: per[k])
        out.update(mean=float(vals.mean()), sd=float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
                   worst=per[worst], worst_writer=worst)
    return out


@dataclass
class SignatureScores:
    """The protocol's pairs scored by a model, raw pixels and the probes.

    Attributes:
        a, b: the pairs (indices into the dataset); same: genuine-genuine = True.
        writer: the writer label of each pair.
        distances: the model's distances; baseline: raw pixels' (None: not computed).
        probes: ``{probe: distances}``.
        random: the random-forgery pairs (``{"a", "b", "writer", "distances",
            "baseline", "probes"}``; all "different"), or None.
        writers: writer names by label; embeddings: the model's (N, D).
        split: what was scored.
    """

    a: torch.Tensor
    b: torch.Tensor
    same: torch.Tensor
    writer: torch.Tensor
    distances: torch.Tensor
    baseline: torch.Tensor | None
    probes: dict[str, np.ndarray]
    random: dict[str, Any] | None
    writers: list[str]
    embeddings: torch.Tensor
    split: dict[str, Any] = field(default_factory=dict)


def _score_pairs(e: torch.Tensor, network: Any, sigs: SignatureDataset, a: torch.Tensor, b: torch.Tensor,
                 baseline: bool, features: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, np.ndarray]]:
    d = pair_distances_of_embeddings(network, e, a, b)
    base = raw_pair_distances(sigs.images, a, b) if baseline else None
    return d, base, {k: probe_distances(f, a, b) for k, f in features.items()}


def score_signatures(
    network: Any,
    sigs: SignatureDataset,
    *,
    baseline: bool = True,
    random_forgeries: bool = True,
    seed: int = 0,
) -> SignatureScores:
    """Score the writer-independent protocol on a set of (unseen) writers.

    Args:
        network: the :class:`~siamkit.network.SiameseNetwork`.
        sigs: the test writers' signatures, prepared as the network was trained.
        baseline: also score raw pixels on the same pairs (False: nothing computed).
        random_forgeries: also score, per writer, as many random forgeries (other
            writers' genuine signatures) as it has skilled-forgery pairs.
        seed: seeds the random-forgery draw.

    Returns:
        :class:`SignatureScores`.
    """
    e = embed_all(network, sigs.images)
    a, b, same = signature_pairs(sigs.writer_labels, sigs.is_genuine)
    feats = probe_features(sigs)
    d, base, probes = _score_pairs(e, network, sigs, a, b, baseline, feats)
    rnd = None
    n_forg = int((~sigs.is_genuine).sum())
    if random_forgeries and len(sigs.writers) > 1:
        per = max(1, int((~same).sum()) // max(1, len(sigs.writers)))
        ra, rb, _ = random_forgery_pairs(sigs.writer_labels, sigs.is_genuine, per, seed)
        rd, rbase, rprobes = _score_pairs(e, network, sigs, ra, rb, baseline, feats)
        rnd = {"a": ra, "b": rb, "writer": sigs.writer_labels[ra], "distances": rd, "baseline": rbase, "probes": rprobes}
    split = {
        "protocol": "signatures, writer-independent: per writer, genuine-genuine pairs = same, genuine-skilled "
                    "forgery of that writer = different (signature_pairs)",
        "writers": list(sigs.writers), "images": len(sigs), "genuine": len(sigs) - n_forg, "forgeries": n_forg,
        "pairs": int(same.numel()), "same_pairs": int(same.sum()), "forgery_pairs": int((~same).sum()),
        "random_forgery_pairs": int(rnd["a"].numel()) if rnd else 0,
        "baseline": "raw pixels, the same pairs" if baseline else "not computed (--no-baseline)",
        "probes": "|f(a) - f(b)| for f = log pixel count of the original file (scan_size), mean input value "
                  "(ink_density), log width/height of the original file (aspect_ratio)",
    }
    return SignatureScores(a, b, same, sigs.writer_labels[a], d, base, probes, rnd, list(sigs.writers), e, split)


def _summary(d: Any, same: Any, groups: Any, names: Sequence[str], fars: Sequence[float]) -> dict[str, Any]:
    rep = verification_report(np.asarray(d, dtype=np.float64), np.asarray(same), fars, include_curves=False)
    pw = per_writer_eer(d, same, groups, names)
    return {"roc_auc": rep["roc_auc"], "eer": rep["eer"], "tar_at_far": rep["tar_at_far"],
            "per_writer_eer": {k: pw.get(k) for k in ("mean", "sd", "worst", "worst_writer", "n_writers")}}


def signature_metrics(scores: SignatureScores, fars: Sequence[float] = (1e-2, 1e-3)) -> dict[str, Any]:
    """The numbers of :class:`SignatureScores`: per method pooled AUC / EER / TAR@FAR and the
    per-writer EER summary; the model's per-writer EER of every writer.

    Args:
        scores: from :func:`score_signatures`.
        fars: false accept rates for TAR@FAR.

    Returns:
        ``{"skilled": {"model", "raw_pixels"?, "probe:<name>"...}, "random": {...}?,
        "per_writer": the model's per_writer_eer, "writers"}``.
    """
    s, w, names = scores.same.numpy(), scores.writer.numpy(), scores.writers
    skilled = {"model": _summary(scores.distances.numpy(), s, w, names, fars)}
    if scores.baseline is not None:
        skilled["raw_pixels"] = _summary(scores.baseline.numpy(), s, w, names, fars)
    for k, pd in scores.probes.items():
        skilled[f"probe:{k}"] = _summary(pd, s, w, names, fars)
    out: dict[str, Any] = {"n_writers": len(names), "skilled": skilled,
                           "per_writer": per_writer_eer(scores.distances, s, w, names), "writers": list(names)}
    r = scores.random
    if r is not None:
        gen = s.astype(bool)
        rs = np.concatenate([np.ones(int(gen.sum()), dtype=bool), np.zeros(r["a"].numel(), dtype=bool)])
        rw = np.concatenate([w[gen], r["writer"].numpy()])

        def both(d_gen: np.ndarray, d_rand: np.ndarray) -> dict[str, Any]:
            return _summary(np.concatenate([d_gen[gen], d_rand]), rs, rw, names, fars)

        rand = {"model": both(scores.distances.numpy(), r["distances"].numpy())}
        if scores.baseline is not None and r["baseline"] is not None:
            rand["raw_pixels"] = both(scores.baseline.numpy(), r["baseline"].numpy())
        for k, pd in scores.probes.items():
            rand[f"probe:{k}"] = both(pd, r["probes"][k])
        out["random"] = rand
    return out


def signature_validator(val: SignatureDataset) -> Callable[..., dict[str, float]]:
    """``fit(validate_fn=...)`` on the signature protocol of held-out writers.

    The returned function ignores the ``val_x`` / ``val_y`` that ``fit`` passes (the
    genuine signatures only) and scores ``val``'s genuine-genuine against genuine-skilled
    forgery pairs, as ``bench/bench_signatures.py`` chooses its epoch.

    Args:
        val: the validation writers, genuine and forged.

    Returns:
        ``validate(network, x, y, *, precision) -> {"val_roc_auc", "val_eer"}`` (NaN when a
        distance is not finite).
    """
    a, b, same = signature_pairs(val.writer_labels, val.is_genuine)

    def validate(network: Any, x: Any = None, y: Any = None, *, precision: str = "fp32", **_: Any) -> dict[str, float]:
        e = embed_all(network, val.images, precision=precision)
        d = pair_distances_of_embeddings(network, e, a, b)
        if not bool(torch.isfinite(d).all()):
            return {"val_roc_auc": math.nan, "val_eer": math.nan}
        rep = verification_report(d.double().numpy(), same.numpy(), (), include_curves=False)
        return {"val_roc_auc": rep["roc_auc"], "val_eer": rep["eer"]}

    return validate


def evaluate_signature_folder(
    network: Any,
    data: str | Path,
    out_dir: str | Path,
    *,
    baseline: bool = True,
    random_forgeries: bool = True,
    seed: int = 0,
    check_writers: Callable[[list[str]], None] | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``siamkit evaluate --protocol signatures``: read a CEDAR-layout folder as the network
    takes it (:class:`~siamkit.data.SignaturePreprocess` at its input size), score the
    protocol, write the report folder.

    Args:
        network: the model (a greyscale image model).
        data: the test writers' folder (``WRITER/genuine``, ``WRITER/forged``).
        out_dir: the report folder (report.md, metrics.json, plots).
        baseline: also raw pixels (False: not computed).
        random_forgeries: also other writers' genuine signatures, reported apart.
        seed: seeds the random-forgery draw.
        check_writers: called with the writer names before scoring (e.g. refuses writers
            the model trained on).
        calibration: the model's ``Calibrator.to_dict()``, for the confusion at its threshold.

    Returns:
        The metrics (as in ``metrics.json``): ``verification`` (the model, pooled),
        ``signatures`` (:func:`signature_metrics`), ``split``.

    Raises:
        DataError: not the signature layout, a colour model, unreadable files.
    """
    from ..data.signatures import load_signatures
    from ..errors import DataError
    from .report import write_report

    spec = network.input_spec
    if not spec.is_image or int(spec.channels or 0) != 1:
        raise DataError("--protocol signatures takes a greyscale image model (train it with --task signatures)")
    # the model's own recorded steps; models without any get the default signature step
    sigs = load_signatures(data, image_size=spec.image_size, require_forged=True, preprocess=spec.preprocessor() or True)
    if check_writers is not None:
        check_writers(list(sigs.writers))
    sc = score_signatures(network, sigs, baseline=baseline, random_forgeries=random_forgeries, seed=seed)
    sm = signature_metrics(sc)
    split = {"data": str(Path(data).resolve()), **sc.split}
    return write_report(
        out_dir, sc.distances, sc.same, title=f"signature verification on {Path(data).name} ({len(sigs.writers)} writers)",
        split=split, calibration=calibration, embeddings=sc.embeddings,
        labels=sigs.writer_labels + len(sigs.writers) * (~sigs.is_genuine).long(),
        extra={"signatures": sm, "per_writer_eer": {k: sm["per_writer"].get(k) for k in ("mean", "sd", "worst", "worst_writer")},
               "shortcut_probe_auc": {k[6:]: v["roc_auc"] for k, v in sm["skilled"].items() if k.startswith("probe:")},
               "random_forgery_auc": {k: v["roc_auc"] for k, v in sm.get("random", {}).items()}},
        baseline=("raw pixels", sc.baseline) if sc.baseline is not None else None,
    )

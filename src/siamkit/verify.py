""""Are these two the same?": distance, score, and (once calibrated) decision and confidence.

Example:
    >>> from siamkit.verify import Verifier                     # doctest: +SKIP
    >>> v = Verifier.from_dir("runs/faces/model")              # doctest: +SKIP
    >>> r = v.verify_files("a.png", "b.png")                    # doctest: +SKIP
    >>> r.same, r.confidence                                    # doctest: +SKIP
    (True, 0.97)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .calibration import Calibrator
from .data.images import to_float
from .data.prepare import prepare_image
from .decision import PairDecision
from .inference import embed_all
from .io import load_model
from .network import SiameseNetwork

__all__ = ["PairDecision", "Verifier", "compare_tensors", "compare_files", "load_image_for"]


def load_image_for(network: SiameseNetwork, path: str | Path) -> torch.Tensor:
    """Load an image file the way ``network`` was trained: its channels, preprocessing
    steps and size (:func:`siamkit.data.prepare.prepare_image` with its input spec).

    Args:
        network: the model whose ``input_spec`` gives the channels and image size.
        path: the image file.

    Shapes:
        -> (C, H, W): the network's channels and image size.

    Returns:
        uint8 (C, H, W).

    Raises:
        DataError: the model was not trained on images, or the file is missing, not an
            image, truncated or too large.
    """
    return prepare_image(Path(path), network.input_spec.require_image())


class Verifier:
    """A network plus its calibration: pairs in, :class:`PairDecision` out.

    Args:
        network: a trained :class:`SiameseNetwork` (put in eval mode).
        calibrator: a fitted :class:`~siamkit.calibration.Calibrator`, or None (then
            decisions and confidences are None).
    """

    def __init__(self, network: SiameseNetwork, calibrator: Calibrator | None = None) -> None:
        self.network = network.eval()
        self.calibrator = calibrator

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, dim: int | None = None) -> "Verifier":
        """Load a model folder and its ``calibration.json`` if there is one (checked
        against the model's fingerprint).

        Args:
            model_dir: the model folder.
            dim: a Matryoshka embedding size: the model at that size
                (:meth:`SiameseNetwork.at_dim`) with that size's ``calibration-dimD.json``.

        Returns:
            The verifier.
        """
        from .text.inputs import attach_text_input  # a text model takes texts: its tokenizer

        network = attach_text_input(load_model(model_dir).at_dim(dim), model_dir)
        cal = Calibrator.load(model_dir, expected_fingerprint=getattr(network, "fingerprint", None), dim=network.dim)
        return cls(network, cal)

    def distances(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distances of paired batches (B, ...) x (B, ...) -> (B,); uint8 is scaled to [0, 1].
        Both sides are embedded with :func:`~siamkit.inference.embed_all` (the model's
        test-time augmentation, ``input_spec.tta``).

        Args:
            a: the first input of each pair.
            b: the second input of each pair, shaped like ``a``.

        Shapes:
            a (B, ...), b (B, ...) -> (B,).

        Returns:
            The network's distances (lower = closer; a pair head's ``-logit``), no gradient.
        """
        if a.shape != b.shape:
            raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} differ in shape")
        e = embed_all(self.network, torch.cat([to_float(a), to_float(b)]))
        with torch.no_grad():
            return self.network.embedding_distance(e[: a.shape[0]], e[a.shape[0] :])

    def decide(self, distances: torch.Tensor) -> list[PairDecision]:
        d = distances.detach().cpu().double()
        scores = self.network.distance_to_score(d).tolist()
        out = []
        for i, dist in enumerate(d.tolist()):
            r = PairDecision(distance=dist, score=float(scores[i]))
            if self.calibrator is not None:
                r.same = bool(self.calibrator.decide([dist])[0])
                r.confidence = float(self.calibrator.confidence([dist])[0])
                r.threshold = float(self.calibrator.threshold_)
            out.append(r)
        return out

    def verify(self, a: torch.Tensor, b: torch.Tensor) -> PairDecision:
        """One pair of inputs (C, H, W) or (F,), uint8 or float.

        Args:
            a: the first input, without a batch dimension.
            b: the second input, shaped like ``a``.

        Shapes:
            a (C, H, W) or (F,), b the same -> one decision.

        Returns:
            The :class:`PairDecision`: distance (lower = closer) and score (higher = more
            similar), plus decision, confidence and threshold when calibrated.
        """
        return self.decide(self.distances(a[None], b[None]))[0]

    def verify_files(self, path_a: str | Path, path_b: str | Path) -> PairDecision:
        """Two image files, each loaded the way the network was trained (:func:`load_image_for`).

        Args:
            path_a: the first image file.
            path_b: the second image file.

        Returns:
            The :class:`PairDecision`, as :meth:`verify` gives it.

        Raises:
            DataError: the model was not trained on images, or a file cannot be read as
                an image.
        """
        return self.verify(load_image_for(self.network, path_a), load_image_for(self.network, path_b))


def compare_tensors(network: SiameseNetwork, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(distance, score) of two single inputs, uint8 or float in [0, 1].

    No calibration is used; ``network`` is put in eval mode.

    Args:
        network: the model.
        a: the first input, without a batch dimension.
        b: the second input, shaped like ``a``.

    Shapes:
        a (C, H, W) or (F,), b the same -> two floats.

    Returns:
        ``(distance, score)``: the distance is lower = closer (a pair head's
        ``-logit``), the display score higher = more similar.
    """
    r = Verifier(network).verify(a, b)
    return r.distance, r.score


def compare_files(model_dir: str | Path, path_a: str | Path, path_b: str | Path, *, dim: int | None = None) -> dict[str, Any]:
    """Compare two image files with the model in ``model_dir`` (calibrated if it has a
    ``calibration.json``).

    Args:
        model_dir: a model folder (see :func:`siamkit.io.load_model`).
        path_a: the first image file.
        path_b: the second image file.
        dim: a Matryoshka embedding size (that size's ``calibration-dimD.json``).

    Returns:
        {"distance", "score", "same", "confidence", "threshold", "distance_kind"}.
        ``distance`` is lower = closer, ``score`` higher = more similar; ``same``,
        ``confidence`` and ``threshold`` are None without a calibration;
        ``distance_kind`` names what the distance is (e.g. ``"euclidean distance"``).

    Raises:
        ModelFileError: the model folder or its calibration cannot be loaded.
        DataError: the model was not trained on images, or a file cannot be read as an
            image.
    """
    v = Verifier.from_dir(model_dir, dim=dim)
    r = v.verify_files(path_a, path_b).to_dict()
    net = v.network
    r["distance_kind"] = "negative pair-head logit" if net.pair_head is not None else f"{net.distance.name} distance"
    return r


def compare_files_adaptive(model_dir: str | Path, path_a: str | Path, path_b: str | Path) -> dict[str, Any]:
    """Compare two image files with the model's adaptive size cascade (``calibrate --dims``
    writes it, :class:`siamkit.adaptive.SizeCascade`): decided at the smallest size whose
    distance falls outside its uncertain band around the threshold, else at the next size.

    Args:
        model_dir: a Matryoshka model folder with its ``adaptive.json``.
        path_a: the first image file.
        path_b: the second image file.

    Returns:
        {"same", "decided_at", "distance", "threshold", "distances", "dims",
        "distance_kind"}: ``distance`` / ``threshold`` at the size that decided,
        ``distances`` {size: distance} at every size the cascade compared.

    Raises:
        ModelFileError: no (or a damaged, or another model's) ``adaptive.json``.
        DataError: the model was not trained on images, or a file cannot be read.
    """
    from .adaptive import SizeCascade
    from .errors import ModelFileError
    from .evaluation.sizes import size_distances

    net = load_model(model_dir)
    cascade = SizeCascade.load(model_dir, expected_fingerprint=net.fingerprint)
    if cascade is None:
        raise ModelFileError(f"{model_dir} has no adaptive size cascade: run `siamkit calibrate MODEL --data VAL --dims 16,32,...` first")
    x = torch.stack([load_image_for(net, path_a), load_image_for(net, path_b)])
    e = embed_all(net, x)
    zero, one = torch.tensor([0]), torch.tensor([1])
    dist = {k: float(v[0]) for k, v in size_distances(net, e, zero, one, cascade.dims).items()}
    same, size = cascade.decide({k: [v] for k, v in dist.items()})
    k = int(size[0])
    compared = {d: dist[d] for d in cascade.dims if d <= k}
    return {"same": bool(same[0]), "decided_at": k, "distance": dist[k], "threshold": float(cascade.thresholds_[cascade.dims.index(k)]),
            "distances": compared, "dims": list(cascade.dims),
            "distance_kind": "negative pair-head logit" if net.pair_head is not None else f"{net.distance.name} distance"}

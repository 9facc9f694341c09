"""Report plots (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_path
from .curve import to_numpy

__all__ = ["plot_roc", "plot_distance_histogram", "plot_embedding_map", "pyplot", "save_figure"]


def pyplot():  # type: ignore[no-untyped-def]
    """``matplotlib.pyplot`` on the Agg backend (no screen needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a figure atomically (110 dpi, format from the file's extension) and close it.

    Args:
        fig: a matplotlib figure.
        path: the image file to (re)place.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    pyplot().close(fig)
    return path


def plot_roc(curves: dict[str, tuple[torch.Tensor, torch.Tensor]], path: str | Path, *, title: str = "ROC") -> Path:
    """ROC curves of several methods on one plot.

    Args:
        curves: method name -> (distances (P,), same (P,)); lower distance = closer.
        path: the PNG to write.
        title: the plot title.

    Returns:
        ``path``.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (d, same) in curves.items():
        y, s = to_numpy(same).astype(bool), -to_numpy(d)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set(xlabel="false accept rate", ylabel="true accept rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_distance_histogram(
    distances: torch.Tensor, same: torch.Tensor, path: str | Path, *, threshold: float | None = None, title: str = ""
) -> Path:
    """Histograms of genuine vs impostor pair distances, optionally with the threshold.

    Args:
        distances: (P,) pair distances, lower = closer.
        same: (P,) bool, True = genuine pair.
        path: the PNG to write.
        threshold: a decision threshold to mark, or None.
        title: the plot title ("pair distances" when empty).

    Returns:
        ``path``.
    """
    plt = pyplot()
    d, y = to_numpy(distances), to_numpy(same).astype(bool)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(d.min(), d.max(), 60) if d.size else 10
    ax.hist(d[~y], bins=bins, alpha=0.6, density=True, label=f"different ({(~y).sum():,} pairs)", color="tab:red")
    ax.hist(d[y], bins=bins, alpha=0.6, density=True, label=f"same ({y.sum():,} pairs)", color="tab:green")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="distance (lower = more similar)", ylabel="density", title=title or "pair distances")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_embedding_map(
    embeddings: torch.Tensor, labels: torch.Tensor, path: str | Path, *, class_names: list[str] | None = None,
    title: str = "", seed: int = 0,
) -> Path:
    """A 2-D map of embeddings coloured by class: t-SNE up to 3,000 points, else PCA.

    Args:
        embeddings: (N, D).
        labels: (N,) int class of each point, indexing ``class_names``.
        path: the PNG to write.
        class_names: legend names per class; None = the class numbers.
        title: the plot title (the method's name when empty).
        seed: seeds t-SNE / PCA.

    Returns:
        ``path``.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    plt = pyplot()
    e, y = to_numpy(embeddings), to_numpy(labels).astype(int)
    if len(e) <= 3000 and len(e) > 5:
        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(e) - 1)).fit_transform(e)
        method = "t-SNE"
    else:
        xy = PCA(n_components=2, random_state=seed).fit_transform(e)
        method = "PCA"
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c in np.unique(y):
        m = y == c
        ax.scatter(xy[m, 0], xy[m, 1], s=8, alpha=0.8, label=class_names[c] if class_names else str(c))
    ax.set(title=title or f"embeddings ({method})", xticks=[], yticks=[])
    if len(np.unique(y)) <= 20:
        ax.legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)

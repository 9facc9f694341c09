"""Report plots (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["plot_roc", "plot_distance_histogram", "plot_embedding_map"]


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(torch.as_tensor(x).detach().cpu().double()) if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_roc(curves: dict[str, tuple[torch.Tensor, torch.Tensor]], path: str | Path, *, title: str = "ROC") -> Path:
    """ROC curves of several methods. ``curves``: name -> (distances, same)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (d, same) in curves.items():
        y, s = _np(same).astype(bool), -_np(d)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set(xlabel="false accept rate", ylabel="true accept rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_distance_histogram(
    distances: torch.Tensor, same: torch.Tensor, path: str | Path, *, threshold: float | None = None, title: str = ""
) -> Path:
    """Histograms of genuine vs impostor pair distances, optionally with the threshold."""
    plt = _plt()
    d, y = _np(distances), _np(same).astype(bool)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(d.min(), d.max(), 60) if d.size else 10
    ax.hist(d[~y], bins=bins, alpha=0.6, density=True, label=f"different ({(~y).sum():,} pairs)", color="tab:red")
    ax.hist(d[y], bins=bins, alpha=0.6, density=True, label=f"same ({y.sum():,} pairs)", color="tab:green")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="distance (lower = more similar)", ylabel="density", title=title or "pair distances")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_embedding_map(
    embeddings: torch.Tensor, labels: torch.Tensor, path: str | Path, *, class_names: list[str] | None = None,
    title: str = "", seed: int = 0,
) -> Path:
    """A 2-D map of embeddings coloured by class: t-SNE up to 3,000 points, else PCA."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    plt = _plt()
    e, y = _np(embeddings), _np(labels).astype(int)
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

"""The demo's two show-and-tell parts: one worked 20-way episode as a picture, and a
gallery of a few unseen characters enrolled from one drawing each, then asked about new
drawings of them and of a character it does not hold (the "unknown" answer)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..calibration import Calibrator
from ..data.omniglot import OmniglotDataset, OneShotRun
from ..evaluation.plots import pyplot, save_figure
from ..gallery import UNKNOWN, Gallery
from ..inference import embed_all, network_pairwise
from ..network import SiameseNetwork

__all__ = ["plot_worked_example", "gallery_tour"]

ENROLLED = 5  # characters in the gallery tour


def plot_worked_example(net: SiameseNetwork, run: OneShotRun, path: str | Path, *, query: int = 0) -> dict[str, Any]:
    """Picture of one 20-way one-shot decision: the query, the 20 candidates with their
    scores (higher = more alike), the pick, and the right answer.

    Args:
        net: the trained network.
        run: an official run (support = the candidates, one per character).
        path: the PNG to write.
        query: which of the run's queries.

    Returns:
        ``{"run", "query", "pick", "answer", "correct", "scores"}``.
    """
    e = embed_all(net, torch.cat([run.support, run.query[query : query + 1]]))
    d = network_pairwise(net, e[-1:], e[:-1])[0]
    scores = net.distance_to_score(d)
    pick, answer = int(d.argmin()), int(run.answer[query])
    plt = pyplot()
    fig, axes = plt.subplots(3, 8, figsize=(12, 5.4))
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(run.query[query, 0].numpy(), cmap="gray", vmin=0, vmax=255)
    axes[0, 0].set_title("query", fontsize=10, fontweight="bold")
    slots = [ax for r in range(3) for ax in axes[r, 1:] if not (r == 2 and ax is axes[2, 7])][: run.support.shape[0]]
    for i, ax in enumerate(slots):
        ax.imshow(run.support[i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
        colour = "green" if i == answer else ("red" if i == pick else "black")
        mark = " pick" if i == pick else ""
        ax.set_title(f"{float(scores[i]):.2f}{mark}", fontsize=9, color=colour, fontweight="bold" if i in (pick, answer) else None)
        if i in (pick, answer):
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(3)
    verdict = "right" if pick == answer else "wrong (green: the right one)"
    fig.suptitle(f"one-shot, 20-way: which of 20 unseen characters is the query? The network's pick is {verdict}", fontsize=11)
    save_figure(fig, path)
    return {"run": run.name, "query": query, "pick": pick, "answer": answer, "correct": pick == answer,
            "scores": [round(float(s), 4) for s in scores]}


def gallery_tour(net: SiameseNetwork, cal: Calibrator, ev: OmniglotDataset, *, seed: int = 0) -> dict[str, Any]:
    """Enrol :data:`ENROLLED` evaluation characters (drawer 1's drawing) in a temporary
    gallery; identify drawer 2's drawing of each and of one character never enrolled.

    Args:
        net: the trained network.
        cal: its calibration (the gallery's threshold).
        ev: the evaluation drawings.
        seed: picks the characters.

    Returns:
        ``{"enrolled", "identities", "threshold", "probes": [{"truth", "decision",
        "distance", "enrolled", "correct"}], "correct"}``.
    """
    g = torch.Generator().manual_seed(seed)
    chars = torch.randperm(len(ev.classes), generator=g)[: ENROLLED + 1].tolist()

    def drawing(c: int, drawer: int) -> torch.Tensor:
        i = int(((ev.labels == c) & (ev.drawers == drawer)).nonzero()[0])
        return ev.images[i]

    def name(c: int) -> str:  # "Alphabet_(x)/character07" -> a gallery identity "Alphabet_x character07"
        return re.sub(r"[^A-Za-z0-9_.@+ -]", "", ev.classes[c].replace("/", " "))

    probes = []
    with tempfile.TemporaryDirectory() as tmp, Gallery.open(Path(tmp) / "demo.db", net, calibrator=cal) as gal:
        for c in chars[:ENROLLED]:
            gal.enroll(name(c), drawing(c, 1)[None])
        for c in chars:
            r = gal.identify(drawing(c, 2), k=3)
            enrolled = c in chars[:ENROLLED]
            truth = name(c) if enrolled else UNKNOWN
            probes.append({"truth": name(c) + ("" if enrolled else " (never enrolled)"), "decision": r.decision,
                           "distance": r.best.distance if r.best else float("nan"), "enrolled": enrolled,
                           "correct": r.decision == truth})
    return {"enrolled": ENROLLED, "identities": [name(c) for c in chars[:ENROLLED]], "threshold": cal.threshold_,
            "probes": probes, "correct": sum(p["correct"] for p in probes)}

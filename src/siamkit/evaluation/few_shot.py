"""Few-shot (N-way K-shot) evaluation protocols; every one scores through one core.

The core (:func:`~siamkit.evaluation.metrics.nearest_support_score`): each query is
assigned its nearest candidate (with K shots per class, the smallest mean distance to the
class's supports); the result is the accuracy and the half-width of its normal 95%
interval (:func:`~siamkit.evaluation.metrics.score_predictions`): over episode accuracies
when the queries come in >= 2 episodes (queries that share a support set are not
independent), else binomial. The protocols only choose the trials:

- :func:`n_way_k_shot_accuracy`: random episodes over a labelled set of embeddings;
- :func:`official_one_shot_accuracy`: Lake et al.'s 20 official Omniglot runs (the files
  are read by :func:`siamkit.data.load_official_one_shot_runs`);
- :func:`koch_within_alphabet_trials` + :func:`score_trials`: Koch et al.'s
  within-alphabet trials as index tensors into a dataset, and their scoring.

Distances are lower = closer; ties go to the lower candidate index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from ..data.images import ImageFolderDataset
from ..data.omniglot import OmniglotDataset, OneShotRun, drawer_of
from ..distances import BaseDistance
from ..errors import DataError
from ..tuples import check_labels
from .metrics import candidate_distances, nearest_support_score, score_predictions

__all__ = [
    "n_way_k_shot_accuracy",
    "OneShotResult",
    "official_one_shot_accuracy",
    "OneShotTrials",
    "koch_within_alphabet_trials",
    "TrialScore",
    "score_trials",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- random episodes


def n_way_k_shot_accuracy(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_way: int,
    k_shot: int = 1,
    n_query: int = 1,
    episodes: int = 1000,
    distance: str | BaseDistance = "euclidean",
    seed: int = 0,
) -> tuple[float, float]:
    """Accuracy of nearest-support classification over random N-way K-shot episodes.

    Each episode draws ``n_way`` classes, ``k_shot`` supports and ``n_query`` queries per
    class (disjoint); a query is assigned the class of its nearest support (K > 1: the
    smallest mean distance to the class's supports).

    Args:
        embeddings: (N, D), one row per sample.
        labels: (N,) int class of each sample.
        n_way: classes per episode.
        k_shot: supports per class.
        n_query: queries per class.
        episodes: number of episodes.
        distance: a distance name or object (lower = closer).
        seed: seeds the episode draws.

    Shapes:
        embeddings (N, D), labels (N,).

    Returns:
        (mean accuracy, half-width of the 95% confidence interval over episodes; NaN
        for a single episode).

    Raises:
        ValueError: fewer than ``n_way`` classes with ``k_shot + n_query`` samples.
    """
    labels = check_labels(labels, embeddings.shape[0])
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    classes, inv = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(inv)
    eligible = (counts >= k_shot + n_query).nonzero(as_tuple=True)[0]
    if eligible.numel() < n_way:
        raise ValueError(
            f"{n_way}-way {k_shot}-shot needs {n_way} classes with >= {k_shot + n_query} samples, "
            f"found {eligible.numel()}"
        )
    by_class = [torch.nonzero(inv == c, as_tuple=True)[0] for c in range(len(classes))]
    g = torch.Generator().manual_seed(seed)
    preds: list[torch.Tensor] = []
    for _ in range(episodes):
        chosen = eligible[torch.randperm(eligible.numel(), generator=g)[:n_way]]
        sup, qry = [], []
        for c in chosen.tolist():
            idx = by_class[c][torch.randperm(by_class[c].numel(), generator=g)[: k_shot + n_query]]
            sup.append(idx[:k_shot])
            qry.append(idx[k_shot:])
        d = candidate_distances(embeddings[torch.cat(qry)], embeddings[torch.cat(sup)], distance=distance, shots=k_shot)
        preds.append(d.argmin(1))
    truth = torch.arange(n_way).repeat_interleave(n_query).repeat(episodes)
    episode = torch.arange(episodes).repeat_interleave(n_way * n_query)
    score = score_predictions(torch.cat(preds), truth, episode=episode)
    return score.accuracy, (score.ci95 if episodes > 1 else float("nan"))


# --------------------------------------------------------------------------- official runs


@dataclass
class OneShotResult:
    """Official one-shot benchmark result.

    Attributes:
        accuracy: correct queries / all queries (400 for the official runs).
        per_run_accuracy: accuracy of each run, in run order.
        error_rate: Lake et al.'s number: the mean over runs of each run's error, in
            percent (``demo_classification.py`` prints it as "average error"); equal to
            ``100 * (1 - accuracy)`` when every run has the same number of queries.
        predictions: int64 (Q,) per run, the chosen support of each query.
    """

    accuracy: float
    per_run_accuracy: list[float]
    error_rate: float
    predictions: list[torch.Tensor]

    @property
    def num_queries(self) -> int:
        return sum(int(p.numel()) for p in self.predictions)


def _embed(embed_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        e = embed_fn(images)
    if not isinstance(e, torch.Tensor) or e.ndim != 2 or e.shape[0] != images.shape[0]:
        shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
        raise ValueError(f"embed_fn must map {images.shape[0]} images to ({images.shape[0]}, D) embeddings, got {shape}")
    return e.float()


def official_one_shot_accuracy(
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    runs: Sequence[OneShotRun],
    distance: str | BaseDistance = "euclidean",
) -> OneShotResult:
    """Score an embedding on the official one-shot runs: the nearest support wins.

    Args:
        embed_fn: maps uint8 images (B, C, H, W) to embeddings (B, D); called once per
            run on ``cat([support, query])`` under ``torch.no_grad()``. Convert inside it
            (e.g. ``to_float``) and put the model in eval mode first.
        runs: from :func:`siamkit.data.load_official_one_shot_runs`.
        distance: a distance name or object (lower = closer). Ties go to the lower
            support index.

    Returns:
        :class:`OneShotResult` (accuracy over all queries, per-run accuracies, Lake et
        al.'s error rate in percent, predictions).

    Example:
        >>> res = official_one_shot_accuracy(lambda x: x.flatten(1).float(), runs)  # doctest: +SKIP
    """
    if not runs:
        raise ValueError("no runs to score")
    preds: list[torch.Tensor] = []
    for run in runs:
        s = run.support.shape[0]
        e = _embed(embed_fn, torch.cat([run.support, run.query]))
        preds.append(candidate_distances(e[s:], e[:s], distance=distance).argmin(1).cpu())
    run_of = torch.cat([torch.full((p.numel(),), i, dtype=torch.long) for i, p in enumerate(preds)])
    score = score_predictions(torch.cat(preds), torch.cat([run.answer for run in runs]), episode=run_of)
    per_run = score.episode_accuracy.tolist()  # type: ignore[union-attr]
    error = float(np.mean([100.0 * (1.0 - a) for a in per_run]))
    return OneShotResult(accuracy=score.accuracy, per_run_accuracy=per_run, error_rate=error, predictions=preds)


# --------------------------------------------------------------------------- Koch trials


@dataclass
class OneShotTrials:
    """Index tensors of N-way one-shot trials into a dataset (see
    :func:`koch_within_alphabet_trials`).

    Attributes:
        support: int64 (T, n_way), image indices of the support set of each trial.
        query: int64 (T,), image index of each trial's query.
        answer: int64 (T,), column of ``support`` holding the query's character.
        episode: int64 (T,), the episode (shared support set) of each trial.
        alphabet: int64 (T,), alphabet index of each trial.
        support_drawer, query_drawer: int64 (T,), drawers A and B of each trial.
    """

    support: torch.Tensor
    query: torch.Tensor
    answer: torch.Tensor
    episode: torch.Tensor
    alphabet: torch.Tensor
    support_drawer: torch.Tensor
    query_drawer: torch.Tensor

    def __len__(self) -> int:
        return int(self.query.numel())

    @property
    def n_way(self) -> int:
        return int(self.support.shape[1])


def _class_drawers(
    dataset: ImageFolderDataset, alphabet_index: torch.Tensor | Sequence[int] | None
) -> tuple[torch.Tensor, list[bool], list[dict[int, int]]]:
    """(alphabet of each class, whether a class takes part, class -> {drawer: image})."""
    n_cls = len(dataset.classes)
    if alphabet_index is None:
        if not isinstance(dataset, OmniglotDataset):
            raise ValueError("alphabet_index is needed unless the dataset is an OmniglotDataset")
        alphabet_index = dataset.class_alphabet
    alpha = torch.as_tensor(alphabet_index, dtype=torch.long)
    if alpha.shape != (n_cls,):
        raise ValueError(f"alphabet_index must have one entry per class ({n_cls},), got {tuple(alpha.shape)}")
    if isinstance(dataset, OmniglotDataset):
        drawers = dataset.drawers
        use_class = (dataset.class_rotation == 0).tolist()
    else:
        drawers = torch.tensor([drawer_of(p) for p in dataset.paths], dtype=torch.long)
        use_class = [True] * n_cls
    if drawers.numel() != len(dataset) or bool((drawers < 0).any()):
        bad = next((dataset.paths[i] for i in range(len(dataset.paths)) if drawer_of(dataset.paths[i]) < 0), None)
        raise DataError(f"Koch trials need the drawer in every file name (XXXX_YY.png); e.g. {bad} has none")
    by_class: list[dict[int, int]] = [{} for _ in range(n_cls)]
    for i, (c, d) in enumerate(zip(dataset.labels.tolist(), drawers.tolist())):
        by_class[c].setdefault(d, i)
    return alpha, use_class, by_class


def _eligible_alphabets(chars_of: dict[int, list[int]], n_way: int) -> list[int]:
    """The alphabets with at least ``n_way`` characters (warning about the others)."""
    eligible = sorted(a for a, cs in chars_of.items() if len(cs) >= n_way)
    skipped = sorted(set(chars_of) - set(eligible))
    if skipped:
        logger.warning("Koch trials: skipping %d alphabet(s) with fewer than %d characters: %s", len(skipped), n_way, skipped)
    if not eligible:
        most = max((len(cs) for cs in chars_of.values()), default=0)
        raise DataError(f"no alphabet has {n_way} characters (the largest has {most}); lower n_way")
    return eligible


def koch_within_alphabet_trials(
    dataset: ImageFolderDataset,
    alphabet_index: torch.Tensor | Sequence[int] | None = None,
    n_way: int = 20,
    trials: int = 400,
    seed: int = 0,
    *,
    queries_per_episode: int | None = None,
) -> OneShotTrials:
    """N-way within-alphabet one-shot trials as in Koch et al. (2015), section 4.3.

    Koch et al.: "pick an alphabet, pick 20 characters uniformly at random from it, pick two
    drawers; [one drawer's] characters are test images, each compared against all 20
    characters from the [other] drawer", 2 such episodes for each of 10 evaluation alphabets
    = 400 trials. What this function does, exactly:

    1. Episodes are made until ``trials`` trials exist. Episode ``e`` uses alphabet
       ``order[e % A]``, where ``order`` is a seeded permutation of the A eligible
       alphabets (those with >= ``n_way`` characters; others are skipped with a
       warning), so alphabets are used equally often (+-1 episode).
    2. It draws ``n_way`` distinct characters of that alphabet uniformly at random, and
       two distinct drawers A != B uniformly among the drawers who drew all of them.
    3. Support set: drawer A's drawing of each character, in the drawn (random) order.
    4. Queries: drawer B's drawings of ``queries_per_episode`` of the characters
       (default all ``n_way``, Koch's protocol; 1 gives independent trials), drawn at
       random; each query with the episode's support set is one trial. The last
       episode is cut to reach exactly ``trials``.

    Only rotation-0 classes are used. With the 20 evaluation alphabets and the defaults
    this gives 20 episodes (1 per alphabet) x 20 queries = 400 trials; Koch et al. used 10
    of them, 2 episodes each (pick them with :meth:`OmniglotDataset.alphabet_subset`).

    Args:
        dataset: images whose file names end in ``_YY`` (the drawer), e.g. from
            :func:`siamkit.data.load_omniglot`.
        alphabet_index: int (num_classes,), alphabet of each class; None = the dataset's
            ``class_alphabet``.
        n_way: characters per trial.
        trials: number of trials T.
        seed: seed of everything random here.
        queries_per_episode: queries per support set (1..n_way); None = n_way.

    Returns:
        :class:`OneShotTrials` (support (T, n_way), query (T,), answer (T,), ...); score
        any embedding of ``dataset.images`` with :func:`score_trials`.

    Raises:
        DataError: file names without a drawer, no alphabet with ``n_way`` characters, or
            characters lacking two common drawers.
    """
    if n_way < 2:
        raise ValueError(f"n_way must be >= 2, got {n_way}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    q_per = n_way if queries_per_episode is None else int(queries_per_episode)
    if not 1 <= q_per <= n_way:
        raise ValueError(f"queries_per_episode must be in 1..{n_way}, got {queries_per_episode}")
    alpha, use_class, by_class = _class_drawers(dataset, alphabet_index)
    chars_of: dict[int, list[int]] = {}
    for c in range(len(dataset.classes)):
        if use_class[c] and by_class[c]:
            chars_of.setdefault(int(alpha[c]), []).append(c)
    eligible = _eligible_alphabets(chars_of, n_way)

    g = torch.Generator().manual_seed(seed)
    order = [eligible[i] for i in torch.randperm(len(eligible), generator=g).tolist()]
    rows: dict[str, list] = {k: [] for k in ("support", "query", "answer", "episode", "alphabet", "sd", "qd")}
    e = 0
    while len(rows["query"]) < trials:
        a = order[e % len(order)]
        cs = chars_of[a]
        chosen = [cs[i] for i in torch.randperm(len(cs), generator=g)[:n_way].tolist()]
        common = sorted(set.intersection(*(set(by_class[c]) for c in chosen)))
        if len(common) < 2:
            raise DataError(
                f"characters {[dataset.classes[c] for c in chosen]} have {len(common)} drawer(s) in common; need 2"
            )
        pick = torch.randperm(len(common), generator=g)[:2].tolist()
        da, db = common[pick[0]], common[pick[1]]
        support = [by_class[c][da] for c in chosen]
        cols = torch.randperm(n_way, generator=g)[:q_per].tolist()
        for col in cols[: trials - len(rows["query"])]:
            for key, value in zip(rows, (support, by_class[chosen[col]][db], col, e, a, da, db)):
                rows[key].append(value)
        e += 1
    t = {k: torch.tensor(v, dtype=torch.long) for k, v in rows.items()}
    return OneShotTrials(t["support"], t["query"], t["answer"], t["episode"], t["alphabet"], t["sd"], t["qd"])


class TrialScore(NamedTuple):
    """Accuracy of one-shot trials and the half-width of its 95% confidence interval."""

    accuracy: float
    ci95: float


def score_trials(
    embeddings: torch.Tensor,
    trials: OneShotTrials | tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    distance: str | BaseDistance = "euclidean",
) -> TrialScore:
    """Accuracy of nearest-support classification over one-shot trials.

    Args:
        embeddings: (N, D), one row per image of the dataset the trials index.
        trials: :class:`OneShotTrials`, or a tuple (support (T, n), query (T,), answer (T,)).
        distance: name or object (lower = closer); ties go to the lower support column.

    Returns:
        ``TrialScore(accuracy, ci95)``: ``ci95`` is the half-width of the normal 95%
        interval. With :class:`OneShotTrials` of >= 2 episodes, the standard error is
        taken over episode accuracies (queries of one episode share a support set, so
        they are not independent); otherwise the binomial ``sqrt(p (1 - p) / T)``.
    """
    if isinstance(trials, OneShotTrials):
        support, query, answer, episode = trials.support, trials.query, trials.answer, trials.episode
    else:
        support, query, answer = (torch.as_tensor(t, dtype=torch.long) for t in trials)
        episode = None
    if support.ndim != 2 or query.shape != (support.shape[0],) or answer.shape != query.shape:
        raise ValueError(f"trials must be support (T, n), query (T,), answer (T,); got {tuple(support.shape)}, {tuple(query.shape)}, {tuple(answer.shape)}")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got {tuple(embeddings.shape)}")
    if support.shape[0] == 0:
        raise ValueError("no trials to score")
    hi = int(max(support.max(), query.max()))
    if hi >= embeddings.shape[0]:
        raise ValueError(f"trials index image {hi} but there are {embeddings.shape[0]} embeddings")
    dev = embeddings.device
    candidates = embeddings[support.to(dev)]  # (T, n, D)
    score = nearest_support_score(embeddings[query.to(dev)], candidates, answer, distance=distance, episode=episode)
    return TrialScore(score.accuracy, score.ci95)

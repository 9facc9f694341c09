"""Continuous learning: does feedback fix the NEXT mistakes of the identities it was
reported on, without hurting the others? On Omniglot and on AT&T faces.

A deployment of identity verification ("is this image identity X?") on identities the
model never trained on (Omniglot's 20 evaluation alphabets at 28x28, or 20 AT&T people at
56x46 while the other 20 train the base model). Every deployed identity's images come in
order (drawer order / file order = time of arrival): the templates enrolled in the gallery,
then ``per_round`` arrivals per feedback round, and the last ``later`` images arrive later
(the future: never reported, never used to choose anything). Half of the identities are
*reported*: the mistakes on their arrivals in a round (false rejects of their own images,
false accepts of images of other identities claiming to be them: same-alphabet
characters for Omniglot) are reported through the feedback store, each by two reporters
(the guard rails' minimum). The other half are *untouched*.

Two chains run side by side on the same attempts:

- **templates** (the baseline every deployment already has, no learning): each of its
  own falsely rejected arrivals is enrolled as one more template, round after round.
- the **learning system**: per round five candidates are built from the current system
  and the reports so far: *keep* (change nothing), *gallery* (``siamkit.gallery.adapt``:
  confirmed false rejects enrolled, per-identity thresholds with shrinkage toward the
  global one; confirmed false accepts kept as negative templates of the identity they
  claimed: ``siamkit.gallery.negatives``; the ablation *gallery_thr*, never chosen, is the
  same without them), *gallery_conf* (the same, also enrolling the confirmed matches:
  every correct accept of a reported identity's arrival that two operators confirm, a
  template update that follows the identity's changing appearance), *model* (``siamkit.training.finetune``: replay of the base model's classes,
  distillation, re-calibration, refused when its held-out classes get worse; the gallery
  re-embedded) and *both* (the fine-tuned model, then the gallery adapted under it). The
  candidate with the lowest balanced error ((FRR + FAR) / 2: faces have six impostor
  attempts per genuine one, and the raw error favours candidates that trade false accepts
  for false rejects) on the NEXT round's arrivals of the reported
  identities (seen before they are reported, like a shadow deployment) is kept; ties go to
  the simpler one.

Measured per round and candidate: the error rate (false rejects + false accepts over all
attempts) on the future images of the reported identities (the question), of the
untouched identities and the pair ROC AUC of the untouched identities' future images (no
forgetting: the held-out check), and last the reported arrivals themselves
(memorisation). The goal figures are paired against the model before feedback and the
baseline, with 95% bootstrap intervals over identities; faces pool several identity
splits (a base model each), Omniglot several draws of deployed characters.

    python bench/bench_continual.py --dataset omniglot|faces [--rounds 3] [--splits 1] [--chars 200] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from _common import SHARED_DATA, machine, machine_line, replace_doc_section, write_json
from siamkit import TrainConfig, Verifier, fit, save_model
from siamkit.calibration import Calibrator
from siamkit.errors import SiamkitError
from siamkit.data import load_face_folder, load_omniglot
from siamkit.feedback import FeedbackStore
from siamkit.gallery import Gallery
from siamkit.gallery.adapt import ADAPTATION_KEY, adapt_gallery
from siamkit.gallery.negatives import NEGATIVES_KEY
from siamkit.inference import embed_all, network_pairwise, pair_distances_of_embeddings
from siamkit.io import load_model
from siamkit.training.finetune import FinetuneConfig, FinetuneRefused, finetune
from siamkit.training.recipes import load_recipe
from siamkit.tuples import random_pairs

@dataclass(frozen=True)
class Layout:
    """How each identity's images arrive: templates, arrivals per round, the future; and
    how many other identities claim to be it."""

    templates: int = 2
    per_round: int = 2
    later: int = 10
    impostors: int = 3  # same-alphabet characters (faces: any other person) claiming each identity


LAYOUTS = {"omniglot": Layout(templates=2, per_round=2, later=10, impostors=3),
           "faces": Layout(templates=2, per_round=1, later=4, impostors=6)}


def png(img: torch.Tensor) -> bytes:
    """A (1, H, W) uint8 image as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(img[0].numpy(), "L").save(buf, "PNG")
    return buf.getvalue()


def base_config(dataset: str, quick: bool) -> TrainConfig:
    """The base model's recipe: a short conv4 for Omniglot, the shipped faces recipe for faces."""
    if dataset == "faces":
        r = load_recipe("faces").train
        return replace(r, val_fraction=0.0, progress=False, health=False, epochs=8 if quick else r.epochs)
    return TrainConfig(encoder="conv4", embedding_dim=64, loss="triplet", miner="semi_hard", epochs=3 if quick else 12,
                       steps_per_epoch=60 if quick else 200, batch_size=64, m_per_class=4, val_fraction=0.0,
                       patience=None, progress=False, health=False, seed=0)


def base_model(out: Path, bg: Any, cfg: TrainConfig, n_train: int, n_cal: int) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """Train (once; reused from ``out``) and calibrate the base model on its own classes.

    Args:
        out: the bench folder.
        bg: the base model's data (Omniglot background, or the faces not deployed).
        cfg: its recipe.
        n_train: classes it trains on (the replay data of every fine-tune).
        n_cal: other classes its threshold is calibrated on.

    Returns:
        (the model folder, the replay images, their labels).
    """
    perm = torch.randperm(len(bg.classes), generator=torch.Generator().manual_seed(0))
    train_c, cal_c = perm[:n_train], perm[n_train : n_train + n_cal]
    mtr, mcal = torch.isin(bg.labels, train_c), torch.isin(bg.labels, cal_c)
    model_dir = out / "base"
    if not (model_dir / "calibration.json").is_file():
        net = fit(bg.images[mtr], bg.labels[mtr], cfg).network
        save_model(net, model_dir)
        xc, yc = bg.images[mcal], bg.labels[mcal]
        p = random_pairs(yc, 6000, torch.Generator().manual_seed(1))
        d = pair_distances_of_embeddings(net, embed_all(net, xc), p.a, p.b).double().numpy()
        Calibrator().fit(d, p.same.numpy(), split_name="background calibration characters",
                         model_fingerprint=net.fingerprint).save(model_dir)
    return model_dir, bg.images[mtr], bg.labels[mtr]


class Deployment:
    """The deployment characters, their drawings by arrival, and the fixed attempts.

    Args:
        ev: Omniglot evaluation at 28x28.
        n_chars: characters in the deployment (half reported).
        rounds: feedback rounds (3 arrivals each).
    """

    def __init__(self, ev: Any, n_chars: int, rounds: int, lay: Layout, seed: int = 0) -> None:
        self.lay = lay
        g = torch.Generator().manual_seed(2 + 100 * seed)
        chars = torch.randperm(len(ev.classes), generator=g)[:n_chars]
        self.images = ev.images
        self.reported = set(chars[: n_chars // 2].tolist())
        self.chars = chars.tolist()
        alpha = ev.image_alphabet
        self.slots: dict[int, list[int]] = {}
        for c in self.chars:
            idx = torch.nonzero(ev.labels == c).flatten()
            idx = idx[torch.argsort(ev.drawers[idx])]  # drawer order = time of arrival
            self.slots[c] = idx.tolist()
        need = lay.templates + lay.per_round * (rounds + 1) + lay.later  # + the last round's shadow block
        short = [c for c in self.chars if len(self.slots[c]) < need]
        if short:
            raise SystemExit(f"{len(short)} characters have fewer than {need} drawings")
        rng = np.random.default_rng(3 + 100 * seed)
        self.claims: dict[int, list[int]] = {}  # character -> same-alphabet characters claiming to be it
        alpha_of = {c: int(alpha[self.slots[c][0]]) for c in self.chars}
        for c in self.chars:
            same_alpha = [o for o in self.chars if o != c and alpha_of[o] == alpha_of[c]]
            pool = same_alpha if len(same_alpha) >= lay.impostors else [o for o in self.chars if o != c]
            self.claims[c] = list(rng.choice(pool, size=lay.impostors, replace=False))
        self.templates = {c: self.slots[c][: lay.templates] for c in self.chars}
        self.png_index: dict[str, int] = {}  # sha256 of a reported image's PNG -> its index

    def image_of_png(self, data: bytes) -> int:
        """The index of a reported image, from its PNG bytes."""
        return self.png_index[hashlib.sha256(data).hexdigest()]

    def arrivals(self, c: int, rnd: int) -> list[int]:
        s = self.lay.templates + self.lay.per_round * rnd
        return self.slots[c][s : s + self.lay.per_round]

    def later(self, c: int) -> list[int]:
        return self.slots[c][-self.lay.later :]

    def attempts(self, chars: list[int], rnd: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probe image index, claimed character, genuine?) of every attempt on ``chars``:
        each of its drawings of round ``rnd`` (None = its future drawings) claims its own
        character, and ``per_round`` drawings of the same time of each of ``impostors`` other
        characters claim it (so no future drawing is ever reported)."""
        def drawings(c: int) -> list[int]:
            return self.later(c) if rnd is None else self.arrivals(c, rnd)

        rows = []
        for c in chars:
            for p in drawings(c):
                rows.append((p, c, True))
            for o in self.claims[c]:
                for p in drawings(o)[: self.lay.per_round]:
                    rows.append((p, c, False))
        a = np.array(rows, dtype=object)
        return a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2].astype(bool)


@dataclass
class State:
    """One deployment system: a model folder, its gallery file, the templates (image
    indices) the gallery holds per identity, and its per-identity thresholds."""

    model: Path
    gallery: Path
    templates: dict[int, list[int]]
    thresholds: dict[str, float] = field(default_factory=dict)
    negatives: dict[int, list[int]] = field(default_factory=dict)  # confirmed impostor images per identity
    neg_ratio: float = 1.0  # rejected when the closest negative is within neg_ratio x the distance to the identity


def copy_db(src: Path, dst: Path) -> Path:
    """A consistent copy of a SQLite file (the backup API: WAL pages included)."""
    for f in (dst, dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
        f.unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


def decide(st: State, dep: Deployment, att: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Best-template distance and decision of every attempt: the model's calibrated
    threshold, or the claimed identity's own one when the system has it; then its negative
    templates (rejected when the probe is at least as close to one of them), as
    ``Gallery.verify`` decides (``siamkit.gallery.negatives``).

    Args:
        st: the system.
        dep: the deployment.
        att: the attempts (probe, claimed character, genuine).

    Returns:
        (distances, accepted).
    """
    v = Verifier.from_dir(st.model)
    probe, claim, _ = att
    used = sorted(set(probe.tolist()) | {i for t in [*st.templates.values(), *st.negatives.values()] for i in t})
    pos = {k: j for j, k in enumerate(used)}
    e = embed_all(v.network, dep.images[used])
    d = np.empty(len(probe))
    thr = np.empty(len(probe))
    dn = np.full(len(probe), np.inf)
    for c in set(claim.tolist()):
        rows = np.nonzero(claim == c)[0]
        q = e[[pos[int(p)] for p in probe[rows]]]
        t = e[[pos[i] for i in st.templates[c]]]
        d[rows] = network_pairwise(v.network, q, t).min(dim=1).values.double().numpy()
        thr[rows] = st.thresholds.get(f"c{c}", float(v.calibrator.threshold_))
        if st.negatives.get(c):
            dn[rows] = network_pairwise(v.network, q, e[[pos[i] for i in st.negatives[c]]]).min(dim=1).values.double().numpy()
    return d, (d <= thr) & (dn > st.neg_ratio * d)


def rates(wrong: np.ndarray, genuine: np.ndarray) -> dict[str, float]:
    """FRR, FAR, their mean (the balanced error: the per-round choice) and the overall
    error rate of a set of attempts (``wrong``: per attempt)."""
    fr, fa = (wrong & genuine).sum(), (wrong & ~genuine).sum()
    frr, far = float(fr / max(1, genuine.sum())), float(fa / max(1, (~genuine).sum()))
    return {"error": float(wrong.mean()), "frr": frr, "far": far, "balanced": (frr + far) / 2, "attempts": int(len(genuine))}


class UntouchedPairs:
    """Fixed random pairs of the untouched identities' future images; each model's
    distances on them (cached), for the held-out pair AUC and its bootstrap."""

    def __init__(self, dep: Deployment) -> None:
        chars = [c for c in dep.chars if c not in dep.reported]
        self.images = dep.images[[i for c in chars for i in dep.later(c)]]
        labels = torch.tensor([c for c in chars for _ in range(dep.lay.later)])
        self.p = random_pairs(labels, 8000, torch.Generator().manual_seed(4))
        self.ida, self.idb = labels[self.p.a].numpy(), labels[self.p.b].numpy()
        self.same = self.p.same.numpy()
        self.chars = np.array(chars)
        self._d: dict[Path, np.ndarray] = {}

    def distances(self, model: Path) -> np.ndarray:
        if model not in self._d:
            net = load_model(model)
            self._d[model] = pair_distances_of_embeddings(net, embed_all(net, self.images), self.p.a, self.p.b).double().numpy()
        return self._d[model]

    def auc(self, model: Path) -> float:
        return float(roc_auc_score(self.same, -self.distances(model)))


def report_mistakes(store: Path, dep: Deployment, att: tuple[np.ndarray, ...], accepted: np.ndarray, rnd: int,
                    confirm: bool = False) -> tuple[int, int]:
    """Report the round's mistakes on reported characters, each by two reporters; with
    ``confirm``, also confirm each correct accept of a genuine arrival (a confirmed match:
    the operator saw the right person let in), by two reporters too.

    Args:
        store: the feedback store.
        dep: the deployment.
        att: the round's attempts.
        accepted: the current system's decisions.
        rnd: the round (names the reporters).
        confirm: also send the confirmed matches.

    Returns:
        (mistakes reported, matches confirmed).
    """
    probe, claim, genuine = att
    wrong = np.nonzero(accepted != genuine)[0]
    right = np.nonzero(accepted & genuine)[0] if confirm else np.zeros(0, dtype=int)
    with FeedbackStore.open(store) as s:
        for k in [*wrong, *right]:
            data = png(dep.images[int(probe[k])])
            dep.png_index[hashlib.sha256(data).hexdigest()] = int(probe[k])
            for who in ("operator", "supervisor"):
                s.add(actor=f"{who}-{rnd}", kind="identity_verify", identity=f"c{claim[k]}",
                      image_a=(data, "png"), truth={"same": bool(genuine[k])},
                      predicted={"same": bool(accepted[k])})
    return int(len(wrong)), int(len(right))


def gallery_side(st: State, store: Path, dest: Path, dep: Deployment, prior: float, negatives: bool = True,
                 confirmations: bool = False) -> State:
    """The library's gallery-side adaptation on a copy of ``st``'s gallery; the bench's
    template lists follow what it enrolled (report id -> image, by the report's bytes).

    Args:
        st: the current system.
        store: the feedback store.
        dest: the adapted gallery's file.
        dep: the deployment (maps report images back to image indices).
        prior: the shrinkage prior (reports the global threshold is worth).
        negatives: keep confirmed false accepts as negative templates.
        confirmations: also learn from the confirmed matches (template updates).

    Returns:
        The adapted system (same model).
    """
    copy_db(st.gallery, dest)
    with Gallery.open(dest, st.model, create=False) as g, FeedbackStore.open(store, create=False) as s:
        before = set((g.store.meta().get(ADAPTATION_KEY) or {}).get("templates_added", []))
        rec = adapt_gallery(g, s, prior=prior, negatives=negatives, confirmations=confirmations, actor="bench")
        templates = {c: list(t) for c, t in st.templates.items()}
        for fid in sorted(set(rec["templates_added"]) - before):
            r = s.get(fid)
            templates[int(r.identity[1:])].append(dep.image_of_png(r.image_a))
        neg = {int(k[1:]): [dep.image_of_png(s.get(i).image_a) for i in v["reports"]]
               for k, v in (g.store.meta().get(NEGATIVES_KEY) or {}).get("negatives", {}).items()}
    return State(st.model, dest, templates, dict(rec["thresholds"]), neg)


def model_side(st: State, store: Path, dest: Path, replay: tuple[torch.Tensor, torch.Tensor], steps: int, rnd: int) -> tuple[State | None, dict[str, Any]]:
    """``siamkit.training.finetune`` on the new reports, then the gallery copy re-embedded
    with the new model (per-identity thresholds fitted under the old one are dropped).

    Args:
        st: the current system.
        store: the feedback store.
        dest: the round's folder (the model and its gallery go there).
        replay: the base model's training images and labels.
        steps: fine-tuning steps.
        rnd: the round (the fine-tune's seed).

    Returns:
        (the new system, or None when refused or there was nothing to learn; the fine-tune's facts).
    """
    cfg = FinetuneConfig(steps=steps, lr=2e-4, feedback_weight=2.0, eval_pairs=4000, seed=rnd)
    t0 = time.perf_counter()
    try:
        rep = finetune(st.model, store, dest / "model", replay_images=replay[0], replay_labels=replay[1], gallery=st.gallery, config=cfg)
    except FinetuneRefused as e:
        return None, {"accepted": False, "held_out": e.report["held_out"], "seconds": round(time.perf_counter() - t0, 1)}
    except SiamkitError as e:  # nothing that may teach (no mistake this round)
        return None, {"accepted": False, "held_out": {"not_run": str(e)}, "seconds": 0.0}
    g = copy_db(st.gallery, dest / "gallery.db")
    with Gallery.migrate(g, dest / "model"):
        pass
    return State(dest / "model", g, {c: list(t) for c, t in st.templates.items()}), {
        "accepted": True, "held_out": rep["held_out"], "seconds": round(time.perf_counter() - t0, 1)}


def faces_parts(split: int) -> tuple[Any, Any]:
    """AT&T faces at 56x46: 20 identities for the base model, 20 deployed (file order as
    time of arrival; every other deployed person may claim to be anyone); ``split`` seeds
    which 20 are which."""
    ds = load_face_folder(SHARED_DATA / "att_faces", image_size=(56, 46))
    perm = torch.randperm(len(ds.classes), generator=torch.Generator().manual_seed(5 + split)).tolist()
    base, deployed = ds.subset(perm[:20]), ds.subset(perm[20:])
    order = torch.zeros(len(deployed), dtype=torch.long)
    for c in range(len(deployed.classes)):
        idx = torch.nonzero(deployed.labels == c).flatten()
        order[idx] = torch.arange(idx.numel())
    ev = SimpleNamespace(classes=deployed.classes, images=deployed.images, labels=deployed.labels, drawers=order,
                         image_alphabet=torch.zeros(len(deployed), dtype=torch.long))
    return base, ev


CANDIDATES = ("keep", "gallery", "gallery_conf", "model", "both")  # the per-round choice, simplest first (ties go to the first)
ABLATIONS = ("gallery_thr", "gallery_neg0.8", "gallery_neg0.6")  # measured, never chosen: the gallery side without negative templates (the previous one)


class Run:
    """One deployment (one identity split): both chains, every round, every candidate.

    ``errors[(round, method)][set]`` holds the per-attempt mistakes (bool) for the
    bootstrap; ``rows`` the JSON-able summaries.
    """

    def __init__(self, out: Path, dep: Deployment, base: Path, replay: tuple[torch.Tensor, torch.Tensor], opts: Any) -> None:
        self.out, self.dep, self.replay, self.opts = out, dep, replay, opts
        self.rep_chars = [c for c in dep.chars if c in dep.reported]
        self.sets = {"future_reported": dep.attempts(self.rep_chars, None),
                     "future_untouched": dep.attempts([c for c in dep.chars if c not in dep.reported], None)}
        self.pairs = UntouchedPairs(dep)
        self.errors: dict[tuple[int, str], dict[str, np.ndarray]] = {}
        self.att: dict[tuple[int, str], dict[str, tuple[np.ndarray, ...]]] = {}
        self.models: dict[tuple[int, str], Path] = {}
        self.rows: list[dict[str, Any]] = []
        self.store = out / "feedback.sqlite"
        self.store.unlink(missing_ok=True)
        g0 = out / "gallery0.db"
        g0.unlink(missing_ok=True)
        with Gallery.open(g0, Verifier.from_dir(base)) as g:
            for c in dep.chars:
                g.enroll(f"c{c}", dep.images[dep.templates[c]])
        self.start = State(base, g0, {c: list(t) for c, t in dep.templates.items()})

    def measure(self, name: str, st: State, rnd: int, extra: dict[str, tuple[np.ndarray, ...]]) -> dict[str, Any]:
        """Decide every attempt set with ``st``; keep the mistakes and a summary row."""
        sets = {**self.sets, **extra}
        wrong = {k: decide(st, self.dep, att)[1] != att[2] for k, att in sets.items()}
        self.errors[(rnd, name)] = wrong
        self.att[(rnd, name)] = sets
        self.models[(rnd, name)] = st.model
        where = st.model.relative_to(self.out) if st.model.is_relative_to(self.out) else st.model.relative_to(self.out.parent)
        row: dict[str, Any] = {"round": rnd, "method": name, "model": str(where),
                               **{k: rates(w, sets[k][2]) for k, w in wrong.items()}, "untouched_auc": self.pairs.auc(st.model),
                               "own_thresholds": len(st.thresholds), "negative_templates": sum(map(len, st.negatives.values()))}
        fut = sets["future_reported"]  # where the future mistakes are: how many identities, false rejects / accepts
        w = wrong["future_reported"]
        row["future_reported"].update(identities_wrong=int(np.unique(fut[1][w]).size), identities=int(np.unique(fut[1]).size),
                                      false_rejects=int((w & fut[2]).sum()), false_accepts=int((w & ~fut[2]).sum()))
        self.rows.append(row)
        print(rnd, name, {k: round(v["error"], 4) for k, v in row.items() if isinstance(v, dict)}, f"auc {row['untouched_auc']:.4f}", flush=True)
        return row

    def round(self, rnd: int, learn: State, tpl: State) -> tuple[State, State]:
        """Round ``rnd`` (0-based): report the mistakes on its arrivals, build the
        candidates, keep the one with the fewest mistakes on the next arrivals."""
        dep, r = self.dep, rnd + 1
        arr, shadow = dep.attempts(self.rep_chars, rnd), dep.attempts(self.rep_chars, rnd + 1)
        extra = {"reported_arrivals": arr, "next_arrivals": shadow}
        # the baseline: no learning, every falsely rejected arrival enrolled as a template
        _, acc_t = decide(tpl, dep, arr)
        tpl = State(tpl.model, tpl.gallery, {c: list(t) for c, t in tpl.templates.items()})
        for p, c, gen, a in zip(*arr, acc_t):
            if gen and not a:
                tpl.templates[int(c)].append(int(p))
        self.measure("templates", tpl, r, extra)
        _, acc = decide(learn, dep, arr)
        n_wrong, n_conf = report_mistakes(self.store, dep, arr, acc, rnd, confirm=self.opts.confirm)
        folder = self.out / f"round{r}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        cands: dict[str, State] = {"keep": learn, "gallery": gallery_side(learn, self.store, folder / "gallery_adapted.db", dep, self.opts.prior)}
        if self.opts.confirm:
            cands["gallery_conf"] = gallery_side(learn, self.store, folder / "gallery_conf.db", dep, self.opts.prior, confirmations=True)
        abl = {"gallery_thr": gallery_side(learn, self.store, folder / "gallery_thr.db", dep, self.opts.prior, negatives=False)}
        abl.update({f"gallery_neg{x}": replace(cands["gallery"], neg_ratio=x) for x in (0.8, 0.6)})
        store_before = copy_db(self.store, folder / "feedback_before_finetune.sqlite")
        new, ft = model_side(learn, self.store, folder, self.replay, self.opts.steps, rnd) if self.opts.steps else (None, {"accepted": False, "held_out": {"not_run": "--steps 0"}, "seconds": 0.0})
        if new is not None:
            cands["model"] = new
            cands["both"] = gallery_side(new, self.store, folder / "gallery_both.db", dep, self.opts.prior, confirmations=self.opts.confirm)
        rows = {k: self.measure(k, st, r, extra) for k, st in cands.items()}
        for k, st in abl.items():
            self.measure(k, st, r, extra)["chosen"] = False
        chosen = min(cands, key=lambda k: (rows[k]["next_arrivals"]["balanced"], CANDIDATES.index(k)))
        for k, row in rows.items():
            row["chosen"] = k == chosen
        rows["keep"].update(mistakes_reported=n_wrong, matches_confirmed=n_conf, finetune=ft)
        if chosen not in ("model", "both"):  # the fine-tune's reports were not learnt after all: back to new
            copy_db(store_before, self.store)
        print(f"round {r}: {n_wrong} mistakes reported, {n_conf} matches confirmed; fine-tune {'accepted' if ft['accepted'] else 'refused / not run'}; chosen: {chosen}", flush=True)
        return cands[chosen], tpl

    def run(self) -> None:
        first = self.dep.attempts(self.rep_chars, 0)
        self.measure("before", self.start, 0, {"reported_arrivals": first, "next_arrivals": first})
        learn, tpl = self.start, self.start
        for rnd in range(self.opts.rounds):
            learn, tpl = self.round(rnd, learn, tpl)


def _resample(keys: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Per split: each attempt's weight = how often its identity was drawn (identities
    resampled with replacement)."""
    out = []
    for k in keys:
        ids, inv = np.unique(k, return_inverse=True)
        draw = np.bincount(rng.integers(0, ids.size, ids.size), minlength=ids.size)
        out.append(draw[inv].astype(float))
    return out


def error_ci(runs: list[Run], a: Any, b: Any, what: str = "future_reported", n: int = 2000) -> dict[str, Any]:
    """Error of ``b`` against ``a`` on the same attempts pooled over runs, with 95%
    bootstrap intervals over identities: the relative cut ``1 - err_b / err_a`` and the
    difference ``err_b - err_a``.

    Args:
        runs: the runs (identity splits).
        a: (round, method) of the reference (or a list: one per run).
        b: (round, method) compared with it (or one per run).
        what: the attempt set.
        n: bootstrap resamples.

    Returns:
        {"a", "b", "cut", "cut_ci", "diff", "diff_ci", "attempts"}.
    """
    pick = lambda x, i: x[i] if isinstance(x, list) else x  # noqa: E731 - one (round, method) or one per run
    wa = [r.errors[pick(a, i)][what].astype(float) for i, r in enumerate(runs)]
    wb = [r.errors[pick(b, i)][what].astype(float) for i, r in enumerate(runs)]
    keys = [r.att[pick(b, i)][what][1] for i, r in enumerate(runs)]

    def stat(w: list[np.ndarray]) -> tuple[float, float]:
        ea = sum(float((x * y).sum()) for x, y in zip(w, wa)) / sum(float(x.sum()) for x in w)
        eb = sum(float((x * y).sum()) for x, y in zip(w, wb)) / sum(float(x.sum()) for x in w)
        return (1 - eb / ea if ea else float("nan")), eb - ea

    ones = [np.ones_like(x) for x in wa]
    cut, diff = stat(ones)
    rng = np.random.default_rng(7)
    boot = np.array([stat(_resample(keys, rng)) for _ in range(n)])
    q = lambda col: [float(np.nanpercentile(boot[:, col], 2.5)), float(np.nanpercentile(boot[:, col], 97.5))]  # noqa: E731
    ea = float(np.mean(np.concatenate(wa)))
    eb = float(np.mean(np.concatenate(wb)))
    return {"a": ea, "b": eb, "cut": cut, "cut_ci": q(0), "diff": diff, "diff_ci": q(1), "attempts": int(sum(x.size for x in wa))}


def auc_ci(runs: list[Run], after: list[Path], n: int = 1000) -> dict[str, Any]:
    """Held-out (untouched identities') pair AUC of each run's before-model and after-model,
    the mean over runs, and a 95% bootstrap interval of the paired difference, identities
    resampled (a genuine pair weighs how often its identity was drawn, an impostor pair the
    product for its two identities).

    Args:
        runs: the runs.
        after: each run's after-model folder.
        n: bootstrap resamples.

    Returns:
        {"before", "after", "diff", "diff_ci"}.
    """
    rng = np.random.default_rng(8)
    da = [r.pairs.distances(r.start.model) for r in runs]
    db = [r.pairs.distances(m) for r, m in zip(runs, after)]
    pos = [(np.searchsorted(np.sort(r.pairs.chars), r.pairs.ida), np.searchsorted(np.sort(r.pairs.chars), r.pairs.idb)) for r in runs]

    def stat(w: list[np.ndarray | None]) -> np.ndarray:
        out = [(roc_auc_score(r.pairs.same, -x, sample_weight=ww), roc_auc_score(r.pairs.same, -y, sample_weight=ww))
               for r, x, y, ww in zip(runs, da, db, w)]
        m = np.mean(out, axis=0)
        return np.array([m[0], m[1], m[1] - m[0]])

    point = stat([None] * len(runs))
    boot = []
    for _ in range(n):
        w = []
        for r, (ia, ib) in zip(runs, pos):
            k = r.pairs.chars.size
            draw = np.bincount(rng.integers(0, k, k), minlength=k).astype(float)
            w.append(draw[ia] * np.where(r.pairs.same, 1.0, draw[ib]))
        if all(v[r.pairs.same].sum() > 0 and v[~r.pairs.same].sum() > 0 for v, r in zip(w, runs)):
            boot.append(stat(w)[2])
    return {"before": float(point[0]), "after": float(point[1]), "diff": float(point[2]),
            "diff_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))], "resamples": len(boot)}


def chosen(run: Run, rnd: int) -> str:
    """The method the run kept in round ``rnd`` ("before" for round 0)."""
    if rnd == 0:
        return "before"
    return next(r["method"] for r in run.rows if r["round"] == rnd and r.get("chosen"))


def model_of(run: Run, rnd: int, method: str) -> Path:
    """The model folder a (round, method) decided with."""
    return run.models[(rnd, method)]


def summarise(runs: list[Run], rounds: int) -> dict[str, Any]:
    """The goal's figures, pooled over runs: per round, the kept system against the
    model before feedback and against the enrol-as-template baseline (same attempts), and
    the held-out AUC; in round 1 every candidate against before."""
    out: dict[str, Any] = {"rounds": []}
    for rnd in range(1, rounds + 1):
        keep = [(rnd, chosen(r, rnd)) for r in runs]
        out["rounds"].append({
            "round": rnd, "chosen": [k[1] for k in keep],
            "vs_before": error_ci(runs, (0, "before"), keep),
            "vs_templates": error_ci(runs, [(rnd, "templates")] * len(runs), keep),
            "templates_vs_before": error_ci(runs, (0, "before"), (rnd, "templates")),
            "untouched_vs_before": error_ci(runs, (0, "before"), keep, "future_untouched"),
            "memorised_vs_before": error_ci(runs, (0, "before"), keep, "reported_arrivals") if rnd == 1 else None,
            "held_out_auc": auc_ci(runs, [model_of(r, rnd, k[1]) for r, k in zip(runs, keep)]),
        })
    out["round1_candidates"] = {m: error_ci(runs, (0, "before"), (1, m)) for m in CANDIDATES + ABLATIONS + ("templates",)
                                if all((1, m) in r.errors for r in runs)}
    return out


def pooled_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """Per (round, method): the error rates pooled over the runs that have it."""
    keys = sorted({(r["round"], r["method"]) for run in runs for r in run.rows},
                  key=lambda k: (k[0], ["before", "templates", *CANDIDATES, *ABLATIONS].index(k[1])))
    out = []
    for rnd, m in keys:
        have = [run for run in runs if (rnd, m) in run.errors]
        row: dict[str, Any] = {"round": rnd, "method": m, "runs": len(have),
                               "chosen": sum(bool(next(x for x in run.rows if x["round"] == rnd and x["method"] == m).get("chosen"))
                                             for run in have)}
        for what in ("future_reported", "future_untouched", "reported_arrivals", "next_arrivals"):
            w = np.concatenate([run.errors[(rnd, m)][what] for run in have])
            g = np.concatenate([run.att[(rnd, m)][what][2] for run in have])
            row[what] = rates(w, g)
        row["untouched_auc"] = float(np.mean([next(x for x in run.rows if x["round"] == rnd and x["method"] == m)["untouched_auc"] for run in have]))
        out.append(row)
    return out


def load_parts(dataset: str, split: int) -> tuple[Any, Any]:
    if dataset == "faces":
        return faces_parts(split)
    return (load_omniglot(SHARED_DATA / "omniglot", split="background", image_size=28),
            load_omniglot(SHARED_DATA / "omniglot", split="evaluation", image_size=28))


def run_all(out: Path, opts: argparse.Namespace) -> dict[str, Any]:
    """Every split: faces train a base model per split (20 identities each side), Omniglot
    one base model on the background alphabets and another draw of deployed characters."""
    runs = []
    for split in range(opts.splits):
        bg, ev = load_parts(opts.dataset, split)
        folder = out / f"split{split}"
        folder.mkdir(parents=True, exist_ok=True)
        base_dir = folder if opts.dataset == "faces" else out
        n_train, n_cal = (15, 5) if opts.dataset == "faces" else (400, 100)
        base, rx, ry = base_model(base_dir, bg, base_config(opts.dataset, opts.quick), n_train, n_cal)
        dep = Deployment(ev, min(opts.chars, len(ev.classes)), opts.rounds, LAYOUTS[opts.dataset], seed=split)
        run = Run(folder, dep, base, (rx, ry), opts)
        print(f"split {split}: {len(dep.chars)} identities", flush=True)
        run.run()
        runs.append(run)
    return {"splits": [{"split": i, "identities": len(r.dep.chars), "rows": r.rows} for i, r in enumerate(runs)], "pooled": pooled_rows(runs),
            "summary": summarise(runs, opts.rounds), "layout": dataclasses.asdict(LAYOUTS[opts.dataset])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=sorted(LAYOUTS), default="omniglot")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chars", type=int, default=200, help="identities deployed per split (half reported)")
    ap.add_argument("--splits", type=int, default=1, help="identity splits (faces: a base model each)")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps per round (0: no model-side candidates)")
    ap.add_argument("--prior", type=float, default=5.0, help="shrinkage prior of the per-identity thresholds (reports)")
    ap.add_argument("--out", type=Path, default=None, help="bench folder (default: a temporary folder; base models are reused from it)")
    ap.add_argument("--quick", action="store_true", help="a smaller base-model budget")
    ap.add_argument("--confirm", action=argparse.BooleanOptionalAction, default=True,
                    help="operators also confirm correct accepts (the gallery_conf candidate learns from them)")
    ap.add_argument("--from-json", type=Path, default=None, help="rewrite the docs section from a run's JSON, run nothing")
    ap.add_argument("--note", default=None, help="with --from-json: a sentence to add (e.g. why a run was reduced); kept in the JSON")
    opts = ap.parse_args()
    if opts.from_json is not None:
        res = json.loads(opts.from_json.read_text())
        if opts.note:
            res["note"] = opts.note
            opts.from_json.write_text(json.dumps(res, indent=2) + "\n")
        write_doc(res, opts.from_json.name)
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = opts.out or Path(tempfile.mkdtemp(prefix="siamkit-continual-"))
    out.mkdir(parents=True, exist_ok=True)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    res = run_all(out, opts)
    res.update(machine=machine(), load_before=load0, load_after=os.getloadavg()[0], seconds=round(time.perf_counter() - t0, 1),
               options={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k not in ("out", "from_json", "note")},
               date=time.strftime("%Y-%m-%d"))
    path = write_json("continual" if opts.dataset == "omniglot" else f"continual_{opts.dataset}", res)
    write_doc(res, path.name)


def _pct(c: dict[str, Any]) -> str:
    """A relative cut and its interval, in percent (negative = more mistakes)."""
    return f"{100 * c['cut']:.0f}% [{100 * c['cut_ci'][0]:.0f}, {100 * c['cut_ci'][1]:.0f}]"


def table(res: dict[str, Any]) -> list[str]:
    """The docs table: pooled over splits."""
    lines = ["| round | system | kept (runs) | future, reported: error (FRR / FAR) | future, untouched: error | held-out AUC | "
             "next arrivals (the choice) | reported arrivals (memorisation) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["pooled"]:
        fr, fu = r["future_reported"], r["future_untouched"]
        lines.append(f"| {r['round']} | {r['method']} | {r['chosen']}/{r['runs']} | {fr['error']:.4f} ({fr['frr']:.3f} / {fr['far']:.3f}) | "
                     f"{fu['error']:.4f} | {r['untouched_auc']:.4f} | {r['next_arrivals']['error']:.4f} | "
                     f"{'' if r['round'] == 0 else format(r['reported_arrivals']['error'], '.4f')} |")
    return lines


def goal_table(res: dict[str, Any]) -> list[str]:
    """Per round, the kept system against before and the baseline, with 95% intervals."""
    lines = ["| round | kept | future error, reported: before -> kept | cut [95% CI] | templates baseline: cut [95% CI] | "
             "kept - baseline [95% CI] | untouched error: before -> kept | held-out AUC before -> after, diff [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for g in res["summary"]["rounds"]:
        vb, vt, tb, un, auc = g["vs_before"], g["vs_templates"], g["templates_vs_before"], g["untouched_vs_before"], g["held_out_auc"]
        kept = ", ".join(f"{m} x{g['chosen'].count(m)}" for m in dict.fromkeys(g["chosen"]))
        lines.append(f"| {g['round']} | {kept} | {vb['a']:.4f} -> {vb['b']:.4f} | {_pct(vb)} | {_pct(tb)} | "
                     f"{vt['diff']:+.4f} [{vt['diff_ci'][0]:+.4f}, {vt['diff_ci'][1]:+.4f}] | {un['a']:.4f} -> {un['b']:.4f} | "
                     f"{auc['before']:.4f} -> {auc['after']:.4f}, {auc['diff']:+.4f} [{auc['diff_ci'][0]:+.4f}, {auc['diff_ci'][1]:+.4f}] |")
    return lines


def reading(res: dict[str, Any]) -> str:
    """What the tables say against the goal (computed, so it stays true on a re-run)."""
    g1 = res["summary"]["rounds"][0]
    vb, vt, auc = g1["vs_before"], g1["vs_templates"], g1["held_out_auc"]
    half = vb["cut"] >= 0.5
    cands = res["summary"]["round1_candidates"]
    cand_txt = "; ".join(f"{m} {_pct(c)}" for m, c in cands.items())
    auc_ok = auc["diff_ci"][1] >= 0
    return (f"Goal, round 1: future error of the reported identities cut by {_pct(vb)} ({vb['attempts']} attempts; "
            f"goal 50%: {'met' if half else 'not met'}{'' if half or vb['cut_ci'][1] < 0.5 else ', the interval reaches it'}); "
            f"against the enrol-as-template baseline {vt['diff']:+.4f} [{vt['diff_ci'][0]:+.4f}, {vt['diff_ci'][1]:+.4f}] "
            f"({'better' if vt['diff_ci'][1] < 0 else ('not better' if vt['diff_ci'][0] >= 0 else 'not distinguishable')}); "
            f"held-out AUC {auc['before']:.4f} -> {auc['after']:.4f}, difference {auc['diff']:+.4f} [{auc['diff_ci'][0]:+.4f}, "
            f"{auc['diff_ci'][1]:+.4f}] ({'no lower within its interval' if auc_ok else 'lower: the interval excludes 0'}). "
            f"Every round-1 candidate against before (cut [95% CI]): {cand_txt}.")


def write_doc(res: dict[str, Any], name: str) -> None:
    """The docs section of a run.

    Args:
        res: the run's figures (as in its JSON).
        name: the JSON file's name.

    Returns:
        None.
    """
    o, lay = res["options"], Layout(**res["layout"])
    faces = o["dataset"] == "faces"
    cmd = (f"nice -n 10 python bench/bench_continual.py --dataset {o['dataset']} --rounds {o['rounds']} --chars {o['chars']} "
           f"--splits {o['splits']} --steps {o['steps']} --prior {o['prior']}" + (" --quick" if o["quick"] else ""))
    who = ("AT&T identities deployed per split (the other 20 train that split's base model)" if faces
           else "evaluation characters per split (one base model on the background alphabets)")
    body = [f"{machine_line(res['machine'])} Load average {res['load_before']:.1f} -> {res['load_after']:.1f}. "
            f"`{cmd}` ({name}, {res['seconds']:.0f} s). {o['splits']} split(s) of {res['splits'][0]['identities']} {who}, half reported; "
            f"{lay.templates} templates each, {lay.per_round} arrival(s) per identity per round, the last {lay.later} images the future; "
            f"every attempt is one image claiming its own identity or claimed by {lay.impostors} other identities; every "
            f"mistake on a reported identity's arrivals is reported by two reporters"
            + (", and every correct accept of a reported identity's own arrival is confirmed by two (a confirmed match)" if o.get("confirm") else "")
            + f". Per round the candidates: keep, gallery "
            f"(`siamkit.gallery.adapt`: confirmed false rejects enrolled, per-identity thresholds shrunk with prior "
            f"{o['prior']:g}, confirmed false accepts kept as negative templates: a claim is rejected when the probe is at least "
            f"as close to one of them as to the identity; `gallery_thr` is the same without negative templates, measured, never "
            f"chosen), " + ("gallery_conf (the same, also enrolling the confirmed matches as templates: `adapt_gallery(confirmations=True)`), "
                            if o.get("confirm") else "")
            + f"model (`finetune`, {o['steps']} steps, refused by its held-out check when held-out classes get "
            f"worse) and both; the one with the lowest balanced error ((FRR + FAR) / 2) on the *next* round's arrivals (not "
            f"reported yet, never the future images) is kept. Fine-tune settings and the prior are the defaults chosen before this run, not tuned on it. "
            f"Intervals: 95% bootstrap over identities (2,000 resamples; AUC 1,000), paired on the same attempts / pairs; "
            f"held-out AUC is the pair AUC of the untouched identities' future images." + (f" {res['note']}" if res.get("note") else ""), "",
            *goal_table(res), "", reading(res), "", "All systems, pooled over the splits:", "", *table(res)]
    own = name.removesuffix(".json") in ("continual", "continual_faces")  # another JSON (e.g. a reduced variant): its own section
    replace_doc_section("Continuous learning: the next mistakes" + (" (faces)" if faces else "") + ("" if own else f", {name}"),
                        "\n".join(body))


if __name__ == "__main__":
    main()

"""Continuous learning on Omniglot: does feedback fix the NEXT mistakes of the characters
it was reported on, without hurting the others?

A deployment of identity verification ("is this drawing character X?") on characters the
model never trained on (Omniglot's 20 evaluation alphabets, 28x28). Every deployment
character has its 20 drawings in drawer order, read as time of arrival: 2 enrolled
templates, then 3 arrivals per feedback round, and the last 10 arrive later (the test).
Half of the characters are *reported*: their mistakes in a round (false rejects of their
own arrivals, false accepts of a drawing of another character of the same alphabet that
claims to be them) are reported, each confirmed by a second reporter, through the
feedback store. The other half are *untouched*.

After each round three fixes are compared, on the same attempts:

- **before**: the model and templates before any feedback;
- **templates**: the fix every deployment already has, no learning: each falsely
  rejected arrival is enrolled as one more template of its character;
- **fine-tune**: ``siamkit.training.finetune`` on the reports (replay of the 400
  background training characters, distillation, re-calibration, refusal if held-out
  classes get worse), the next round starting from the new model;
- **both**: the fine-tuned model with the extra templates.

Measured: the error rate (false rejects + false accepts over all attempts, at each
model's calibrated threshold) on **future** drawings of the reported characters (the
question), on future drawings of untouched characters (no forgetting), the pair ROC AUC
of untouched characters, and last the reported arrivals themselves (memorisation).

    python bench/bench_continual.py [--rounds 2] [--chars 200] [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from types import SimpleNamespace
import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from _common import SHARED_DATA, machine, machine_line, replace_doc_section, write_json
from siamkit import TrainConfig, Verifier, fit, save_model
from siamkit.calibration import Calibrator
from siamkit.errors import SiamkitError
from siamkit.data import load_face_folder, load_omniglot
from siamkit.evaluation.metrics import verification_metrics
from siamkit.feedback import FeedbackStore
from siamkit.gallery import Gallery
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
    per_round: int = 3
    later: int = 10
    impostors: int = 3  # same-alphabet characters (faces: any other person) claiming each identity


LAYOUTS = {"omniglot": Layout(), "faces": Layout(templates=2, per_round=2, later=4, impostors=3)}


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
    return TrainConfig(encoder="conv4", embedding_dim=64, loss="triplet", miner="semi_hard", epochs=3 if quick else 6,
                       steps_per_epoch=60 if quick else 120, batch_size=64, m_per_class=4, val_fraction=0.0,
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

    def __init__(self, ev: Any, n_chars: int, rounds: int, lay: Layout) -> None:
        self.lay = lay
        g = torch.Generator().manual_seed(2)
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
        need = lay.templates + lay.per_round * rounds + lay.later
        short = [c for c in self.chars if len(self.slots[c]) < need]
        if short:
            raise SystemExit(f"{len(short)} characters have fewer than {need} drawings")
        rng = np.random.default_rng(3)
        self.claims: dict[int, list[int]] = {}  # character -> same-alphabet characters claiming to be it
        alpha_of = {c: int(alpha[self.slots[c][0]]) for c in self.chars}
        for c in self.chars:
            same_alpha = [o for o in self.chars if o != c and alpha_of[o] == alpha_of[c]]
            pool = same_alpha if len(same_alpha) >= lay.impostors else [o for o in self.chars if o != c]
            self.claims[c] = list(rng.choice(pool, size=lay.impostors, replace=False))
        self.templates = {c: self.slots[c][: lay.templates] for c in self.chars}

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


def decide(model_dir: Path, dep: Deployment, templates: dict[int, list[int]], att: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Best-template distance and decision of every attempt under a model folder's calibration.

    Args:
        model_dir: the model folder (calibrated).
        dep: the deployment.
        templates: character -> template image indices.
        att: the attempts (probe, claimed character, genuine).

    Returns:
        (distances, accepted).
    """
    v = Verifier.from_dir(model_dir)
    probe, claim, _ = att
    used = sorted(set(probe.tolist()) | {i for t in templates.values() for i in t})
    pos = {k: j for j, k in enumerate(used)}
    e = embed_all(v.network, dep.images[used])
    d = np.empty(len(probe))
    for c in set(claim.tolist()):
        rows = np.nonzero(claim == c)[0]
        q = e[[pos[int(p)] for p in probe[rows]]]
        t = e[[pos[i] for i in templates[c]]]
        d[rows] = network_pairwise(v.network, q, t).min(dim=1).values.double().numpy()
    return d, v.calibrator.decide(d)


def error_rate(accepted: np.ndarray, genuine: np.ndarray) -> dict[str, float]:
    """FRR, FAR and the overall error rate of a set of attempts."""
    fr, fa = (~accepted & genuine).sum(), (accepted & ~genuine).sum()
    return {"error": float((fr + fa) / len(genuine)), "frr": float(fr / max(1, genuine.sum())),
            "far": float(fa / max(1, (~genuine).sum())), "attempts": int(len(genuine))}


def untouched_auc(model_dir: Path, dep: Deployment) -> float:
    """Pair ROC AUC over the later drawings of the untouched characters."""
    net = load_model(model_dir)
    idx = [i for c in dep.chars if c not in dep.reported for i in dep.later(c)]
    labels = torch.tensor([c for c in dep.chars if c not in dep.reported for _ in range(dep.lay.later)])
    p = random_pairs(labels, 8000, torch.Generator().manual_seed(4))
    d = pair_distances_of_embeddings(net, embed_all(net, dep.images[idx]), p.a, p.b)
    return float(verification_metrics(d, p.same).roc_auc)


def report_mistakes(store: Path, gallery: Path, dep: Deployment, att: tuple[np.ndarray, ...], accepted: np.ndarray, rnd: int) -> int:
    """Report the round's mistakes on reported characters, each by two reporters.

    Args:
        store: the feedback store.
        gallery: the gallery of templates (the identity_verify reports read it).
        dep: the deployment.
        att: the round's attempts.
        accepted: the current system's decisions.
        rnd: the round (names the reporters).

    Returns:
        The number of mistakes reported.
    """
    probe, claim, genuine = att
    wrong = np.nonzero(accepted != genuine)[0]
    with FeedbackStore.open(store) as s:
        for k in wrong:
            for who in ("operator", "supervisor"):
                s.add(actor=f"{who}-{rnd}", kind="identity_verify", identity=f"c{claim[k]}",
                      image_a=(png(dep.images[int(probe[k])]), "png"), truth={"same": bool(genuine[k])},
                      predicted={"same": bool(accepted[k])})
    return int(len(wrong))


def faces_parts() -> tuple[Any, Any]:
    """AT&T faces at 56x46: 20 identities for the base model, 20 deployed (file order as
    time of arrival; every other deployed person may claim to be anyone)."""
    ds = load_face_folder(SHARED_DATA / "att_faces", image_size=(56, 46))
    perm = torch.randperm(len(ds.classes), generator=torch.Generator().manual_seed(5)).tolist()
    base, deployed = ds.subset(perm[:20]), ds.subset(perm[20:])
    order = torch.zeros(len(deployed), dtype=torch.long)
    for c in range(len(deployed.classes)):
        idx = torch.nonzero(deployed.labels == c).flatten()
        order[idx] = torch.arange(idx.numel())
    ev = SimpleNamespace(classes=deployed.classes, images=deployed.images, labels=deployed.labels, drawers=order,
                         image_alphabet=torch.zeros(len(deployed), dtype=torch.long))
    return base, ev


def run(out: Path, rounds: int, n_chars: int, quick: bool, steps: int, dataset: str = "omniglot") -> dict[str, Any]:
    """The whole experiment (see the module doc); returns its figures."""
    if dataset == "faces":
        bg, ev = faces_parts()
        base, replay_x, replay_y = base_model(out, bg, base_config(dataset, quick), 15, 5)
    else:
        bg = load_omniglot(SHARED_DATA / "omniglot", split="background", image_size=28)
        ev = load_omniglot(SHARED_DATA / "omniglot", split="evaluation", image_size=28)
        base, replay_x, replay_y = base_model(out, bg, base_config(dataset, quick), 400, 100)
    dep = Deployment(ev, min(n_chars, len(ev.classes)), rounds, LAYOUTS[dataset])
    gallery, store = out / "gallery.db", out / "feedback.sqlite"
    for f in (gallery, store):
        f.unlink(missing_ok=True)
    with Gallery.open(gallery, Verifier.from_dir(base)) as g:
        for c in dep.chars:
            g.enroll(f"c{c}", dep.images[dep.templates[c]])
    rep_chars = [c for c in dep.chars if c in dep.reported]
    fut_rep = dep.attempts(rep_chars, None)
    fut_unt = dep.attempts([c for c in dep.chars if c not in dep.reported], None)
    model, templates = base, {c: list(t) for c, t in dep.templates.items()}
    rows: list[dict[str, Any]] = []

    def measure(name: str, m: Path, tpl: dict[int, list[int]], rnd: int, seen: tuple[np.ndarray, ...] | None) -> None:
        r = {"round": rnd, "method": name,
             "future_reported": error_rate(decide(m, dep, tpl, fut_rep)[1], fut_rep[2]),
             "future_untouched": error_rate(decide(m, dep, tpl, fut_unt)[1], fut_unt[2]),
             "untouched_auc": untouched_auc(m, dep)}
        if seen is not None:
            r["reported_arrivals"] = error_rate(decide(m, dep, tpl, seen)[1], seen[2])
        rows.append(r)
        print(rnd, name, {k: (v["error"] if isinstance(v, dict) else v) for k, v in r.items() if k not in ("round", "method")}, flush=True)

    measure("before", base, dep.templates, 0, None)
    for rnd in range(rounds):
        arr = dep.attempts(rep_chars, rnd)
        _, acc = decide(model, dep, templates, arr)
        n_wrong = report_mistakes(store, gallery, dep, arr, acc, rnd)
        new_templates = {c: list(t) for c, t in templates.items()}
        for p, c, gen, a in zip(*arr, acc):
            if gen and not a:
                new_templates[int(c)].append(int(p))
        new_dir = out / f"round{rnd + 1}"
        cfg = FinetuneConfig(steps=steps, lr=2e-4, feedback_weight=2.0, eval_pairs=4000, seed=rnd)
        t0 = time.perf_counter()
        try:
            rep = finetune(model, store, new_dir, replay_images=replay_x, replay_labels=replay_y, gallery=gallery, config=cfg)
            accepted, held = True, rep["held_out"]
        except FinetuneRefused as e:
            accepted, held = False, e.report["held_out"]
        except SiamkitError as e:  # nothing that may teach (e.g. no mistake this round)
            accepted, held = False, {"not_run": str(e)}
        seconds = time.perf_counter() - t0
        print(f"round {rnd + 1}: {n_wrong} mistakes reported; fine-tune {'accepted' if accepted else ('not run' if 'not_run' in held else 'refused')} in {seconds:.0f} s", flush=True)
        measure("templates", model, new_templates, rnd + 1, arr)
        if accepted:
            measure("fine-tune", new_dir, templates, rnd + 1, arr)
            measure("both", new_dir, new_templates, rnd + 1, arr)
            model = new_dir
        rows[-1]["finetune"] = {"accepted": accepted, "held_out": held, "seconds": round(seconds, 1), "mistakes": n_wrong}
        templates = new_templates
    return {"rows": rows, "n_chars": len(dep.chars), "rounds": rounds, "steps": steps, "dataset": dataset,
            "layout": dataclasses.asdict(dep.lay)}


def table(res: dict[str, Any]) -> list[str]:
    """The docs table of a run."""
    lines = ["| round | fix | future, reported chars: error (FRR / FAR) | future, untouched: error | untouched AUC | reported arrivals: error |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        fr, fu = r["future_reported"], r["future_untouched"]
        seen = r.get("reported_arrivals")
        seen_txt = "" if seen is None else f"{seen['error']:.4f}"
        lines.append(f"| {r['round']} | {r['method']} | {fr['error']:.4f} ({fr['frr']:.3f} / {fr['far']:.3f}) | {fu['error']:.4f} | "
                     f"{r['untouched_auc']:.4f} | {seen_txt} |")
    return lines


def reading(res: dict[str, Any]) -> str:
    """One paragraph of what the table says (computed, so it stays true on a re-run)."""
    rows = res["rows"]
    faces = res.get("dataset") == "faces"
    what, base = ("people", "the 15 base identities") if faces else ("characters", "the background characters")
    before = rows[0]
    best = min(rows[1:], key=lambda r: r["future_reported"]["error"])
    tpl1 = next(r for r in rows if r["method"] == "templates")

    def cut(a: float, b: float) -> str:
        return f"{a:.4f} -> {b:.4f} ({100 * (b - a) / a:+.0f}%)" if a else f"{a:.4f} -> {b:.4f}"

    refused = [r["round"] for r in rows if r.get("finetune") and not r["finetune"]["accepted"]
               and "not_run" not in r["finetune"]["held_out"]]
    idle = [r["round"] for r in rows if r.get("finetune") and "not_run" in r["finetune"]["held_out"]]
    n = before["future_reported"]["attempts"]
    return (
        f"Future images of the reported {what}: {cut(before['future_reported']['error'], best['future_reported']['error'])} "
        f"with {best['method']} (round {best['round']}; {n} attempts, so one attempt is {1 / n:.3f}); the enrol-as-template "
        f"baseline gives {cut(before['future_reported']['error'], tpl1['future_reported']['error'])} after round 1. "
        f"Untouched {what}: {cut(before['future_untouched']['error'], best['future_untouched']['error'])}, "
        f"untouched pair AUC {before['untouched_auc']:.4f} -> {best['untouched_auc']:.4f}: part of the gain is general "
        f"(the fine-tune replays {base} and re-calibrates the threshold), the rest is specific to the reported {what}. "
        + (f"The fine-tune of round(s) {refused} was refused by its held-out check, so the model stayed as it was. " if refused else "")
        + (f"Round(s) {idle} had no mistake to report, so nothing was fine-tuned. " if idle else "")
        + "Adding falsely rejected images as templates trades false rejects for false accepts."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chars", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps per round")
    ap.add_argument("--out", type=Path, default=None, help="bench folder (default: a temporary folder; the base model is reused from it)")
    ap.add_argument("--quick", action="store_true", help="a smaller base-model budget")
    ap.add_argument("--dataset", choices=sorted(LAYOUTS), default="omniglot")
    ap.add_argument("--from-json", type=Path, default=None, help="rewrite the docs section from a run's JSON, run nothing")
    opts = ap.parse_args()
    if opts.from_json is not None:
        res = json.loads(opts.from_json.read_text())
        for k in ("rounds", "steps", "quick"):
            setattr(opts, k, res[k])
        opts.dataset = res.get("dataset", "omniglot")
        opts.chars = res["n_chars"]
        write_doc(res, opts, opts.from_json.name)
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out = opts.out or Path(tempfile.mkdtemp(prefix="siamkit-continual-"))
    out.mkdir(parents=True, exist_ok=True)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    res = run(out, opts.rounds, opts.chars, opts.quick, opts.steps, opts.dataset)
    m = machine()
    res.update(machine=m, load_before=load0, load_after=os.getloadavg()[0], seconds=round(time.perf_counter() - t0, 1), quick=opts.quick)
    path = write_json("continual" if opts.dataset == "omniglot" else f"continual_{opts.dataset}", res)
    write_doc(res, opts, path.name)


def write_doc(res: dict[str, Any], opts: argparse.Namespace, name: str) -> None:
    """The docs section of a run.

    Args:
        res: the run's figures (as in its JSON).
        opts: the command-line options it ran with.
        name: the JSON file's name.

    Returns:
        None.
    """
    m, load0 = res["machine"], res["load_before"]
    lay = Layout(**res["layout"]) if "layout" in res else LAYOUTS["omniglot"]
    faces = opts.dataset == "faces"
    cmd = (f"python bench/bench_continual.py --dataset {opts.dataset} --rounds {opts.rounds} --chars {opts.chars} "
           f"--steps {opts.steps}" + (" --quick" if opts.quick else ""))
    who = "AT&T identities (20 others train the base model)" if faces else "evaluation characters"
    claim = "other people" if faces else "same-alphabet characters"
    body = [f"{machine_line(m)}; load average {load0:.1f}. `{cmd}` ({name}, {res['seconds']:.0f} s). "
            f"{res['n_chars']} {who} (half reported), {lay.templates} templates each, {lay.per_round} arrivals per round, "
            f"the last {lay.later} images as the future; every attempt is one image claiming its own identity or claimed by "
            f"{lay.impostors} {claim}; mistakes reported by two reporters each.", "", *table(res), "", reading(res)]
    title = "Continuous learning: the next mistakes" + (" (faces)" if faces else "")
    replace_doc_section(title, "\n".join(body))


if __name__ == "__main__":
    main()

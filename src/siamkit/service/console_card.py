"""What the console's Model and Feedback pages show: the model card, where each decision's
threshold comes from, the report plots of the model folder, and the ``siamkit finetune``
command for the feedback collected.

The card is read from the served model folder only: ``config.json`` (network, the
training configuration kept under ``extra``), ``calibration.json`` (through the loaded
:class:`~siamkit.calibration.Calibrator`), and, when they exist, ``metrics.json`` and the
report plots (:data:`PLOT_NAMES`) of the folder, its ``report/`` sub-folder, and, for a
run's ``RUN/model`` folder, of ``RUN`` and ``RUN/report`` (with ``RUN/split.json``). A plot
is served by its name from that fixed list, never by a path a client sends.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from ..errors import SiamkitError
from ..gallery.selfcal import decision_calibrators, load_gallery_calibration

__all__ = ["PLOT_NAMES", "report_folders", "plot_path", "model_card", "score_distribution", "threshold_sources", "finetune_command"]

#: the plots a model card may show (written by ``siamkit evaluate --report``, training and the demo)
PLOT_NAMES = ("distances.png", "roc.png", "det.png", "confusion.png", "embeddings.png", "training.png", "example.png")
#: at most this many class names of the training split are listed
MAX_CLASSES_SHOWN = 40


def report_folders(model_dir: Path) -> list[Path]:
    """The folders a model's report files are looked for in, most specific first.

    Args:
        model_dir: the served model folder.

    Returns:
        The model folder, its ``report/``, and for ``RUN/model``: ``RUN``, ``RUN/report``
        (only those that exist).
    """
    model_dir = Path(model_dir)
    out = [model_dir, model_dir / "report"]
    if model_dir.name == "model":
        out += [model_dir.parent, model_dir.parent / "report"]
    return [p for p in out if p.is_dir()]


def plot_path(model_dir: Path, name: str) -> Path | None:
    """The file of one of :data:`PLOT_NAMES`, from the first report folder that has it.

    Args:
        model_dir: the served model folder.
        name: a plot's name (anything else: None).

    Returns:
        The file, or None.
    """
    if name not in PLOT_NAMES:
        return None
    for folder in report_folders(model_dir):
        if (folder / name).is_file():
            return folder / name
    return None


def _scalars(d: Any, depth: int = 2) -> Any:
    """A JSON value without its long lists (curves, quantiles): scalars and short lists, ``depth`` levels deep."""
    if isinstance(d, dict):
        if depth < 0:
            return None
        return {str(k): v for k, v in ((k, _scalars(v, depth - 1)) for k, v in d.items()) if v is not None}
    if isinstance(d, list):
        return d if len(d) <= 8 and all(not isinstance(x, (dict, list)) for x in d) else None
    return d


def _metrics(model_dir: Path) -> dict[str, Any] | None:
    for folder in report_folders(model_dir):
        f = folder / "metrics.json"
        if f.is_file():
            try:
                m = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(m, dict):
                return {"file": f.relative_to(folder.parent).as_posix(), "values": _scalars(m, 3)}
    return None


def _split(model_dir: Path) -> dict[str, Any] | None:
    from ..training.split_record import SplitRecord

    for folder in report_folders(model_dir):
        try:
            rec = SplitRecord.load(folder)
        except SiamkitError:
            continue
        if rec is not None:
            return {
                "n_train_classes": len(rec.train_classes), "n_val_classes": len(rec.val_classes),
                "train_classes": rec.train_classes[:MAX_CLASSES_SHOWN], "val_classes": rec.val_classes[:MAX_CLASSES_SHOWN],
                "source": rec.source, "val_data": None if rec.val_data is None else Path(rec.val_data).name,
            }
    return None


def _calibration(cal: Any) -> dict[str, Any] | None:
    if cal is None:
        return None
    d = cal.to_dict()
    scores = d.pop("scores", None)
    d.pop("confidence", None)
    if scores:
        d["scores"] = {k: scores.get(k) for k in ("data", "n_impostor", "n_genuine", "n_classes", "n_false_accepts", "n_false_rejects")}
        d["scores"]["far"] = cal.scores_.far
    return d


def score_distribution(cal: Any) -> dict[str, Any] | None:
    """The distance distributions the calibration was fitted on, as quantiles (its summary).

    Args:
        cal: the model's calibrator (None: uncalibrated).

    Returns:
        ``{"data", "threshold", "levels", "impostor", "genuine"}`` (``genuine`` empty without
        genuine pairs), or None without a calibration or its summary (an older file).
    """
    sc = None if cal is None else getattr(cal, "scores_", None)
    if sc is None:
        return None
    return {"data": sc.data, "threshold": float(cal.threshold_), "levels": list(sc.levels),
            "impostor": list(sc.impostor_quantiles), "genuine": list(sc.genuine_quantiles)}


def _model_source(cal: Any) -> str:
    far = f", target FAR {cal.target_far:g}" if cal.method_ == "far" else ""
    return f"the model's calibration, fitted on '{cal.fitted_on_}' ({cal.method_}{far}; {cal.n_pos_} genuine / {cal.n_neg_} impostor pairs)"


def threshold_sources(verifier_cal: Any, gallery: Any) -> dict[str, dict[str, Any]]:
    """The threshold of each decision and where it comes from (what the endpoints use).

    Args:
        verifier_cal: the model's :class:`~siamkit.calibration.Calibrator` (None: uncalibrated).
        gallery: the open gallery (None: none).

    Returns:
        ``{"verify" | "identity_verify" | "identify": {"threshold": float | None, "source": str}}``.
    """
    none = "not calibrated: no decision (run `siamkit calibrate`)"
    out = {"verify": {"threshold": None if verifier_cal is None else float(verifier_cal.threshold_),
                      "source": none if verifier_cal is None else _model_source(verifier_cal)}}
    if gallery is None:
        return out
    ver, ident = decision_calibrators(gallery)
    own = load_gallery_calibration(gallery)
    model_cal = gallery.calibrator
    if own is not None:
        src = (f"the gallery's own calibration at target FAR {own['target_far']:g} "
               f"({own['n_impostor_trials']} impostor trials of {own['n_identities']} identities)")
        id_src = src if (own.get("identification") or {}).get("threshold") is not None else None
    else:
        src = none if model_cal is None else _model_source(model_cal)
        id_src = None
    if id_src is None and model_cal is not None and own is None and model_cal.identification_threshold is not None:
        id_src = "the model's identification calibration (`siamkit calibrate --mode identification`)"
    out["identity_verify"] = {"threshold": None if ver is None else float(ver.threshold_), "source": src}
    out["identify"] = {"threshold": None if ident is None else float(ident.threshold_), "source": id_src or src}
    return out


def model_card(state: Any) -> dict[str, Any]:
    """The console's model card of a running service.

    Args:
        state: the :class:`~siamkit.service.deps.ServiceState`.

    Returns:
        JSON-able: ``model`` (fingerprint, network), ``training`` (configuration, split),
        ``calibration`` (the model's, without its curves), ``score_distribution``
        (:func:`score_distribution`), ``gallery_calibration``,
        ``thresholds`` (:func:`threshold_sources`), ``metrics`` (of ``metrics.json``),
        ``plots`` (names of :data:`PLOT_NAMES` found).
    """
    from ..io import read_config

    model_dir = Path(state.settings.model)
    cfg = read_config(model_dir)
    extra = cfg.get("extra") or {}
    training = {k: _scalars(extra[k], 2) for k in ("train_config", "train", "finetune", "epoch", "demo", "text") if k in extra}
    gallery = state.gallery
    own = load_gallery_calibration(gallery) if gallery is not None else None
    return {
        "model": {"fingerprint": state.fingerprint, "folder": model_dir.name, "siamkit_version": cfg.get("siamkit_version"),
                  "network": _scalars(cfg.get("network"), 3)},
        "training": training or None,
        "split": _split(model_dir),
        "calibration": _calibration(state.verifier.calibrator),
        "score_distribution": score_distribution(state.verifier.calibrator),
        "gallery_calibration": None if own is None else {k: v for k, v in own.items() if k != "confidence"},
        "thresholds": threshold_sources(state.verifier.calibrator, gallery),
        "metrics": _metrics(model_dir),
        "plots": [n for n in PLOT_NAMES if plot_path(model_dir, n) is not None],
    }


def finetune_command(state: Any, *, min_reporters: int = 2) -> str:
    """The ``siamkit finetune`` command line for this service's model and feedback store.

    Args:
        state: the :class:`~siamkit.service.deps.ServiceState` (with a feedback store).
        min_reporters: the ``--min-reporters`` to show.

    Returns:
        One shell line (paths quoted); ``--replay`` is left as ``TRAINING_DATA`` (the
        original training images, one sub-folder per class: the model folder does not
        record where they are).
    """
    model = Path(state.settings.model)
    args = ["siamkit", "finetune", "--model", str(model), "--feedback", str(state.feedback.path)]
    gallery = state.settings.gallery
    if gallery is not None and not str(gallery).startswith(("postgresql://", "postgres://")):
        args += ["--gallery", str(gallery)]
    args += ["--out", str(model.with_name(model.name + "-finetuned")), "--min-reporters", str(int(min_reporters))]
    return shlex.join(args) + " --replay TRAINING_DATA"

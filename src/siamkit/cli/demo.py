"""``siamkit demo``: one-shot recognition of unseen Omniglot characters (or ``--dataset digits``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ._common import clean_errors, fail

__all__ = ["demo"]

DATASETS = ("omniglot", "digits")


@clean_errors
def demo(
    out: Path = typer.Option(Path("siamkit-demo"), help="Report folder."),
    dataset: str = typer.Option("omniglot", help="omniglot (one-shot on unseen alphabets) or digits (scikit-learn's 8x8 digits)."),
    steps: Optional[int] = typer.Option(None, help="Training steps (omniglot; default 1000, about a minute on 2 cores)."),
    minutes: Optional[float] = typer.Option(None, help="A wall-clock training budget instead of --steps (omniglot)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (digits; default 20)."),
    seed: int = typer.Option(0, help="Random seed."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a terminal)."),
) -> None:
    """Train a Siamese network, then test it on characters (or digits) it never saw, next to raw pixels."""
    if dataset not in DATASETS:
        fail(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if dataset == "digits":
        if steps is not None or minutes is not None:
            fail("--steps and --minutes are for the omniglot demo; the digits demo takes --epochs")
        if epochs is not None and epochs < 1:
            fail(f"--epochs must be >= 1, got {epochs}")
        _digits(out, epochs or 20, seed, progress)
        return
    if epochs is not None:
        fail("--epochs is for --dataset digits; the omniglot demo takes --steps or --minutes")
    from ..demo import run_omniglot_demo

    result = run_omniglot_demo(out, steps=steps, minutes=minutes, seed=seed, progress=progress)
    _print_omniglot(result, out)


def _print_omniglot(r: dict[str, Any], out: Path) -> None:
    m, b = r["model"], r["baseline"]
    typer.echo(f"\nsiamkit demo: one-shot recognition of characters from 20 Omniglot alphabets the network never saw "
               f"({r['test_images']:,} drawings of 659 characters)")
    typer.echo(f"{'':26}{'20-way 1-shot':>15}{'5-way 1-shot':>14}{'official 20 runs':>18}{'ROC AUC':>9}{'EER':>8}")
    for name, x in (("trained Siamese network", m), ("raw pixels (no training)", b)):
        typer.echo(f"{name:26}{x['one_shot_accuracy']:>8.3f} ±{x['one_shot_ci95']:.3f}{x['five_way_accuracy']:>7.3f} ±{x['five_way_ci95']:.3f}"
                   f"{x['official_20way']:>18.3f}{x['roc_auc']:>9.4f}{x['eer']:>8.4f}")
    g = r["gallery"]
    answers = ", ".join(f"{p['decision']}{'' if p['correct'] else ' (wrong)'}" for p in g["probes"])
    typer.echo(f"gallery of {g['enrolled']} characters enrolled from one drawing each; new drawings -> {answers}")
    typer.echo(f"trained {r['train_steps']} steps in {r['train_seconds']:.0f} s; report: {out}/ "
               "(README.md, metrics.json, example.png, roc.png, distances.png, embeddings.png, model/)")


def _digits(out: Path, epochs: int, seed: int, progress: Optional[bool]) -> None:
    from ..demo import run_demo

    result = run_demo(out, epochs=epochs, seed=seed, progress=progress)
    m, b = result["model"], result["baseline"]
    typer.echo(f"\nsiamkit demo: digits 0-6 for training, unseen digits 7-9 for testing ({result['test_images']} images)")
    typer.echo(f"{'':28}{'ROC AUC':>10}{'EER':>9}{'3-way 1-shot':>15}")
    typer.echo(f"{'trained Siamese network':28}{m['roc_auc']:>10.4f}{m['eer']:>9.4f}{m['one_shot_accuracy']:>15.4f}")
    typer.echo(f"{'raw pixels (no training)':28}{b['roc_auc']:>10.4f}{b['eer']:>9.4f}{b['one_shot_accuracy']:>15.4f}")
    typer.echo(f"trained in {result['train_seconds']:.1f} s; report: {out}/ (metrics.json, roc.png, distances.png, embeddings.png, model/)")

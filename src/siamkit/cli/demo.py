"""``siamkit demo``: train on scikit-learn's digits and report on unseen digits."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import clean_errors

__all__ = ["demo"]


@clean_errors
def demo(
    out: Path = typer.Option(Path("siamkit-demo"), help="Report folder."),
    epochs: int = typer.Option(20, help="Training epochs."),
    seed: int = typer.Option(0, help="Random seed."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a terminal)."),
) -> None:
    """Train on scikit-learn's handwritten digits 0-6 and report on the unseen digits 7-9."""
    from ..demo import run_demo

    result = run_demo(out, epochs=epochs, seed=seed, progress=progress)
    m, b = result["model"], result["baseline"]
    typer.echo(f"\nsiamkit demo: digits 0-6 for training, unseen digits 7-9 for testing ({result['test_images']} images)")
    typer.echo(f"{'':28}{'ROC AUC':>10}{'EER':>9}{'3-way 1-shot':>15}")
    typer.echo(f"{'trained Siamese network':28}{m['roc_auc']:>10.4f}{m['eer']:>9.4f}{m['one_shot_accuracy']:>15.4f}")
    typer.echo(f"{'raw pixels (no training)':28}{b['roc_auc']:>10.4f}{b['eer']:>9.4f}{b['one_shot_accuracy']:>15.4f}")
    typer.echo(f"trained in {result['train_seconds']:.1f} s; report: {out}/ (metrics.json, roc.png, distances.png, embeddings.png, model/)")

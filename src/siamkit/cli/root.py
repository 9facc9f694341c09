"""The root ``siamkit`` app: every command and group mounted in the order ``--help`` lists them."""

from __future__ import annotations

from ._common import command_group
from .anomaly import anomaly_app
from .calibration import gallery_calibrate
from .demo import demo
from .export import export
from .feedback import feedback_app
from .gallery import gallery_app
from .models import calibrate, compare, evaluate, summary
from .recipes import recipes_app
from .serve import keys_app, serve
from .train import finetune, train

__all__ = ["app", "main"]

app = command_group("siamkit: Siamese networks for similarity learning.")

for _command in (demo, train, summary, compare, calibrate, evaluate, export, serve, finetune):
    app.command()(_command)
gallery_app.command("calibrate")(gallery_calibrate)
app.add_typer(recipes_app, name="recipes")
app.add_typer(gallery_app, name="gallery")
app.add_typer(anomaly_app, name="anomaly")
app.add_typer(keys_app, name="keys")
app.add_typer(feedback_app, name="feedback")


def main() -> None:
    """Entry point of the ``siamkit`` command."""
    app(prog_name="siamkit")

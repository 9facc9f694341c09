"""``siamkit recipes`` (list the shipped recipes) and ``siamkit recipes show NAME``."""

from __future__ import annotations

from typing import Optional

import typer

from ._common import clean_errors

__all__ = ["recipes_app"]

recipes_app = typer.Typer(
    add_completion=False, invoke_without_command=True, pretty_exceptions_enable=False,
    help="Training recipes shipped with siamkit (`siamkit train --recipe NAME`).",
)


@recipes_app.callback()
@clean_errors
def list_cmd(ctx: typer.Context) -> None:
    """List the shipped recipes: name, task, image size and description."""
    if ctx.invoked_subcommand is not None:
        return
    from ..training.recipes import list_recipes, list_text_recipes

    rows = list_recipes()
    texts = list_text_recipes()
    width = max(len(r.name) for r in [*rows, *texts])
    for r in rows:
        size = "x".join(map(str, r.input.image_size)) if r.input.image_size else "first image"
        extra = [f"preprocess {'+'.join(s['kind'] for s in r.input.preprocess)}"] if r.input.preprocess else []
        extra += [f"tta {r.input.tta}"] if r.input.tta else []
        typer.echo(f"{r.name:<{width}}  {r.task:<18}  {size:<9}  {r.description}" + (f" ({'; '.join(extra)})" if extra else ""))
    for t in texts:
        typer.echo(f"{t.name:<{width}}  {'text':<18}  {f'{t.max_length} tok':<9}  {t.description}"
                   + (f" (pretrained {t.pretrained})" if t.pretrained else ""))
    typer.echo("\n`siamkit recipes show NAME` prints one; `siamkit train --recipe NAME|FILE.toml --data DIR` runs it.")


@recipes_app.command("show")
@clean_errors
def show_cmd(name: str = typer.Argument(..., help="A shipped recipe's name, or a .toml file."),
             check: Optional[bool] = typer.Option(True, "--check/--no-check", help="Parse and validate it first.")) -> None:
    """Print a recipe's TOML (the long form of `siamkit train`'s options)."""
    from ..training.recipes import load_recipe, load_text_recipe, recipe_task, recipe_text

    if check:
        (load_text_recipe if recipe_task(name) == "text" else load_recipe)(name)
    typer.echo(recipe_text(name), nl=False)

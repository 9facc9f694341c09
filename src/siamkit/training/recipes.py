"""Recipes as files: a TOML file holds a task, the model's input recipe and every
:class:`~siamkit.training.config.TrainConfig` field, parsed once into a :class:`Recipe`.

Shipped recipes (``siamkit/recipes/*.toml``: faces, signatures, omniglot, digits) are the
ones the documented figures were measured with (the bench scripts load them); a user's
own file has the same form::

    [recipe]
    name = "faces"
    description = "one line"
    task = "classes"            # or "signatures" / "signatures-genuine" (train --task)
    [input]
    image_size = [56, 46]       # height, width
    channels = 1
    preprocess = [ { kind = "crop", fraction = 0.9 } ]   # ordered steps, [] = resize only
    tta = "none"                # or "shift" / "flip" / "shift+flip"
    [data]                      # optional: how the training folder is read
    rotations = [0, 90, 180, 270]   # each 90-degree rotation of a class is a new class
    [train]
    encoder = "conv4"           # any TrainConfig field
    encoder_kwargs = { width = 32 }
    patience = "none"           # TOML has no null: "none" sets an optional field to None

An unknown table or key is refused with a :class:`~siamkit.errors.RecipeError` naming the
key and the file.
"""

from __future__ import annotations

import sys
import typing
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import RecipeError, SiamkitError
from ..input_spec import InputSpec, parse_tta
from .config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "Recipe", "RecipeInput", "TASKS", "TextRecipe", "list_recipes", "list_text_recipes", "load_recipe", "load_text_recipe",
    "recipe_task", "recipe_text",
]

#: what ``siamkit train --task`` takes (and a recipe's ``task``)
TASKS = ("classes", "signatures", "signatures-genuine")
_SECTIONS = {"recipe": ("name", "description", "task"), "input": ("image_size", "channels", "preprocess", "tta"),
             "data": ("rotations",)}
_INPUT_FIELDS = ("preprocess", "tta")  # TrainConfig fields that live in [input]


@dataclass(frozen=True)
class RecipeInput:
    """A recipe's ``[input]`` table.

    Attributes:
        image_size: (height, width) the images are prepared to; None = the first image's.
        channels: 1 or 3; None = from the files.
        preprocess: the preprocessing steps' JSON form (``{"kind": ...}`` mappings).
        tta: the test-time augmentation, or None.
    """

    image_size: tuple[int, int] | None = None
    channels: int | None = None
    preprocess: tuple[dict[str, Any], ...] = ()
    tta: str | None = None


@dataclass
class Recipe:
    """A parsed recipe file.

    Attributes:
        name: the recipe's name.
        description: one line.
        task: a :data:`TASKS` value.
        input: the ``[input]`` table.
        train: the training options (the input's ``preprocess`` and ``tta`` included).
        source: the file it was read from.
        rotations: ``[data] rotations``: the training classes once per rotation, each a new
            class (``(0,)``: none; :mod:`siamkit.data.class_rotations`).
    """

    name: str
    description: str
    task: str
    input: RecipeInput
    train: TrainConfig
    source: Path = field(default_factory=Path)
    rotations: tuple[int, ...] = (0,)

    def input_spec(self) -> InputSpec:
        """The input spec a model trained with this recipe gets (when the size is set)."""
        h, w = self.input.image_size or (None, None)
        c = self.input.channels
        shape = (c, h, w) if None not in (c, h, w) else ()
        return InputSpec(shape=shape, channels=c, height=h, width=w).with_recipe(self.input.preprocess, self.input.tta)  # type: ignore[arg-type]


def _shipped() -> Any:
    return resources.files("siamkit").joinpath("recipes")


def list_recipes() -> list[Recipe]:
    """The recipes shipped with siamkit, by name.

    Returns:
        The parsed recipes.
    """
    names = sorted(p.name[: -len(".toml")] for p in _shipped().iterdir() if p.name.endswith(".toml"))
    return [load_recipe(n) for n in names if recipe_task(n) != "text"]


def list_text_recipes() -> list[TextRecipe]:
    """The text-pair recipes shipped with siamkit (``task = "text"``), by name.

    Returns:
        The parsed text recipes.
    """
    names = sorted(p.name[: -len(".toml")] for p in _shipped().iterdir() if p.name.endswith(".toml"))
    return [load_text_recipe(n) for n in names if recipe_task(n) == "text"]


def _toml(name_or_path: str | Path) -> tuple[dict[str, Any], Path | None, str]:
    text, path = _locate(name_or_path)
    where = str(path)
    try:
        return tomllib.loads(text), path, where
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{where} is not valid TOML: {e}") from None


def recipe_task(name_or_path: str | Path) -> str:
    """The ``[recipe] task`` of a recipe (``classes`` when unset), without validating the rest.

    Args:
        name_or_path: a shipped recipe's name or a file path.

    Returns:
        The task.

    Raises:
        RecipeError: no such recipe or file, or bad TOML.
    """
    doc, _, _ = _toml(name_or_path)
    meta = doc.get("recipe", {})
    return str(meta.get("task", "classes")) if isinstance(meta, dict) else "classes"


@dataclass(frozen=True)
class TextRecipe:
    """A text-pair recipe (``task = "text"``): run by ``siamkit train --recipe NAME``.

    Attributes:
        name, description: as in ``[recipe]``.
        max_length: the most tokens per text.
        pretrained: a pretrained sentence encoder (local folder or hub name), or None for a
            from-scratch twin.
        train: the ``[train]`` options (keys of :class:`~siamkit.training.text.TextTrainConfig`,
            plus ``val_fraction``, ``encoder``, ``embedding_dim`` and ``encoder_options``, a
            table of :func:`~siamkit.text.scratch_twin` arguments for a from-scratch twin).
        source: the file it was read from.
    """

    name: str
    description: str
    max_length: int
    pretrained: str | None
    train: dict[str, Any]
    source: Path = field(default_factory=Path)


_TEXT_INPUT = ("max_length", "pretrained")
_TEXT_EXTRA = ("val_fraction", "validation", "encoder", "embedding_dim", "encoder_options")


def load_text_recipe(name_or_path: str | Path) -> TextRecipe:
    """Read a text-pair recipe, refusing unknown tables and keys (named with the file).

    Args:
        name_or_path: a shipped recipe's name (``"sts"``) or a file path.

    Returns:
        The parsed recipe.

    Raises:
        RecipeError: not a text recipe, an unknown table or key, or a bad max_length.
    """
    from .text import TextTrainConfig

    doc, path, where = _toml(name_or_path)
    if recipe_task(name_or_path) != "text":
        raise RecipeError(f"{where} is not a text recipe ([recipe] task = \"text\")")
    for table in doc:
        if table not in ("recipe", "input", "train") or not isinstance(doc[table], dict):
            raise RecipeError(f"unknown table [{table}] in {where}; a recipe has [recipe], [input] and [train]")
    allowed = {"recipe": _SECTIONS["recipe"], "input": _TEXT_INPUT,
               "train": tuple(f.name for f in fields(TextTrainConfig)) + _TEXT_EXTRA}
    for table, keys in allowed.items():
        for key in doc.get(table, {}):
            if key not in keys:
                raise RecipeError(f"unknown key {key!r} in [{table}] of {where}; [{table}] takes {', '.join(keys)}")
    inp, meta = doc.get("input", {}), doc.get("recipe", {})
    max_length = inp.get("max_length", 128)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise RecipeError(f"[input] max_length in {where} must be a positive integer, got {max_length!r}")
    name = meta.get("name", path.stem if path is not None else str(name_or_path))
    return TextRecipe(str(name), str(meta.get("description", "")), max_length, inp.get("pretrained"),
                      dict(doc.get("train", {})), path or Path())


def _locate(name_or_path: str | Path) -> tuple[str, Path | None]:
    """(the file's text, its path) for a shipped name or a file path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix.lower() == ".toml" or path.is_file() or "/" in text:
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        return path.read_text(encoding="utf-8"), path
    shipped = _shipped().joinpath(f"{text}.toml")
    if not shipped.is_file():
        names = sorted(p.name[: -len(".toml")] for p in _shipped().iterdir() if p.name.endswith(".toml"))
        raise RecipeError(f"unknown recipe {text!r}; shipped recipes: {', '.join(names)} (or give a .toml file)")
    return shipped.read_text(encoding="utf-8"), Path(str(shipped))


def recipe_text(name_or_path: str | Path) -> str:
    """The TOML text of a shipped recipe or a recipe file (``siamkit recipes show``).

    Args:
        name_or_path: a shipped recipe's name or a file path.

    Returns:
        The file's text.

    Raises:
        RecipeError: no such recipe or file.
    """
    return _locate(name_or_path)[0]


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read a shipped recipe (``"faces"``) or a recipe file (``"my.toml"``).

    Args:
        name_or_path: a shipped recipe's name or a file path.

    Returns:
        The parsed, validated recipe.

    Raises:
        RecipeError: no such recipe or file, bad TOML, an unknown table or key (named
            with the file), a value of the wrong type, or inconsistent options.
    """
    text, path = _locate(name_or_path)
    where = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{where} is not valid TOML: {e}") from None
    if isinstance(doc.get("recipe"), dict) and doc["recipe"].get("task") == "text":
        raise RecipeError(f"{where} is a text recipe: it runs with `siamkit train --recipe` (load_text_recipe)")
    for table in doc:
        if table not in (*_SECTIONS, "train"):
            raise RecipeError(f"unknown table [{table}] in {where}; a recipe has [recipe], [input], [data] and [train]")
        if not isinstance(doc[table], dict):
            raise RecipeError(f"{table} in {where} must be a table ([{table}])")
    for table, keys in _SECTIONS.items():
        for key in doc.get(table, {}):
            if key not in keys:
                raise RecipeError(f"unknown key {key!r} in [{table}] of {where}; [{table}] takes {', '.join(keys)}")
    meta, inp = doc.get("recipe", {}), _parse_input(doc.get("input", {}), where)
    task = meta.get("task", "classes")
    if task not in TASKS:
        raise RecipeError(f"[recipe] task {task!r} in {where}; choose one of {', '.join(TASKS)}")
    train = _parse_train(doc.get("train", {}), inp, where)
    name = meta.get("name", path.stem if path is not None else str(name_or_path))
    rotations = _parse_rotations(doc.get("data", {}).get("rotations", [0]), where)
    return Recipe(str(name), str(meta.get("description", "")), task, inp, train, path or Path(), rotations)


def _parse_rotations(value: Any, where: str) -> tuple[int, ...]:
    from ..data.class_rotations import check_rotations

    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise RecipeError(f"[data] rotations in {where} must be a list of degrees, e.g. [0, 90, 180, 270], got {value!r}")
    try:
        return check_rotations(value)
    except ValueError as e:
        raise RecipeError(f"[data] of {where}: {e}") from None


def _parse_input(d: dict[str, Any], where: str) -> RecipeInput:
    size = d.get("image_size")
    if size is not None:
        if isinstance(size, int) and not isinstance(size, bool):
            size = [size, size]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
            raise RecipeError(f"[input] image_size in {where} must be [height, width] of positive integers, got {size!r}")
        size = (size[0], size[1])
    channels = d.get("channels")
    if channels is not None and channels not in (1, 3):
        raise RecipeError(f"[input] channels in {where} must be 1 or 3, got {channels!r}")
    steps = d.get("preprocess", [])
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise RecipeError(f"[input] preprocess in {where} must be a list of tables {{ kind = ... }}, got {steps!r}")
    try:
        tta = parse_tta(d.get("tta"))
        InputSpec().with_recipe(steps, tta)  # every step kind and field checked here
    except (TypeError, ValueError) as e:
        raise RecipeError(f"[input] of {where}: {e}") from None
    return RecipeInput(size, channels, tuple(dict(s) for s in steps), tta)


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _parse_train(d: dict[str, Any], inp: RecipeInput, where: str) -> TrainConfig:
    hints = _field_types()
    known = {f.name: f for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    for key, value in d.items():
        if key in _INPUT_FIELDS:
            raise RecipeError(f"{key!r} in [train] of {where} belongs in [input]")
        if key not in known:
            raise RecipeError(f"unknown key {key!r} in [train] of {where}; see `siamkit recipes show faces` or TrainConfig")
        values[key] = _train_value(key, value, hints[key], known[key], where)
    values["preprocess"] = [dict(s) for s in inp.preprocess]
    values["tta"] = inp.tta
    try:
        return TrainConfig(**values)
    except SiamkitError as e:
        raise RecipeError(f"[train] of {where}: {e}") from None


def _train_value(key: str, value: Any, hint: Any, f: Any, where: str) -> Any:
    """A [train] value checked against the field's type (``"none"`` for an optional field)."""
    optional = type(None) in typing.get_args(hint)
    if value == "none" and optional:
        return None
    default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    if default is None:  # optional without a typed default: take the hint's other type
        default = next((t() for t in typing.get_args(hint) if t is not type(None) and t in (int, float, str, bool)), value)
    ok = _same_kind(value, default)
    if not ok:
        want = "a list" if isinstance(default, tuple) else type(default).__name__
        alt = ' or "none"' if optional else ""
        raise RecipeError(f"[train] {key} in {where} must be {want}{alt}, got {value!r}")
    return tuple(value) if isinstance(default, tuple) else value


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, list)
    return isinstance(value, type(default))

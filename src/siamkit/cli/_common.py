"""What every ``siamkit`` command shares: the error edge, logging, small option parsers.

Bad input ends with one line ``error: ...`` on stderr and exit code 2, never a
traceback (set ``SIAMKIT_DEBUG=1`` to see one); an unexpected exception ends with one
line and exit code 1. Every command is wrapped in :func:`clean_errors`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any, NoReturn, Optional, TypeVar

import typer

from ..errors import SiamkitError

__all__ = [
    "FEEDBACK_STORE",
    "JSON_OUT",
    "clean_errors",
    "command_group",
    "echo_json",
    "fail",
    "gallery_location",
    "parse_json_object",
    "parse_shape",
    "parse_size",
    "setup_logging",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The ``--json`` flag of the commands that can print JSON instead of text.
JSON_OUT = typer.Option(False, "--json", help="Print JSON.")
#: ``--feedback``: the feedback store of ``siamkit feedback ...`` and ``siamkit finetune``.
def gallery_location(value: str) -> Any:
    """``--gallery`` / ``--feedback`` / ``--keys``: a PostgreSQL URL as given, else a file
    Path (the library's rule, imported only when the option is parsed: ``--help`` stays light)."""
    from ..gallery.backend import gallery_location as parse

    return parse(value)


FEEDBACK_STORE = typer.Option(
    ..., "--feedback", parser=gallery_location, metavar="FILE|URL",
    help="The feedback store (a SQLite file, created if missing, or postgresql://...).",
)


def command_group(help: str) -> typer.Typer:
    """A Typer app for ``siamkit`` or one of its groups (no completion, no rich tracebacks).

    Args:
        help: the group's help line.

    Returns:
        The app; commands and sub-groups are added to it by the caller.
    """
    return typer.Typer(add_completion=False, no_args_is_help=True, help=help, pretty_exceptions_enable=False)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: MSG`` on stderr and exit with ``code``.

    Args:
        msg: the one-line message.
        code: the exit code (2: bad input, 1: unexpected, 130: interrupted).

    Returns:
        Never: raises :class:`typer.Exit`.
    """
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def clean_errors(fn: F) -> F:
    """Turn user errors into one line on stderr and a non-zero exit.

    :class:`~siamkit.errors.SiamkitError` (and its subclasses), missing files and
    permission errors exit with 2, Ctrl-C with 130, anything else with 1 (its type
    named). ``SIAMKIT_DEBUG=1`` lets every exception through with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("SIAMKIT_DEBUG"):
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (SiamkitError, FileNotFoundError, NotADirectoryError, PermissionError, FloatingPointError) as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as e:  # noqa: BLE001 - the CLI edge: report, never a traceback
            fail(f"unexpected {type(e).__name__}: {e} (set SIAMKIT_DEBUG=1 for the traceback)", 1)

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: bool) -> None:
    """INFO logging with ``--verbose``, else WARNING, as ``LEVEL logger: message``."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def echo_json(data: Any, *, sort_keys: bool = True, err: bool = False) -> None:
    """Print ``data`` as indented JSON.

    Args:
        data: anything :func:`json.dumps` accepts.
        sort_keys: sort the keys (the gallery and feedback commands); False keeps their order.
        err: print on stderr instead of stdout.

    Returns:
        None.
    """
    typer.echo(json.dumps(data, indent=2, sort_keys=sort_keys), err=err)


def parse_shape(text: str) -> tuple[int, ...]:
    """``--input-shape``: positive integers separated by commas or ``x`` (``1,105,105``, ``28x28``).

    Raises:
        SiamkitError: not integers, or not all positive.
    """
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise SiamkitError(f"--input-shape must be integers like 1,105,105, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise SiamkitError(f"--input-shape must be positive integers like 1,105,105, got {text!r}")
    return shape


def parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """``--image-size``: ``SIDE`` or ``H,W``; None stays None (the first image's size).

    Raises:
        SiamkitError: not one or two positive integers.
    """
    if text is None:
        return None
    shape = parse_shape(text)
    if len(shape) == 1:
        return (shape[0], shape[0])
    if len(shape) == 2:
        return (shape[0], shape[1])
    raise SiamkitError(f"--image-size takes SIDE or H,W, got {text!r}")


def parse_json_object(text: str, *, option: str, example: Optional[str] = None) -> dict[str, Any]:
    """An option's value that must be a JSON object (``--metadata``, ``--predicted``).

    Args:
        text: the option's value.
        option: the option's name, for the messages.
        example: a valid value; when given, the messages show it and name the type given.

    Returns:
        The parsed object.

    Raises:
        SiamkitError: not JSON, or JSON but not an object.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        like = f" like {example!r}" if example else ""
        raise SiamkitError(f"{option} must be a JSON object{like} ({e})") from None
    except RecursionError:
        raise SiamkitError(f"{option} nests too deeply to be read") from None
    if not isinstance(value, dict):
        got = f", got {type(value).__name__}" if example else ""
        raise SiamkitError(f"{option} must be a JSON object{got}")
    return value

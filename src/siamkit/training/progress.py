"""The fit loop's progress bar: a rich bar per epoch on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """A rich progress bar on a terminal; nothing otherwise (a context manager).

    Args:
        enabled: show it (None = only when stderr is a terminal).
    """

    def __init__(self, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), transient=False,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def task(self, description: str, total: int) -> Any:
        """Start a bar.

        Args:
            description: its label.
            total: the number of steps.

        Returns:
            Its handle for :meth:`advance` (None when disabled).
        """
        return self._bar.add_task(description, total=total, info="") if self._bar else None

    def advance(self, task: Any, info: str = "") -> None:
        """Advance a bar by one step.

        Args:
            task: the handle :meth:`task` returned.
            info: text shown after the bar (e.g. the running loss).

        Returns:
            None.
        """
        if self._bar is not None:
            self._bar.update(task, advance=1, info=info)

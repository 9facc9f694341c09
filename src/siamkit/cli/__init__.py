"""The ``siamkit`` command: a thin edge that parses options once and calls the library.

Bad input ends with one line ``error: ...`` on stderr and exit code 2, never a
traceback (set ``SIAMKIT_DEBUG=1`` to see one). Library code never imports this package.

Modules: ``root`` (the app and its mounting), ``_common`` (error edge, logging, parsers),
one module per command group: ``demo``, ``train`` (train, finetune), ``models``
(summary, compare, calibrate, evaluate), ``gallery``, ``anomaly``, ``serve`` (serve,
keys), ``feedback``. Runnable as ``python -m siamkit.cli``.
"""

from __future__ import annotations

from .root import app, main

__all__ = ["app", "main"]

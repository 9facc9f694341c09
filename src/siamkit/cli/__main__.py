"""``python -m siamkit.cli ...``: the ``siamkit`` command."""

from __future__ import annotations

import sys

from .root import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

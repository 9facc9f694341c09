"""Following a gallery that another process re-embedded with a new model.

When ``siamkit finetune --reembed-gallery`` or ``siamkit gallery reembed`` moves a shared
gallery to a new model, every running instance still holds the old one; its gallery
handle then raises :class:`~siamkit.errors.GalleryModelChangedError`
(:mod:`siamkit.gallery.model_guard`) on the next query or write. The service answers it
here: it reads its ``--model`` folder again and, when that folder now holds the gallery's
model (a deployment that updates the folder or the symlink it names), switches the
gallery handle (:meth:`~siamkit.gallery.Gallery.adopt_model`: model, calibration, view and
index together) and the verifier to it and runs the request again. Otherwise the request
gets 503 ``gallery_model_changed`` (the message names the gallery's model), and the folder
is read again only once its files changed (their size, mtime and inode; a symlink is
followed), so a refused request costs a few ``stat`` calls, not a model load.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import SiamkitError
from ..gallery.model import model_meta
from ..verify import Verifier

__all__ = ["ModelFollower"]

logger = logging.getLogger(__name__)


def _folder_state(folder: Path) -> tuple[Any, ...]:
    """What tells that a model folder changed: (name, size, mtime_ns, inode) of its files."""
    try:
        real = Path(os.path.realpath(folder))
        return (str(real),) + tuple(sorted((p.name, *_stat(p)) for p in real.iterdir() if p.is_file()))
    except OSError:
        return ()


def _stat(p: Path) -> tuple[int, int, int]:
    st = p.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class ModelFollower:
    """Switches a service to its gallery's new model (see the module doc); one per service."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failed: tuple[Any, ...] | None = None  # (gallery's model hash, the folder's state) that did not fit

    def adopt(self, state: Any) -> bool:
        """Make ``state`` (the :class:`~siamkit.service.deps.ServiceState`) serve the model
        its gallery was re-embedded with, if its model folder holds that model.

        Args:
            state: the service's state (its settings name the model folder).

        Returns:
            True when the service now runs the gallery's model (retry the request).
        """
        g = state.gallery
        if g is None:
            return False
        with self._lock:
            stored = g.store.meta().get("model_hash")
            if g.store.model_hash == stored:
                return True  # another request switched already
            seen = (stored, _folder_state(Path(state.settings.model)))
            if seen == self._failed:
                return False  # nothing changed since the folder did not hold the gallery's model
            try:
                verifier = Verifier.from_dir(state.settings.model)
                spec = verifier.network.input_spec.require_image()
            except (SiamkitError, ValueError, OSError) as e:
                logger.warning("cannot read the model folder %s again: %s", state.settings.model, e)
                self._failed = seen
                return False
            if model_meta(verifier.network)["model_hash"] != stored:
                self._failed = seen
                return False
            g.adopt_model(verifier)
            state.verifier, state.spec, state.fingerprint = verifier, spec, getattr(verifier.network, "fingerprint", None)
            self._failed = None
        logger.info("gallery %s was re-embedded: now serving model %s from %s", g.path, state.fingerprint, state.settings.model)
        return True

"""Every exception siamkit raises for bad input: each message names what is wrong.

They all derive from :class:`SiamkitError` (a ``ValueError``): a problem with the user's
input, data or files, never a bug. The edges (CLI, HTTP service) map them to exit code 2
or a 4xx by *type*; no caller matches on message text.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SiamkitError",
    "ExportError",
    "RecipeError",
    "DataError",
    "ModelFileError",
    "NotFittedError",
    "CalibrationError",
    "SplitLeakageError",
    "ClassOverlapError",
    "AnomalyError",
    "GalleryError",
    "GalleryFileError",
    "GalleryLockedError",
    "GalleryUnavailableError",
    "ModelMismatchError",
    "GalleryModelChangedError",
    "UnknownIdentityError",
    "IdentityExistsError",
    "FeedbackError",
    "FeedbackLockedError",
    "FeedbackUnavailableError",
    "KeyFileError",
    "FinetuneRefused",
    "TrainingDivergedError",
    "EmbeddingSizeError",
]


class SiamkitError(ValueError):
    """Base class: a problem with the user's input, data or files (not a bug)."""


class DataError(SiamkitError):
    """A dataset, image or pair file cannot be used as given."""


class ClassOverlapError(DataError):
    """A test set shares class names with the classes a model was trained on."""


class ModelFileError(SiamkitError):
    """A model or checkpoint folder is missing, damaged or from an incompatible version."""


class CalibrationError(SiamkitError):
    """A calibration cannot be fitted, loaded or applied."""


class AnomalyError(SiamkitError):
    """An anomaly detector cannot be fitted, loaded or applied."""


class NotFittedError(CalibrationError, AnomalyError):
    """An estimator (calibrator, anomaly detector) was used before ``fit()`` or ``load()``."""


class SplitLeakageError(CalibrationError):
    """Evaluation was asked on the very split a threshold was fitted on."""


class GalleryError(SiamkitError):
    """A gallery operation cannot be done as asked."""


class GalleryFileError(GalleryError):
    """A gallery file is missing, not a siamkit gallery, or from a newer schema."""


class GalleryLockedError(GalleryError):
    """Another process holds the gallery's write lock for longer than the timeout."""


class GalleryUnavailableError(GalleryLockedError):
    """The gallery's database server cannot be reached now (down, restarting, or every
    pooled connection busy past the timeout); the request may be tried again."""


class ModelMismatchError(GalleryError):
    """The gallery (or detector) was built with another model than the one given."""


class GalleryModelChangedError(ModelMismatchError):
    """Another process re-embedded the gallery with a new model since this handle opened
    it: its model's embeddings no longer compare with the stored ones. Reopen it (or
    :meth:`~siamkit.gallery.Gallery.adopt_model`) with the gallery's new model."""


class UnknownIdentityError(GalleryError):
    """The identity is not enrolled."""


class IdentityExistsError(GalleryError):
    """The identity is already enrolled (an enrolment never merges silently)."""


class FeedbackError(SiamkitError):
    """A feedback store or report cannot be used as given."""


class FeedbackLockedError(FeedbackError):
    """Another process holds the feedback store's write lock for longer than the timeout."""


class FeedbackUnavailableError(FeedbackLockedError):
    """The feedback store's database server cannot be reached now; try again."""


class KeyFileError(SiamkitError):
    """An API keys file is missing, damaged or refused."""


class FinetuneRefused(SiamkitError):
    """The fine-tuned model is worse on the held-out split; nothing was written.

    Attributes:
        report: the comparison (old vs new).
    """

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


class TrainingDivergedError(SiamkitError, FloatingPointError):
    """Training diverged: the loss, the gradient or the embeddings became NaN or infinite.

    The message names the epoch (and step); the last good epoch's checkpoint and the best
    model stay on disk. Also a :class:`FloatingPointError`, which the loop raised before.
    """


class ExportError(SiamkitError):
    """A model cannot be exported in the requested format (e.g. an operator ONNX lacks)."""


class RecipeError(SiamkitError):
    """A recipe file that cannot be used: unknown recipe, bad TOML, an unknown key (the
    message names the key and the file) or a value of the wrong type."""


class EmbeddingSizeError(SiamkitError):
    """An embedding size (a Matryoshka prefix) the model was not trained for, or one
    outside 1..its embedding size, or a file (calibration, gallery) of another size."""

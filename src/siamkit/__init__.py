"""siamkit: Siamese networks for similarity learning.

The top-level names are imported on first use (PEP 562), so ``import siamkit.X`` loads
only what ``X`` needs: the ONNX runtime verifier (:mod:`siamkit.export.runtime`) runs
without torch.

Example:
    >>> from siamkit import SiameseNetwork, create_encoder
    >>> net = SiameseNetwork(create_encoder("conv4", in_channels=1), normalize=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_LAZY = {
    "get_distance": "distances",
    "create_encoder": "encoders",
    "list_encoders": "encoders",
    "register_encoder": "encoders",
    "DataError": "errors",
    "ModelFileError": "errors",
    "SiamkitError": "errors",
    "load_model": "io",
    "save_model": "io",
    "SiameseNetwork": "network",
    "TrainConfig": "training",
    "fit": "training",
    "Calibrator": "calibration",
    "Verifier": "verify",
    "AnomalyDetector": "anomaly",
    "Gallery": "gallery",
}

if TYPE_CHECKING:  # pragma: no cover
    from .anomaly import AnomalyDetector
    from .calibration import Calibrator
    from .distances import get_distance
    from .encoders import create_encoder, list_encoders, register_encoder
    from .errors import DataError, ModelFileError, SiamkitError
    from .gallery import Gallery
    from .io import load_model, save_model
    from .network import SiameseNetwork
    from .training import TrainConfig, fit
    from .verify import Verifier


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AnomalyDetector",
    "Calibrator",
    "DataError",
    "Gallery",
    "ModelFileError",
    "SiameseNetwork",
    "SiamkitError",
    "TrainConfig",
    "Verifier",
    "__version__",
    "create_encoder",
    "fit",
    "get_distance",
    "list_encoders",
    "load_model",
    "register_encoder",
    "save_model",
]

"""siamkit: Siamese networks for similarity learning.

Example:
    >>> from siamkit import SiameseNetwork, create_encoder
    >>> net = SiameseNetwork(create_encoder("conv4", in_channels=1), normalize=True)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .distances import get_distance  # noqa: E402
from .encoders import create_encoder, list_encoders, register_encoder  # noqa: E402
from .errors import DataError, ModelFileError, SiamkitError  # noqa: E402
from .io import load_model, save_model  # noqa: E402
from .network import SiameseNetwork  # noqa: E402
from .training import TrainConfig, fit  # noqa: E402
from .calibration import Calibrator  # noqa: E402
from .verify import Verifier  # noqa: E402
from .anomaly import AnomalyDetector  # noqa: E402
from .gallery import Gallery  # noqa: E402

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

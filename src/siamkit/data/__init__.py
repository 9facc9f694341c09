"""Datasets, samplers, augmentation and pair files (loaders only: scoring lives in
:mod:`siamkit.evaluation`).

The names below are imported on first use (PEP 562), so the torch-free modules of this
package (``preprocess``, ``prepare``, ``signature_scan``, ``sizes``) can be imported
without torch (the ONNX runtime does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

#: public name -> the submodule that defines it
_LAZY = {
    "RandomAffine": "augment",
    "load_face_folder": "faces",
    "split_identities": "faces",
    "IdentitySplit": "splits",
    "split_by_class": "splits",
    "ImageFolderDataset": "images",
    "load_image": "images",
    "to_float": "images",
    "OmniglotDataset": "omniglot",
    "OneShotRun": "omniglot",
    "load_official_one_shot_runs": "omniglot",
    "load_omniglot": "omniglot",
    "compact_official_runs": "omniglot_compact",
    "load_omniglot_compact": "omniglot_compact",
    "PairCSVDataset": "pairs",
    "BalancedPairSampler": "samplers",
    "MPerClassSampler": "samplers",
    "SignatureDataset": "signatures",
    "SignaturePreprocess": "signatures",
    "load_signatures": "signatures",
    "signature_pairs": "signatures",
    "split_writers": "signatures",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .augment import RandomAffine
    from .faces import load_face_folder, split_identities
    from .images import ImageFolderDataset, load_image, to_float
    from .omniglot import OmniglotDataset, OneShotRun, load_official_one_shot_runs, load_omniglot
    from .omniglot_compact import compact_official_runs, load_omniglot_compact
    from .pairs import PairCSVDataset
    from .samplers import BalancedPairSampler, MPerClassSampler
    from .signatures import SignatureDataset, SignaturePreprocess, load_signatures, signature_pairs, split_writers
    from .splits import IdentitySplit, split_by_class


__getattr__ = lazy_getattr(__name__, _LAZY, globals())

"""Datasets, samplers, augmentation and pair files (loaders only: scoring lives in
:mod:`siamkit.evaluation`)."""

from __future__ import annotations

from .augment import RandomAffine
from .faces import load_face_folder, split_identities
from .splits import IdentitySplit, split_by_class
from .images import ImageFolderDataset, load_image, to_float
from .omniglot import OmniglotDataset, OneShotRun, load_official_one_shot_runs, load_omniglot
from .omniglot_compact import compact_official_runs, load_omniglot_compact
from .pairs import PairCSVDataset
from .samplers import BalancedPairSampler, MPerClassSampler
from .signatures import SignatureDataset, SignaturePreprocess, load_signatures, signature_pairs, split_writers

__all__ = [
    "BalancedPairSampler",
    "IdentitySplit",
    "ImageFolderDataset",
    "MPerClassSampler",
    "OmniglotDataset",
    "OneShotRun",
    "PairCSVDataset",
    "RandomAffine",
    "SignatureDataset",
    "SignaturePreprocess",
    "compact_official_runs",
    "load_face_folder",
    "load_image",
    "load_official_one_shot_runs",
    "load_omniglot",
    "load_omniglot_compact",
    "load_signatures",
    "signature_pairs",
    "split_by_class",
    "split_identities",
    "split_writers",
    "to_float",
]

"""Datasets, samplers, augmentation and pair files."""

from __future__ import annotations

from .augment import RandomAffine
from .images import ImageFolderDataset, load_image, to_float
from .pairs import PairCSVDataset
from .samplers import BalancedPairSampler, MPerClassSampler

__all__ = [
    "BalancedPairSampler",
    "ImageFolderDataset",
    "MPerClassSampler",
    "PairCSVDataset",
    "RandomAffine",
    "load_image",
    "to_float",
]

"""``siamkit demo``: what a Siamese network is for, in about a minute on a laptop.

- :mod:`.omniglot` (the default): one-shot recognition of Omniglot characters from
  alphabets the network never saw, on the compact copy shipped in the package.
- :mod:`.digits`: the earlier demo on scikit-learn's 8x8 digits (``--dataset digits``).
- :mod:`.tour`: the worked-example picture and the gallery tour of the Omniglot demo.
"""

from __future__ import annotations

from .digits import demo_config, evaluate_embeddings, load_digits_split, run_demo
from .omniglot import DEFAULT_STEPS, evaluate_omniglot, omniglot_demo_config, run_omniglot_demo, steps_for_minutes

__all__ = [
    "DEFAULT_STEPS",
    "demo_config",
    "evaluate_embeddings",
    "evaluate_omniglot",
    "load_digits_split",
    "omniglot_demo_config",
    "run_demo",
    "run_omniglot_demo",
    "steps_for_minutes",
]

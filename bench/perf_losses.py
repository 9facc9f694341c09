"""Performance suite, loss + miner: ms per forward + backward step of siamkit's
batch-hard and semi-hard triplet mining vs pytorch-metric-learning (PML) on the same
L2-normalised 128-d embeddings at batch 512, 2048 and 8192 (goal >= 3x everywhere, no
OOM). It runs :mod:`bench_miners` (one guarded worker process per case, the libraries
interleaved, a PML worker past ``--max-rss-gb`` or the step timeout killed and recorded
as skipped) with the suite's batches and writes ``bench/results/perf_losses.json``.

The cross-batch memory of 16k embeddings (siamkit.memory vs PML's ``CrossBatchMemory``)
is its own script, ``perf_memory.py``.

PML is not a siamkit dependency; install it beside the venv without its dependencies
(torch stays the pinned CPU build):

    pip install --no-deps --target PML_DIR -c .ci/constraints.txt pytorch-metric-learning
    flock TIMING_LOCK env PYTHONPATH=src:PML_DIR python bench/perf_losses.py
"""

from __future__ import annotations

import sys

from _common import RESULTS
from bench_miners import main as miners_main


def main() -> int:
    extra = sys.argv[1:]
    return miners_main([
        "--batches", "512,2048,8192", "--methods", "batch_hard,semi_hard", "--no-doc",
        "--out", str(RESULTS / "perf_losses.json"), "--repeats-mid", "7", "--repeats-large", "3",
        "--max-rss-gb", "4", "--step-timeout", "60", "--retries", "1", "--idle-wait", "30", *extra,
    ])


if __name__ == "__main__":
    sys.exit(main())

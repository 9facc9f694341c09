"""The feedback store's figures in ``/metrics``: reports by kind and status (new / used /
rejected / held), distinct reporters, fine-tunes. Read from the store at each scrape (one
``GROUP BY`` query: :meth:`~siamkit.feedback.FeedbackStore.stats`), so several service
processes sharing one store all report the same, current figures."""

from __future__ import annotations

import logging
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["FeedbackCollector", "feedback_metrics_text"]

logger = logging.getLogger(__name__)


class FeedbackCollector(Collector):
    """A Prometheus collector over an open feedback store.

    Args:
        store: the open :class:`~siamkit.feedback.FeedbackStore`.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges (nothing when the store cannot be read: the scrape still succeeds)."""
        try:
            st = self.store.stats(top=0)
        except Exception as e:  # noqa: BLE001 - a broken store must not break /metrics
            logger.error("metrics: feedback store unreadable: %s", e)
            return
        reports = GaugeMetricFamily("siamkit_feedback_reports", "Feedback reports by kind and status (new / used / rejected / held).",
                                    labels=["kind", "status"])
        for kind, by_status in sorted(st["by_kind_status"].items()):
            for status, n in sorted(by_status.items()):
                reports.add_metric([kind, status], float(n))
        yield reports
        yield GaugeMetricFamily("siamkit_feedback_reporters", "Distinct reporters (actors) in the feedback store.", value=float(st["reporters"]))
        yield GaugeMetricFamily("siamkit_feedback_finetunes", "Fine-tunes recorded in the feedback store's audit log.", value=float(st["finetunes"]))
        yield GaugeMetricFamily("siamkit_feedback_confirmations", "Reports that confirm a decision (the rest are mistakes).",
                                value=float(st["confirmations"]))


def feedback_metrics_text(store: Any) -> bytes:
    """The feedback gauges in the Prometheus text format (empty without a store).

    Args:
        store: the open feedback store, or None.

    Returns:
        The exposition text, to append to the service's own metrics.
    """
    if store is None:
        return b""
    registry = CollectorRegistry()
    registry.register(FeedbackCollector(store))
    return generate_latest(registry)

"""The feedback store's figures in the service's /metrics: reports by kind and status,
read at each scrape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from siamkit.feedback import KINDS, STATUSES, FeedbackStore, default_feedback_path  # noqa: E402
from siamkit.service import KeyStore, ServiceSettings, create_app  # noqa: E402
from tests.feedback.test_guard import png  # noqa: E402
from tests.service.test_service import build_model  # noqa: E402


def keystore() -> KeyStore:
    ks = KeyStore()
    ks.add("reader", "read")
    return ks


def gauges(text: str) -> dict[tuple[str, str], float]:
    return {(k, s): float(v) for k, s, v in re.findall(r'^siamkit_feedback_reports\{kind="(\w+)",status="(\w+)"\} (\S+)$', text, re.M)}


def test_metrics_count_reports_by_kind_and_status(tmp_path: Path) -> None:
    model = build_model(tmp_path / "model")
    gallery = tmp_path / "g.db"
    app = create_app(ServiceSettings(model=model, keys=keystore(), gallery=gallery))
    with TestClient(app, raise_server_exceptions=False) as c:
        first = gauges(c.get("/metrics").text)
        assert set(first) == {(k, s) for k in KINDS for s in STATUSES} and not any(first.values())
        with FeedbackStore.open(default_feedback_path(gallery)) as s:  # another process writes the store
            ids = [s.add(actor=f"a{i}", kind="verify", image_a=(png(i), "png"), image_b=(png(i + 50), "png"), truth={"same": True})
                   for i in range(3)]
            ids.append(s.add(actor="b", kind="identity_verify", identity="alice", image_a=(png(9), "png"), truth={"same": False}))
            s.add(actor="b", kind="identity_verify", identity="alice", image_a=(png(10), "png"), truth={"same": True},
                  predicted={"same": True})  # a confirmed match
            s.set_status(ids[:1], "used", actor="t")
            s.set_status(ids[1:2], "held", actor="t")
            s.set_status(ids[3:], "rejected", actor="t")
            s.audit("t", "finetune", "m", {})
            want = s.stats()
        text = c.get("/metrics").text
    got = gauges(text)
    for k in KINDS:
        for st in STATUSES:
            assert got[(k, st)] == want["by_kind_status"][k][st]
    assert got[("verify", "used")] == got[("verify", "held")] == got[("verify", "new")] == 1.0
    assert got[("identity_verify", "rejected")] == 1.0 and got[("identity_verify", "new")] == 1.0
    assert "siamkit_feedback_reporters 4.0" in text and "siamkit_feedback_finetunes 1.0" in text
    assert "siamkit_feedback_confirmations 1.0" in text and want["confirmations"] == 1
    assert "siamkit_http_requests_total" in text  # the service's own metrics are still there


def test_metrics_without_a_store_have_no_feedback_lines(tmp_path: Path) -> None:
    app = create_app(ServiceSettings(model=build_model(tmp_path / "model"), keys=keystore()))
    with TestClient(app, raise_server_exceptions=False) as c:
        text = c.get("/metrics").text
    assert "siamkit_feedback" not in text and "siamkit_http_requests_total" in text

"""Request and response models of the endpoints the console needs
(:mod:`siamkit.service.routers.console_api`); the class names are part of the OpenAPI spec."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .schemas import FeedbackSummary

__all__ = [
    "AuditEntry",
    "AuditLog",
    "FeedbackQueue",
    "FinetuneCommand",
    "ModelCard",
    "QueueItem",
    "ReviewIn",
    "ReviewOut",
    "ShiftOut",
    "WhoAmI",
]


class WhoAmI(BaseModel):
    name: str
    key_id: str
    role: Literal["read", "admin"]


class AuditEntry(BaseModel):
    id: int
    time: float
    actor: Optional[str] = Field(None, description="the API key's name (null in a gallery's own log: it records no actor)")
    action: str
    target: Optional[str] = None
    detail: dict[str, Any] = {}


class AuditLog(BaseModel):
    entries: list[AuditEntry]
    source: Literal["feedback_store", "gallery"] = Field(
        description="feedback_store: the service's log of who did what; gallery: the gallery's own log (no actors)"
    )


class ModelCard(BaseModel):
    model: dict[str, Any]
    training: Optional[dict[str, Any]] = None
    split: Optional[dict[str, Any]] = None
    calibration: Optional[dict[str, Any]] = None
    score_distribution: Optional[dict[str, Any]] = Field(
        None, description="quantiles of the impostor / genuine distances the calibration was fitted on, and its threshold"
    )
    gallery_calibration: Optional[dict[str, Any]] = None
    thresholds: dict[str, dict[str, Any]]
    metrics: Optional[dict[str, Any]] = None
    plots: list[str]


class ShiftOut(BaseModel):
    available: bool = Field(description="false: no check possible (the note says why)")
    note: Optional[str] = None
    report: Optional[dict[str, Any]] = Field(None, description="siamkit.calibration.ShiftReport fields")


class QueueItem(FeedbackSummary):
    screening: Literal["teaches", "waiting", "held"] = Field(
        description="teaches: enough distinct reporters; waiting: too few; held: contradicted by another report"
    )
    reporters: int = Field(description="distinct reporters of the same claim")
    accepted_by: Optional[str] = Field(None, description="the reviewer who accepted it, if one did")


class FeedbackQueue(BaseModel):
    items: list[QueueItem]
    total: int
    min_reporters: int


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accept: bool = Field(description="true: the report is right (reports contradicting it are rejected); false: reject it")


class ReviewOut(BaseModel):
    new: list[int]
    rejected: list[int]


class FinetuneCommand(BaseModel):
    command: str
    claims_teaching: int
    reports_teaching: int
    waiting_for_reporters: int
    held_contradicted: int
    note: str

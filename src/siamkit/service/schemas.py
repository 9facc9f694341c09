"""The service's request and response models (pydantic): the schemas of ``/openapi.json``.

The class names are part of the OpenAPI spec (``components.schemas``); keep them.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CandidateOut",
    "DeleteResponse",
    "ErrorBody",
    "ErrorResponse",
    "FeedbackIn",
    "FeedbackList",
    "FeedbackOut",
    "FeedbackSummary",
    "HealthResponse",
    "IdentifyResponse",
    "IdentityList",
    "IdentityOut",
    "IdentityVerifyResponse",
    "SampleOut",
    "VerifyResponse",
]


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. invalid_image, unknown_identity")
    message: str
    request_id: Optional[str] = None
    details: Optional[list[dict[str, Any]]] = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class VerifyResponse(BaseModel):
    distance: float = Field(description="lower = more similar")
    score: float = Field(description="higher = more similar, in [0, 1] (a display score)")
    same: Optional[bool] = Field(description="decision at the calibrated threshold; null: model not calibrated")
    decision: Optional[Literal["same", "different"]] = None
    confidence: Optional[float] = Field(description="calibrated probability of 'same'; null: not calibrated")
    threshold: Optional[float] = Field(description="accept when distance <= threshold")
    model: Optional[str] = Field(None, description="the model's fingerprint")


class IdentityVerifyResponse(VerifyResponse):
    identity: str
    sample_id: int
    sample_distance: float
    n_samples: int
    scoring: str


class CandidateOut(BaseModel):
    identity: str
    distance: float
    score: float
    sample_id: Optional[int] = None


class IdentifyResponse(BaseModel):
    candidates: list[CandidateOut]
    decision: Optional[str] = Field(description="the identity, 'unknown', or null when the model is not calibrated")
    unknown: Optional[bool]
    threshold: Optional[float]
    confidence: Optional[float]
    scoring: str
    index: str
    note: Optional[str] = None
    model: Optional[str] = None


class SampleOut(BaseModel):
    id: int
    metadata: dict[str, Any]
    created: float
    has_input: bool
    format: Optional[str] = None


class IdentityOut(BaseModel):
    identity: str
    metadata: dict[str, Any]
    n_samples: int
    created: float
    updated: float
    samples: list[SampleOut] = []


class IdentityList(BaseModel):
    identities: list[IdentityOut]
    total: int


class DeleteResponse(BaseModel):
    identity: str
    removed_samples: int


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    model: Optional[str]
    calibrated: bool
    gallery: Optional[dict[str, int]] = None
    feedback: bool


class FeedbackIn(BaseModel):
    """A reported mistake. Images are base64 (standard alphabet) of PNG / JPEG / GIF /
    BMP / WebP files; they are validated like uploads and stored as sent.

    - ``kind="verify"``: ``image_a`` + ``image_b``, truth ``true_same``.
    - ``kind="identity_verify"``: ``image_a`` (the probe) + ``identity`` (the claim),
      truth ``true_same``.
    - ``kind="identify"``: ``image_a`` (the probe), truth ``true_identity`` (``"unknown"``
      when the person is not enrolled).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["verify", "identify", "identity_verify"]
    image_a: str = Field(min_length=1, description="base64 image (the probe, or the first image of a pair)")
    image_b: Optional[str] = Field(None, min_length=1, description="base64 image: the second image of a verify pair")
    identity: Optional[str] = Field(None, min_length=1, max_length=256, description="identity_verify: the claimed identity")
    predicted_same: Optional[bool] = None
    predicted_identity: Optional[str] = Field(None, max_length=256)
    predicted_distance: Optional[float] = Field(None, allow_inf_nan=False)
    true_same: Optional[bool] = None
    true_identity: Optional[str] = Field(None, min_length=1, max_length=256)
    reporter: Optional[str] = Field(None, max_length=200, description="who reported it (the API key's name is recorded too)")
    note: Optional[str] = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> "FeedbackIn":
        if self.kind == "verify":
            if self.image_b is None or self.true_same is None:
                raise ValueError("verify feedback needs image_b and true_same")
            if self.identity is not None or self.true_identity is not None:
                raise ValueError("verify feedback takes no identity / true_identity")
        elif self.kind == "identity_verify":
            if self.identity is None or self.true_same is None or self.image_b is not None:
                raise ValueError("identity_verify feedback needs identity and true_same, and one image")
        else:
            if self.true_identity is None or self.image_b is not None or self.true_same is not None:
                raise ValueError("identify feedback needs true_identity and one image (no true_same)")
        return self


class FeedbackOut(BaseModel):
    id: int
    kind: str
    status: str
    created: float
    actor: str


class FeedbackSummary(FeedbackOut):
    reporter: Optional[str] = None
    identity: Optional[str] = None
    predicted: dict[str, Any]
    truth: dict[str, Any]
    note: Optional[str] = None
    model_fingerprint: Optional[str] = None
    has_image_b: bool


class FeedbackList(BaseModel):
    feedback: list[FeedbackSummary]
    total: int


"""The JSON request bodies of the text endpoints (``/v1/text/...``, a text model's
service); their answers reuse :mod:`siamkit.service.schemas`' response models.

The class names are part of the OpenAPI spec (``components.schemas``); keep them.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..text.inputs import MAX_TEXT_CHARS

__all__ = ["OneText", "TextPairIn", "TextProbeIn", "TextEnrollIn", "TextSamplesIn"]

OneText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]


class TextPairIn(BaseModel):
    """Two texts to compare."""

    model_config = ConfigDict(extra="forbid")

    text_a: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="the first text")
    text_b: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="the second text")


class TextProbeIn(BaseModel):
    """One probe text (identify, verify against an identity)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="the probe text")


class TextSamplesIn(BaseModel):
    """Texts to add to an enrolled identity (1..``Limits.max_batch``)."""

    model_config = ConfigDict(extra="forbid")

    texts: list[OneText] = Field(min_length=1, description="the samples, each 1..100,000 characters")


class TextEnrollIn(TextSamplesIn):
    """A new identity and its first texts."""

    identity: str = Field(min_length=1, max_length=256, description="the new identity's name")
    metadata: Optional[dict[str, Any]] = Field(None, description="a JSON object kept with the identity")

"""Request and response shapes of the API contract (DESIGN.md), so the OpenAPI document describes it."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

MAX_K = 1000
MAX_TEXT_CHARS = 1000
# "Something besides white space", spelled out so that every regex engine reads it alike: Python's `\S`,
# JSON Schema's (ECMA-262) and pydantic's (Rust) disagree about a few control characters. A search, not a match.
NOT_BLANK = r"[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"

Target = Literal["image", "text"]


class TextQuery(BaseModel):
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, json_schema_extra={"pattern": NOT_BLANK},
                      description="what to look for: at least one character that is not white space")
    k: int = Field(10, ge=1, le=MAX_K)
    target: Target = Field("image", description="search image vectors, or caption vectors (captioned items)")

    @field_validator("text")
    @classmethod
    def not_blank(cls, text: str) -> str:
        if not re.search(NOT_BLANK, text):
            raise ValueError("text must contain something besides white space")
        return text


class QueryInfo(BaseModel):
    modality: Literal["text", "image"]
    target: Target


class SearchResult(BaseModel):
    id: int
    score: float
    path: str
    url: str
    caption: str | None


class SearchResponse(BaseModel):
    query: QueryInfo
    model: str
    index_version: str
    took_ms: float
    results: list[SearchResult]


class IndexInfo(BaseModel):
    model: dict
    index_version: str
    count: int
    caption_count: int
    dim: int
    index_type: str
    faiss_factory: str
    created_at: str


class Status(BaseModel):
    status: str
    detail: str | None = None


class ErrorDetail(BaseModel):
    """Every error answer: `{"detail": ...}`, a message that says what went wrong (a list of problems for 422)."""

    detail: str | list[dict] = Field(..., description="what went wrong and, where it helps, what to do about it")


ERROR_MEANINGS = {
    400: "the body cannot be parsed (malformed JSON or multipart), or the image is empty, truncated or corrupt",
    404: "no indexed image has this id, or its file is gone",
    413: "the body, or the image in pixels, is larger than the limit",
    415: "not an image, or not sent as multipart/form-data",
    503: "not ready: no index loaded yet, or the model or the index cannot answer (the detail says why)",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """The OpenAPI `responses` entries of a route's error answers, all documented as ErrorDetail."""
    return {status: {"model": ErrorDetail, "description": ERROR_MEANINGS[status]} for status in statuses}

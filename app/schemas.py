"""Request and response shapes of the API contract (DESIGN.md), so the OpenAPI document describes it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

MAX_K = 1000
MAX_TEXT_CHARS = 1000

Target = Literal["image", "text"]


class TextQuery(BaseModel):
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, description="what to look for")
    k: int = Field(10, ge=1, le=MAX_K)
    target: Target = Field("image", description="search image vectors, or caption vectors (captioned items)")

    @field_validator("text")
    @classmethod
    def not_blank(cls, text: str) -> str:
        if not text.strip():
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
    search_params: dict[str, int] = Field(
        default_factory=dict, description="what every image query runs with: FAISS's efSearch / nprobe, and "
                                          "k_factor (candidates per result re-ranked by their exact cosine)")


class Status(BaseModel):
    status: str
    detail: str | None = None

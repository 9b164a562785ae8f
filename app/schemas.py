"""Request and response shapes of the API contract (DESIGN.md), so the OpenAPI document describes it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class RerankInfo(BaseModel):
    available: bool = Field(..., description="whether POST /search takes rerank: true")
    detail: str = Field(..., description="which matcher re-ranks, or why none can")


class IndexInfo(BaseModel):
    model: dict
    index_version: str
    count: int
    caption_count: int
    dim: int
    index_type: str
    faiss_factory: str
    created_at: str
    rerank: RerankInfo | None = None


class Status(BaseModel):
    status: str
    detail: str | None = None


# ------------------------------------------------------------------------------------------------- fusion

MAX_TERMS = 16
MAX_VECTOR_DIM = 8192
MAX_RERANK_K = 200  # re-ranking reads max(k, 50) candidate images; beyond 200 it costs seconds, not milliseconds
MAX_ITEM_ID = 2**63 - 1  # SQLite's integer range


def _not_blank(text: str | None) -> str | None:
    if text is not None and not text.strip():
        raise ValueError("text must contain something besides white space")
    return text


class Term(BaseModel):
    """One term of a composed query: exactly one of text, image_id, image or vector, with a signed weight."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS, description="a text to embed")
    image_id: int | None = Field(None, ge=0, le=MAX_ITEM_ID, description="an indexed image, by its id")
    image: str | None = Field(None, min_length=1, description="image bytes in base64 (standard or URL-safe "
                              "alphabet; a data: URL prefix is allowed), at most CLIPSPACE_MAX_UPLOAD_BYTES decoded")
    vector: list[float] | None = Field(None, min_length=1, max_length=MAX_VECTOR_DIM,
                                       description="a raw vector of the index's dimension (normalised here)")
    weight: float = Field(1.0, ge=-1000, le=1000, allow_inf_nan=False,
                          description="how much this term counts; negative means 'less of this'")

    @field_validator("text")
    @classmethod
    def not_blank(cls, text: str | None) -> str | None:
        return _not_blank(text)

    @model_validator(mode="after")
    def exactly_one_source(self) -> Term:
        given = [name for name in ("text", "image_id", "image", "vector") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a term holds exactly one of text, image_id, image, vector; this one holds "
                             f"{len(given)}{': ' + ', '.join(given) if given else ''}")
        return self


class ComposedQuery(BaseModel):
    """`POST /search`: terms combined as the normalised weighted sum of their normalised vectors."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"terms": [{"image_id": 42}, {"text": "blue"}, {"text": "red", "weight": -1}], "k": 10},
        {"terms": [{"image_id": 42}], "k": 10},
        {"terms": [{"text": "a red circle on the left and a blue square on the right"}], "rerank": True}]})

    terms: list[Term] = Field(..., min_length=1, max_length=MAX_TERMS)
    k: int = Field(10, ge=1, le=MAX_K)
    target: Target = Field("image", description="search image vectors, or caption vectors (captioned items)")
    rerank: bool = Field(False, description="re-score the top max(k, 50) images with the model's cross-attention "
                         "matcher, reading the query's positive text terms; /info says whether it is available")

    @model_validator(mode="after")
    def answerable(self) -> ComposedQuery:
        if not any(term.weight for term in self.terms):
            raise ValueError("every term has weight 0: there is nothing to search for")
        if self.rerank and self.k > MAX_RERANK_K:
            raise ValueError(f"with rerank, k is at most {MAX_RERANK_K}")
        return self


class ComposedQueryInfo(BaseModel):
    modality: Literal["composed"] = "composed"
    target: Target
    rerank: bool = False


class RerankedResult(SearchResult):
    rerank_score: float = Field(..., description="matcher logit + 30 x cosine (docs/decisions.md): higher is "
                                "better, comparable among one query's results, which are sorted by it")


class ComposedSearchResponse(SearchResponse):
    query: ComposedQueryInfo
    results: list[Annotated[RerankedResult | SearchResult, Field(union_mode="left_to_right")]]


class ClassifyRequest(BaseModel):
    """`POST /classify`: an indexed or uploaded image and the labels to rank for it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"image_id": 42, "labels": ["circle", "square", "triangle"]},
        {"image_id": 42, "labels": ["圆形", "正方形", "三角形"]},
        {"image_id": 42, "labels": ["red", "blue"], "template": "a {} shape"}]})

    image_id: int | None = Field(None, ge=0, le=MAX_ITEM_ID)
    image: str | None = Field(None, min_length=1, description="image bytes in base64, as in a /search term")
    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(..., min_length=1, max_length=256)
    template: str | None = Field(None, min_length=2, max_length=200,
                                 description="a prompt with one {} for the label; default: a small ensemble "
                                             "of templates in the label's language (English or Chinese)")

    @model_validator(mode="after")
    def one_image(self) -> ClassifyRequest:
        if (self.image_id is None) == (self.image is None):
            raise ValueError("give exactly one of image_id and image")
        return self


class LabelProbability(BaseModel):
    label: str
    probability: float


class ClassifyResponse(BaseModel):
    labels: list[LabelProbability] = Field(..., description="every label, highest probability first")
    model: str
    index_version: str
    took_ms: float

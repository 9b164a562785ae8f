"""Request and response shapes of the API contract (DESIGN.md), so the OpenAPI document describes it."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clipspace.errors import InvalidQuery
from clipspace.fusion.query import check_weights
from clipspace.index.channels import Channel, Mode
from clipspace.index.cursors import MAX_CURSOR_CHARS
from clipspace.index.filters import FORMATS, Near, SearchFilter

MAX_K = 1000
MAX_TEXT_CHARS = 1000
# "Something besides white space", spelled out so that every regex engine reads it alike: Python's `\S`,
# JSON Schema's (ECMA-262) and pydantic's (Rust) disagree about a few control characters. A search, not a match.
NOT_BLANK = r"[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"

MAX_ITEM_ID = 2**63 - 1  # SQLite's integer range
MAX_FILTER_VALUES = 100
FormatName = Literal[tuple(sorted(name.lower() for name in FORMATS))]  # the core's names, as the schema's enum
# Hybrid measured at least as good as the better channel on every query kind (benchmarks/keywords.py).
DEFAULT_MODE: Mode = "hybrid"

Target = Literal["image", "text"]


def _not_blank(text: str | None) -> str | None:
    if text is not None and not re.search(NOT_BLANK, text):
        raise ValueError("text must contain something besides white space")
    return text


class NearPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float = Field(..., ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(..., ge=-180, le=180, allow_inf_nan=False)
    km: float = Field(..., gt=0, le=20_016, allow_inf_nan=False, description="great-circle distance")


class SearchFilterBody(BaseModel):
    """Which items a search may answer; every field given narrows it (a list matches any of its values). The filter
    runs inside the search: a filter that keeps 0.1% of the corpus still answers k results when k match."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"path_prefix": "holiday/2019", "taken_after": "2019-07-01", "camera": "pixel"},
        {"near": {"lat": 38.72, "lon": -9.14, "km": 25}, "tags": ["tram"], "formats": ["jpeg", "heic"]}]})

    path_prefix: str | None = Field(None, max_length=1000, description="a folder relative to the image folder")
    taken_after: date | datetime | None = Field(None, description="ISO 8601 date or date-time, inclusive; "
                                                "compared with the clock the photographer saw (an offset is ignored)")
    taken_before: date | datetime | None = Field(None, description="ISO 8601 date or date-time, inclusive")
    camera: str | None = Field(None, min_length=1, max_length=100,
                               description="case-insensitive part of the camera's make and model ('pixel')")
    near: NearPoint | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=MAX_FILTER_VALUES, description="any of these keywords (case-insensitive)")
    formats: list[FormatName] = Field(default_factory=list, max_length=MAX_FILTER_VALUES,
                                      description="any of these formats (heic is heif, jpg is jpeg, tif is tiff)")
    min_width: int | None = Field(None, ge=0, le=1_000_000)
    min_height: int | None = Field(None, ge=0, le=1_000_000)

    def core(self) -> SearchFilter:
        """The core's filter (which checks dates, formats and folders: a wrong one is a 422 from there)."""
        near = Near(self.near.lat, self.near.lon, self.near.km) if self.near else None
        dates = {name: None if value is None else value.isoformat()
                 for name, value in (("taken_after", self.taken_after), ("taken_before", self.taken_before))}
        return SearchFilter(**{**self.model_dump(exclude={"near"}), **dates, "near": near, "tags": tuple(self.tags),
                               "formats": tuple(self.formats)})

    @field_validator("formats", mode="before")
    @classmethod
    def lower_case_formats(cls, names: object) -> object:
        return [name.lower() if isinstance(name, str) else name for name in names] if isinstance(names, list) else names


def core_filter(search_filter: SearchFilterBody | None) -> SearchFilter:
    return search_filter.core() if search_filter is not None else SearchFilter()


FILTER_FIELD = Field(None, description="only items that pass this filter (see SearchFilterBody)")
CURSOR_FIELD = Field(None, min_length=1, max_length=MAX_CURSOR_CHARS,
                     description="the next_cursor of the previous page: the next k results of the same query")
MIN_RELEVANCE_HELP = ("drop results whose relevance is below this (0: no cut); answers 200 with no results when "
                      "none passes")
AUTOCUT_HELP = "cut the results at the first large drop in relevance (docs/decisions.md, \"Calibrated relevance\")"
MIN_RELEVANCE_FIELD = Field(0.0, ge=0, le=1, description=MIN_RELEVANCE_HELP)
AUTOCUT_FIELD = Field(False, description=AUTOCUT_HELP)
COLLAPSE_DESCRIPTION = ("show each group of duplicates once, as its best-ranked member, which lists the others in "
                        "`duplicates` (default false: every item; the page at / sends true)")
COLLAPSE_FIELD = Field(False, description=COLLAPSE_DESCRIPTION)


class PagedQuery(BaseModel):
    """What every JSON search body shares: the page size, what it searches, and how its result list is steered
    (filter, paging, relevance cut, duplicates), so each route reads them the same way."""

    k: int = Field(10, ge=1, le=MAX_K, description="results per page")
    target: Target = Field("image", description="search image vectors, or caption vectors (captioned items)")
    filter: SearchFilterBody | None = FILTER_FIELD
    cursor: str | None = CURSOR_FIELD
    min_relevance: float = MIN_RELEVANCE_FIELD
    autocut: bool = AUTOCUT_FIELD
    collapse_duplicates: bool = COLLAPSE_FIELD


class TextQuery(PagedQuery):
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS, json_schema_extra={"pattern": NOT_BLANK},
                      description="what to look for: at least one character that is not white space")
    mode: Mode = Field(DEFAULT_MODE, description="vector: by meaning (the embedding); keyword: items whose file "
                       "name, folders, caption or tags hold every word; hybrid: both, fused (docs/decisions.md)")

    @field_validator("text")
    @classmethod
    def not_blank(cls, text: str) -> str:
        return _not_blank(text)


class QueryInfo(BaseModel):
    modality: Literal["text", "image"]
    target: Target


OCR_SHOWN_CHARS = 200  # of a picture's OCR text, in a result: enough to see why it matched


class SearchResult(BaseModel):
    id: int
    score: float = Field(..., description="the cosine similarity (mode vector), bm25 (keyword) or fused score "
                         "(hybrid): comparable among the results of one query, which are sorted by it")
    path: str
    url: str
    caption: str | None
    taken_at: str | None = Field(None, description="capture time, ISO 8601 (see taken_at_source)")
    taken_at_source: Literal["exif", "mtime"] | None = None
    camera: str | None = None
    lat: float | None = None
    lon: float | None = None
    tags: list[str] = Field(default_factory=list)
    channel: Channel = Field("vector", description="which channel found it: vector, keyword or both")
    relevance: float | None = Field(None, ge=0, le=1, description="the estimated probability that it matches "
                                    "the query, from the model's calibration stored in the index version; null "
                                    "in keyword mode and in versions built without a calibration")
    ocr_text: str | None = Field(None, description="the text read inside the picture (an index built with --ocr), "
                                 f"its first {OCR_SHOWN_CHARS} characters; null when none was read")
    duplicates: list[int] | None = Field(None, description="with collapse_duplicates: the ids of the other members "
                                         "of its duplicate group, which this result stands for ([] when none)")


class SearchResponse(BaseModel):
    query: QueryInfo
    model: str
    index_version: str
    took_ms: float
    results: list[SearchResult]
    next_cursor: str | None = Field(None, description="send it as `cursor` with the same query for the next page; "
                                    "null when there is none")


class RerankInfo(BaseModel):
    available: bool = Field(..., description="whether POST /search takes rerank: true")
    detail: str = Field(..., description="which matcher re-ranks, or why none can")


class RuntimeInfo(BaseModel):
    name: str = Field(description="what runs the model's towers: onnx (ONNX Runtime), onnx-int8 (its int8 copy) "
                                  "or torch")
    detail: str = Field(description="why this runtime: the export it verified, or why it fell back to torch")


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
    runtime: RuntimeInfo | None = None
    search_params: dict[str, int] = Field(
        default_factory=dict, description="what every image query runs with: FAISS's efSearch / nprobe, and "
                                          "k_factor (candidates per result re-ranked by their exact cosine)")
    relevance: dict | None = Field(None, description="the version's relevance calibration: per query kind "
                                   "(text-image, image-image, text-text) its method (platt: fitted on caption "
                                   "pairs; null-tail: no captions, a ranking), curve and held-out error; null "
                                   "for a version built before relevance")


class FacetCount(BaseModel):
    value: str
    count: int


class FacetsResponse(BaseModel):
    index_version: str
    folders: list[FacetCount]
    years: list[FacetCount]
    cameras: list[FacetCount]
    tags: list[FacetCount]


class DuplicateItem(BaseModel):
    id: int
    path: str
    url: str
    thumb_url: str
    bytes: int
    width: int
    height: int
    taken_at: str | None = None


class DuplicateGroup(BaseModel):
    id: int = Field(..., description="the group's representative: every member is within the duplicate threshold "
                    "of it (docs/decisions.md, Duplicates)")
    size: int
    items: list[DuplicateItem] = Field(..., description="the representative first, then by id")


class DuplicatesResponse(BaseModel):
    index_version: str
    took_ms: float
    total_groups: int = Field(..., description="groups of two or more items in this index version")
    groups: list[DuplicateGroup] = Field(..., description="largest first, then by representative id")
    next_cursor: str | None = Field(None, description="send it as `cursor` for the next page; null when none")


class Status(BaseModel):
    status: str
    detail: str | None = None


class ErrorDetail(BaseModel):
    """Every error answer: `{"detail": ...}`, a message that says what went wrong (a list of problems for 422)."""

    detail: str | list[dict] = Field(..., description="what went wrong and, where it helps, what to do about it")


ERROR_MEANINGS = {
    400: "the body cannot be parsed (malformed JSON or multipart), the image is empty, truncated or corrupt, or the "
         "cursor is not one this service gave for this query",
    404: "no indexed image has this id, or its file is gone",
    410: "the cursor belongs to an index version no longer served: start the search again without it",
    413: "the body, or the image in pixels, is larger than the limit",
    415: "not an image, or not sent as multipart/form-data",
    422: "the request is well-formed but cannot be answered as asked (the detail says which field or rule)",
    503: "not ready: no index loaded yet, or the model or the index cannot answer (the detail says why)",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """The OpenAPI `responses` entries of a route's error answers, all documented as ErrorDetail."""
    return {status: {"model": ErrorDetail, "description": ERROR_MEANINGS[status]} for status in statuses}


MAX_TERMS = 16
MAX_VECTOR_DIM = 8192
MAX_RERANK_K = 200  # re-ranking reads max(k, 50) candidate images; beyond 200 it costs seconds, not milliseconds


class Term(BaseModel):
    """One term of a composed query: exactly one of text, image_id, image or vector, with a signed weight."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS, json_schema_extra={"pattern": NOT_BLANK},
                             description="a text to embed: at least one character that is not white space")
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


class ComposedQuery(PagedQuery):
    """`POST /search`: terms combined as the normalised weighted sum of their normalised vectors."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"terms": [{"image_id": 42}, {"text": "blue"}, {"text": "red", "weight": -1}], "k": 10},
        {"terms": [{"image_id": 42}], "k": 10},
        {"terms": [{"text": "a red circle on the left and a blue square on the right"}], "rerank": True}]})

    terms: list[Term] = Field(..., min_length=1, max_length=MAX_TERMS)
    rerank: bool = Field(False, description="re-score the top max(k, 50) images with the model's cross-attention "
                         "matcher, reading the query's positive text terms; /info says whether it is available")

    @model_validator(mode="after")
    def answerable(self) -> ComposedQuery:
        try:
            check_weights([term.weight for term in self.terms])
        except InvalidQuery as error:
            raise ValueError(str(error)) from None  # a validation error (422 with its field), as pydantic reports
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

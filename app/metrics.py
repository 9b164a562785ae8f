"""Prometheus metrics: requests by route and status, latency per route and per query stage, batches, the index.

Everything is registered once per process in prometheus-client's default registry (as Prometheus clients
expect); `exposition()` renders it for GET /metrics. A leaf: it imports nothing of the service and no library
it describes. It is told what happens (`index_served`, `libraries_loaded`), and other code times a stage in
one line:

    with timed("embed"):
        vectors = model(batch)
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.context_managers import Timer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipspace import __version__

disable_created_metrics()  # the *_created samples only double what a scrape returns

STAGES = ("decode", "batch_wait", "embed", "search", "rerank")
QUEUES = ("text", "image")
UNMATCHED_ROUTE = "<unmatched>"  # any path no route knows: one label, so scanners cannot grow the series
MEDIA_TYPE = CONTENT_TYPE_LATEST
# From 0.5 ms (a FAISS search over a small index) to 10 s (a cold model or a huge upload on a busy CPU).
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

REQUESTS = Counter("clipspace_requests", "HTTP requests answered, by route template, method and status",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("clipspace_request_duration_seconds",
                            "Time from the request's arrival to the end of its answer, by route template",
                            ["route", "method"], buckets=SECONDS_BUCKETS)
STAGE_SECONDS = Histogram("clipspace_stage_duration_seconds",
                          "Time spent in one stage of a query: decode (an upload to pixels), batch_wait (queued "
                          "for the model), embed (one forward pass of a batch), search (FAISS and metadata), "
                          "rerank", ["stage"], buckets=SECONDS_BUCKETS)
BATCH_SIZE = Histogram("clipspace_batch_size", "Queries embedded together in one forward pass, by queue",
                       ["queue"], buckets=BATCH_BUCKETS)
QUEUE_DEPTH = Gauge("clipspace_queue_depth", "Queries waiting for the model, by queue", ["queue"])
INDEX_ITEMS = Gauge("clipspace_index_items", "Images in the index version being served (0 before one is loaded)")
INDEX_VERSION = Gauge("clipspace_index_version", "Number of the index version being served (0 before one is loaded)")
INDEX_INFO = Gauge("clipspace_index_info", "The index version being served and its model (value 1)",
                   ["version", "model"])
MODEL_LOAD_SECONDS = Gauge("clipspace_model_load_seconds", "Seconds the most recent model load took")
BUILD = Info("clipspace_build", "Versions of clipspace and of the libraries it computes with")
BUILD.info({"version": __version__, "python": platform.python_version()})  # the libraries join when loaded
_LIBRARIES: dict[str, str] = {}  # torch joins only when a model runs on it

# Every stage and queue is exported from the start, at zero, so dashboards never miss a series. The labelled
# children are looked up once here: `labels()` takes a lock and builds a key on every call, and a query
# touches these several times on the event loop.
_STAGES = {stage: STAGE_SECONDS.labels(stage) for stage in STAGES}
_BATCH_SIZES = {queue: BATCH_SIZE.labels(queue) for queue in QUEUES}
_QUEUE_DEPTHS = {queue: QUEUE_DEPTH.labels(queue) for queue in QUEUES}


def timed(stage: str) -> Timer:
    """A context manager (or decorator) that adds the time spent inside it to the stage's histogram."""
    return _stage(stage).time()


def observe_stage(stage: str, seconds: float) -> None:
    """For a stage whose start and end are not in one block (a query's wait in the batch queue)."""
    _stage(stage).observe(seconds)


def observe_batch(queue: str, size: int) -> None:
    _BATCH_SIZES[queue].observe(size)


def set_queue_depth(queue: str, depth: int) -> None:
    _QUEUE_DEPTHS[queue].set(depth)


def libraries_loaded(versions: Mapping[str, str]) -> None:
    """The versions of the libraries the service computes with, as each reports itself (`torch.__version__`
    names its build, e.g. `+cu130`, which the package metadata leaves out)."""
    _LIBRARIES.update(versions)
    BUILD.info({"version": __version__, "python": platform.python_version(), **_LIBRARIES})


def index_served(name: str, count: int, model: str) -> None:
    """A new index version is serving (the gauges read 0, and no info series, until one is)."""
    INDEX_INFO.clear()
    INDEX_INFO.labels(name, model).set(1)
    INDEX_ITEMS.set(count)
    INDEX_VERSION.set(int(name) if name.isdigit() else 0)


def exposition() -> bytes:
    """The text format Prometheus scrapes."""
    return generate_latest(REGISTRY)


def _stage(stage: str) -> Histogram:
    try:
        return _STAGES[stage]
    except KeyError:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}") from None


@functools.lru_cache(maxsize=1024)  # bounded anyway: route templates × methods × statuses
def _request_series(route: str, method: str, status: str) -> tuple[Counter, Histogram]:
    return REQUESTS.labels(route, method, status), REQUEST_SECONDS.labels(route, method)


class RequestMetrics:
    """ASGI middleware: counts and times every answer by route template, method and status.

    Add it last (outermost), so the 413 and 415 that BodyGuard answers before routing are counted too. The
    route label is the template (`/images/{item_id}`), never the raw path, which would give every id its own
    time series.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._literal_paths: frozenset[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before it starts an answer

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            requests, seconds = _request_series(self._route(scope), scope["method"], str(status))
            requests.inc()
            seconds.observe(time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        """The template of the route that answered; for a request refused before routing, its literal path."""
        route = scope.get("route")  # set by the router on the (shared) scope once a route is chosen
        if route is not None and hasattr(route, "path"):
            return route.path
        if self._literal_paths is None:
            self._literal_paths = frozenset(path for path in scope["app"].openapi()["paths"] if "{" not in path)
        return scope["path"] if scope["path"] in self._literal_paths else UNMATCHED_ROUTE

"""Routes found by their endpoint, as the app serves them: the one source of their paths, methods and dependencies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute


@dataclass(frozen=True)
class ServedRoute:
    route: APIRoute  # the route as declared: what the router puts in scope["route"]
    path: str
    methods: frozenset[str]
    dependant: Dependant  # with every dependency the app adds to it (app, include, router and route level)


def served_route(app: FastAPI, endpoint: Callable) -> ServedRoute:
    """The one route of `app` that answers with `endpoint`; an error if none or several do."""
    found = [route for route in _served_routes(app) if route.route.endpoint is endpoint]
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} routes of the app answer with {endpoint.__qualname__}; expected one")
    return found[0]


def _served_routes(app: FastAPI) -> Iterator[ServedRoute]:
    for route in app.routes:
        if isinstance(route, APIRoute):
            yield ServedRoute(route, route.path, frozenset(route.methods), route.dependant)
        # Since FastAPI 0.16x, an included router is served as a whole, each of its routes through a context
        # that adds the include's prefix and dependencies: that context is the route as served.
        for context in getattr(route, "effective_route_contexts", lambda: ())():
            if isinstance(context.original_route, APIRoute):
                yield ServedRoute(context.original_route, context.path, frozenset(context.methods),
                                  context.dependant)

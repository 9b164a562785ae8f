"""POST /search/text answered without the framework's layers, for a well-formed query.

A text query is the service's most frequent request and its cheapest: the forward pass takes ~7 ms on two
cores, and every layer of Python around it runs on caches that pass has just emptied. FastAPI's ~15 nested
ASGI layers, routing and dependency solving cost ~0.5 ms of that (docs/decisions.md, "The service as fast as
its encoder"), which is what kept an HTTP query above 1.2x the bare call.

It cannot drift from the route: it matches requests with the route object itself (path, methods, and what the
router writes in the scope), calls the route's endpoint, and `plan_shortcut` refuses, when the app is created,
a route that asks for anything the shortcut does not give (a header, a key check, a rate limit...).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_answer
from app.limits import read_body, replay
from app.routes import deps
from app.served_routes import ServedRoute
from clipspace.errors import ClipspaceError

# Everything a dependant can ask for besides its body and its dependencies.
_PARAMETERS = ("path_params", "query_params", "header_params", "cookie_params")
_SPECIAL = ("request_param_name", "websocket_param_name", "http_connection_param_name", "response_param_name",
            "background_tasks_param_name", "security_scopes_param_name")


class ShortcutOutOfStep(RuntimeError):
    """The route asks for something the shortcut does not give: teach the shortcut, or remove it."""


@dataclass(frozen=True)
class Shortcut:
    """What the shortcut gives the endpoint: the JSON body validated as the route's model, and the serving state
    from the route's own dependency (`deps.serving`), each under the parameter name the endpoint declares."""

    route: ServedRoute
    body_name: str
    body_model: type[BaseModel]
    serving_name: str


def plan_shortcut(served: ServedRoute) -> Shortcut:
    """The shortcut for `served`, or ShortcutOutOfStep naming what the route asks for that it does not give."""
    route, dependant = served.route, served.dependant
    problems = []
    if served.path != route.path or served.methods != {"POST"} or route.param_convertors:
        problems.append(f"it is served as {sorted(served.methods)} {served.path}, not as POST {route.path}")
    problems += _asks_beyond(dependant, allow_request=False)
    body = dependant.body_params
    model = body[0].field_info.annotation if len(body) == 1 and not body[0].field_info.embed else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        problems.append(f"its body is {[field.name for field in body]}, not one JSON object")
    given = [dependency for dependency in dependant.dependencies if dependency.call is deps.serving]
    others = [_name(dependency.call) for dependency in dependant.dependencies if dependency.call is not deps.serving]
    if len(given) != 1 or others:
        problems.append(f"it depends on {others or ['deps.serving'] * len(given)}, not on deps.serving alone")
    problems += [f"deps.serving: {problem}" for dependency in given
                 for problem in _asks_beyond(dependency, allow_request=True)]
    returns = typing.get_type_hints(route.endpoint).get("return")
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        problems.append(f"its endpoint returns {returns}, not a Response the shortcut can send as it is")
    if problems:
        raise ShortcutOutOfStep(f"app.shortcut cannot answer {route.path} as the route does: "
                                + "; ".join(problems))
    return Shortcut(served, body[0].name, model, given[0].name)


def _asks_beyond(dependant: Dependant, allow_request: bool) -> list[str]:
    asked = [f"{kind} {[field.name for field in getattr(dependant, kind)]}"
             for kind in _PARAMETERS if getattr(dependant, kind)]
    asked += [f"{kind.removesuffix('_param_name')} {getattr(dependant, kind)!r}" for kind in _SPECIAL
              if getattr(dependant, kind) and not (allow_request and kind == "request_param_name")]
    if allow_request and dependant.dependencies:
        asked.append(f"dependencies {[_name(dependency.call) for dependency in dependant.dependencies]}")
    return [f"it asks for {what}" for what in asked]


def _name(call: Callable | None) -> str:
    return f"{call.__module__}.{call.__qualname__}" if call is not None else "?"


class TextSearchShortcut:
    """ASGI middleware: answers a valid JSON request to its route itself, with the route's own endpoint.

    Anything that is not plainly a query to answer (another content type, a body that does not validate, no
    index loaded yet) goes to the FastAPI route with its body replayed, so every refusal keeps the status and
    detail the contract documents. Errors while answering get the same answers as the app's error handlers
    (`app.errors.error_answer`). Add it before `BodyGuard`, which bounds the body this reads.
    """

    def __init__(self, app: ASGIApp, shortcut: Shortcut) -> None:
        self.app = app
        self._route = shortcut.route.route
        self._endpoint: Callable = self._route.endpoint
        self._body_name, self._body_model = shortcut.body_name, shortcut.body_model
        self._serving_name = shortcut.serving_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _sends_json(scope):
            await self.app(scope, receive, send)
            return
        match, route_scope = self._route.matches(scope)  # path and method, as the router matches them
        if match is not Match.FULL:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)  # BodyGuard has bounded it
        if body is None:  # the client went away
            return
        try:
            query = self._body_model.model_validate_json(body)
            serving = await deps.serving(Request(scope))
        except (ValidationError, ClipspaceError):  # the route gives the refusal its documented answer
            await self.app(scope, replay(body, receive), send)
            return
        scope.update(route_scope)  # what the router would write: the metrics read the route's template from it
        try:
            answer = await self._endpoint(**{self._body_name: query, self._serving_name: serving})
        except Exception as error:
            answer = error_answer(scope["method"], self._route.path, error)
        await answer(scope, receive, send)


def _sends_json(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False

"""POST /search/text answered without the framework's layers, for a well-formed query.

A text query is the service's most frequent request and its cheapest: the forward pass takes ~7 ms on two
cores, and every layer of Python around it runs on caches that pass has just emptied. FastAPI's ~15 nested
ASGI layers, routing and dependency solving cost ~0.5 ms of that (docs/decisions.md, "The service as fast as
its encoder"), which is what kept an HTTP query above 1.2x the bare call.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from app import routes
from app.errors import error_answer
from app.limits import read_body, replay
from app.schemas import TextQuery

PATH = "/search/text"


class TextSearchShortcut:
    """ASGI middleware: answers a valid JSON `POST /search/text` itself, with the route's own code.

    Anything that is not plainly a query to answer (another content type, a body that does not validate, no
    index loaded yet) goes to the FastAPI route with its body replayed, so every refusal keeps the status and
    detail the contract documents. Errors while answering get the same answers as the app's error handlers
    (`app.errors.error_answer`). Add it before `BodyGuard`, which bounds the body this reads.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # what the router would put in the scope: the metrics read their route label from it
        self._route = next(route for route in routes.search.routes if route.endpoint is routes.search_text)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"
                and _sends_json(scope)):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)  # BodyGuard has bounded it
        if body is None:  # the client went away
            return
        serving = scope["app"].state.holder.engine
        try:
            query = TextQuery.model_validate_json(body)
        except ValidationError:
            query = None
        if query is None or serving is None:
            await self.app(scope, replay(body, receive), send)
            return
        scope["route"] = self._route
        try:
            answer = await routes.answer_text_query(query, serving)
        except Exception as error:
            answer = error_answer(scope["method"], PATH, error)
        await answer(scope, receive, send)


def _sends_json(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False


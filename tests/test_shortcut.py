"""The text shortcut cannot drift from its route: the app is not made when the route asks for more than it gives."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header

from app.factory import create_app
from app.routes import search
from app.served_routes import served_route
from app.shortcut import ShortcutOutOfStep, plan_shortcut
from clipspace.settings import Settings


async def api_key(authorization: str | None = Header(None)) -> None:
    """A key check, as the trust work will add: the shortcut would skip it for JSON clients."""


def with_key_check(router: APIRouter) -> APIRouter:
    """A copy of `router` whose text route also depends on `api_key`."""
    copy = APIRouter()
    for route in router.routes:
        extra = [Depends(api_key)] if route.endpoint is search.search_text else []
        copy.add_api_route(route.path, route.endpoint, methods=list(route.methods),
                           response_model=route.response_model, dependencies=[*route.dependencies, *extra])
    return copy


def test_create_app_refuses_a_text_route_with_a_dependency_the_shortcut_does_not_give(monkeypatch, tmp_path):
    monkeypatch.setattr(search, "router", with_key_check(search.router))
    with pytest.raises(ShortcutOutOfStep, match="api_key"):
        create_app(Settings(index_dir=tmp_path))


def test_create_app_takes_the_text_route_as_it_is(tmp_path):
    create_app(Settings(index_dir=tmp_path))


@pytest.mark.parametrize("served_as", [
    {"dependencies": [Depends(api_key)]},  # a dependency added where the router is included
    {"prefix": "/v1"},  # another path than the route declares
], ids=["include-dependency", "include-prefix"])
def test_the_shortcut_refuses_a_route_the_app_serves_otherwise_than_declared(served_as):
    app = FastAPI()
    app.include_router(search.router, **served_as)
    with pytest.raises(ShortcutOutOfStep):
        plan_shortcut(served_route(app, search.search_text))


def test_the_shortcut_refuses_an_app_wide_dependency():
    app = FastAPI(dependencies=[Depends(api_key)])
    app.include_router(search.router)
    with pytest.raises(ShortcutOutOfStep, match="api_key"):
        plan_shortcut(served_route(app, search.search_text))

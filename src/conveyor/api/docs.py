"""The API's own documentation: the OpenAPI document and ``/docs``, both offline and exact.

- Every 4xx/5xx response in the OpenAPI document is ``application/problem+json`` (FastAPI
  declares its validation 422s as ``application/json``, which the server never sends).
- ``/docs`` is Swagger UI with its assets served from the ``swagger-ui-bundle`` package, never
  from a CDN, so it works on an offline machine. Without the package, ``/docs`` says so and
  links the OpenAPI document (still no outside host). ReDoc, CDN-only, is not served.
- Keyed operations (those with a :func:`~conveyor.auth.deps.require` dependency) declare the
  bearer key, document 401 and 403, and show the key as optional (open modes).
- Responses that return a job carry OpenAPI links to the job's operations (:mod:`.links`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from conveyor.api.links import add_links
from conveyor.auth.deps import BEARER_NAME, BEARER_SCHEME, is_keyed
from conveyor.problems import problem_schema

ASSETS = "/docs/assets"
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def swagger_ui_dir() -> Path | None:
    """Where the installed swagger-ui-bundle keeps Swagger UI's files, if it is installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def problems_only(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare every error response as problem+json and drop FastAPI's unused error schemas."""
    problem = problem_schema()["content"]
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if str(status)[:1] in ("4", "5"):
                    response["content"] = problem
                    if response.get("description") == "Validation Error":
                        response["description"] = "Bad parameters (problem+json)"
    schemas = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_ERROR_SCHEMAS:
        schemas.pop(name, None)
    return schema


def _keyed(dependant: Dependant) -> bool:
    return any(is_keyed(dep.call) or _keyed(dep) for dep in dependant.dependencies)


def _api_routes(app: FastAPI) -> Iterator[tuple[str, set[str], Dependant]]:
    """Each API route's path, methods and dependencies (its routers' included). FastAPI 0.165
    keeps included routers nested (walked by ``iter_route_contexts``); earlier versions copy
    their routes into ``app.routes``."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = contexts(app.routes) if contexts is not None else app.routes
    for route in routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route.path_format, route.methods, route.dependant


def bearer_security(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the bearer key on every operation whose route (or router) has a ``require``
    dependency, and the scheme itself."""
    paths = schema.get("paths", {})
    for path, methods, dependant in _api_routes(app):
        if path not in paths or not _keyed(dependant):
            continue
        for method in methods:
            operation = paths[path].get(method.lower())
            if isinstance(operation, dict):
                operation["security"] = [{BEARER_NAME: []}]
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[BEARER_NAME] = dict(BEARER_SCHEME)
    return schema


def bearer_optional(schema: dict[str, Any]) -> dict[str, Any]:
    """Every keyed operation: 401 and 403 documented, and the key optional (``{}`` among its
    security requirements), since a server on loopback without keys, or with
    ``CONVEYOR_AUTH=none``, runs open."""
    problem = problem_schema()
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or not operation.get("security"):
                continue
            if {} not in operation["security"]:
                operation["security"].append({})
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", {**problem, "description": "no usable API key"})
            responses.setdefault("403", {**problem, "description": "the key lacks the scope"})
    return schema


def install(app: FastAPI) -> None:
    """Serve ``/docs`` offline and post-process the OpenAPI document (build with docs off)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = bearer_security(app, problems_only(generate()))
            app.openapi_schema = add_links(bearer_optional(schema))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    assets = swagger_ui_dir()
    if assets is not None:
        app.mount(ASSETS, StaticFiles(directory=assets), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if assets is None:
            return HTMLResponse(
                "<!doctype html><title>conveyor API</title><p>Swagger UI is not installed "
                "(<code>pip install swagger-ui-bundle</code>). The API is described by "
                f'<a href="{app.openapi_url}">{app.openapi_url}</a>.</p>'
            )
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

"""The isolation matrix: every route of the app x {no key, revoked key, wrong scope, another
tenant's key, own key} -> the expected status, and no byte of tenant ``a``'s data in any answer
given to anyone else.

The routes come from the application's route table; :data:`ROUTES` gives each one its scope,
the status its own key gets, and example path parameters / bodies. A route missing from it
fails :func:`test_every_route_is_in_the_matrix` (and its own cases), so a new route cannot slip
through. To add one (tus uploads, ``GET /v1/tenant``...), add a :class:`Case` line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from conveyor.api import create_app
from conveyor.auth import ADMIN, READ, WRITE
from tests.auth.conftest import Keyed

#: Open to anyone, keys or not (the UI's static files are a mount: not listed).
OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"), ("GET", "/docs"),
        ("GET", "/")}
NEVER = "01NEVEREXISTED000000000000"
SECRET = b"tenant-a-secret-bytes"

Params = Callable[["World"], dict[str, str]]


@dataclass
class World:
    """Tenant ``a``'s data, made once per module: a finished job with an artifact."""

    keyed: Keyed
    job: str = ""
    upload: str = ""
    made: int = 0

    def fresh_job(self) -> str:
        return self.keyed.submit("rw", "echo", SECRET)

    def fresh_upload(self) -> str:
        resp = httpx.post(f"{self.keyed.url}/v1/uploads", headers={
            **self.keyed.h("rw"), **TUS, "Upload-Length": "10"})
        assert resp.status_code == 201, resp.text
        return str(resp.headers["location"]).rsplit("/", 1)[1]

    def fresh_key(self) -> str:
        resp = httpx.post(f"{self.keyed.url}/v1/keys", headers=self.keyed.h("admin"),
                          json={"tenant": "a", "scopes": ["jobs:read"]})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def fresh_tenant(self) -> str:
        self.made += 1
        name = f"t{time.time_ns()}-{self.made}"
        resp = httpx.post(f"{self.keyed.url}/v1/tenants", headers=self.keyed.h("admin"),
                          json={"id": name})
        assert resp.status_code == 201, resp.text
        return name


TUS = {"Tus-Resumable": "1.0.0"}
NEVER_UPLOAD = "01NEVER" + "Z" * 19  # a well-formed ULID no upload has


def _upload(w: World) -> dict[str, str]:
    return {"upload_id": w.upload}


def _fresh_upload(w: World) -> dict[str, str]:
    return {"upload_id": w.fresh_upload()}


def _tus(**more: str) -> Callable[[World], dict[str, Any]]:
    return lambda w: {"headers": {**TUS, **more}}


def _job(w: World) -> dict[str, str]:
    return {"job_id": w.job}


def _artifact(w: World) -> dict[str, str]:
    return {"job_id": w.job, "name": "echo.bin"}


@dataclass
class Case:
    #: The scope the route needs (None: any valid key).
    scope: str | None
    #: The status the tenant's own key (with that scope) gets.
    own: int
    path: Params = field(default=lambda w: {})
    #: ``httpx.request`` keyword arguments (json=, files=, data=, params=).
    request: Callable[[World], dict[str, Any]] = field(default=lambda w: {})
    sse: bool = False
    #: The path names no resource of the caller's (tus OPTIONS answers the capabilities).
    anonymous_path: bool = False


ROUTES: dict[tuple[str, str], Case] = {
    ("POST", "/v1/jobs"): Case(WRITE, 202, request=lambda w: {
        "files": {"file": ("m.bin", b"matrix")}, "data": {"pipeline": "echo"}}),
    ("GET", "/v1/jobs"): Case(READ, 200),
    ("GET", "/v1/jobs/{job_id}"): Case(READ, 200, _job),
    ("POST", "/v1/jobs/{job_id}/cancel"): Case(WRITE, 409, _job),  # it ended: past auth
    ("POST", "/v1/jobs/{job_id}/retry"): Case(WRITE, 409, _job),  # it succeeded
    ("DELETE", "/v1/jobs/{job_id}"): Case(WRITE, 204, lambda w: {"job_id": w.fresh_job()}),
    ("GET", "/v1/jobs/{job_id}/deliveries"): Case(READ, 200, _job),
    ("GET", "/v1/jobs/{job_id}/input"): Case(READ, 200, _job),
    ("HEAD", "/v1/jobs/{job_id}/input"): Case(READ, 200, _job),
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}"): Case(READ, 200, _artifact),
    ("HEAD", "/v1/jobs/{job_id}/artifacts/{name}"): Case(READ, 200, _artifact),
    ("GET", "/v1/jobs/{job_id}/events"): Case(READ, 200, _job, sse=True),
    ("GET", "/v1/events"): Case(READ, 200, request=lambda w: {"params": {"after": "0"}},
                                sse=True),
    ("GET", "/v1/pipelines"): Case(READ, 200),
    ("GET", "/v1/tenant"): Case(READ, 200),
    ("OPTIONS", "/v1/uploads"): Case(WRITE, 204, request=_tus()),
    ("OPTIONS", "/v1/uploads/{upload_id}"): Case(WRITE, 204, _upload, request=_tus(),
                                                 anonymous_path=True),
    ("POST", "/v1/uploads"): Case(WRITE, 201, request=_tus(**{"Upload-Length": "10"})),
    ("HEAD", "/v1/uploads/{upload_id}"): Case(WRITE, 200, _upload, request=_tus()),
    ("PATCH", "/v1/uploads/{upload_id}"): Case(WRITE, 204, _fresh_upload, request=lambda w: {
        "headers": {**TUS, "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream"},
        "content": b"hello"}),
    ("DELETE", "/v1/uploads/{upload_id}"): Case(WRITE, 204, _fresh_upload, request=_tus()),
    ("GET", "/metrics"): Case(ADMIN, 200),
    ("GET", "/v1/whoami"): Case(None, 200),
    ("POST", "/v1/keys"): Case(ADMIN, 201, request=lambda w: {
        "json": {"tenant": "a", "scopes": ["jobs:read"]}}),
    ("GET", "/v1/keys"): Case(ADMIN, 200),
    ("DELETE", "/v1/keys/{key_id}"): Case(ADMIN, 204, lambda w: {"key_id": w.fresh_key()}),
    ("POST", "/v1/tenants"): Case(ADMIN, 201, request=lambda w: {
        "json": {"id": f"n{time.time_ns()}"}}),
    ("GET", "/v1/tenants"): Case(ADMIN, 200),
    ("GET", "/v1/tenants/{tenant_id}"): Case(ADMIN, 200, lambda w: {"tenant_id": "a"}),
    ("PATCH", "/v1/tenants/{tenant_id}"): Case(ADMIN, 200, lambda w: {"tenant_id": "a"},
                                               request=lambda w: {"json": {"max_queued": 1000}}),
    ("DELETE", "/v1/tenants/{tenant_id}"): Case(ADMIN, 204,
                                                lambda w: {"tenant_id": w.fresh_tenant()}),
    ("POST", "/v1/tenants/{tenant_id}/webhook-secret/rotate"): Case(
        ADMIN, 200, lambda w: {"tenant_id": "a"}),
}

#: The key each identity uses, by the scope the route needs.
WRONG_SCOPE = {READ: "write", WRITE: "read", ADMIN: "rw"}
OWN = {READ: "read", WRITE: "write", ADMIN: "admin", None: "read"}
IDENTITIES = ("none", "revoked", "wrong_scope", "other_tenant", "own")


def app_routes() -> list[tuple[str, str]]:
    """Every (method, path) the application serves, from its route table."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(list(inner.routes))
            elif isinstance(route, APIRoute | Route):
                for method in route.methods or ():
                    if method != "HEAD" or isinstance(route, APIRoute):
                        found.add((method, route.path))

    walk(list(create_app().routes))
    return sorted(found)


ALL = app_routes()


def test_every_route_is_in_the_matrix() -> None:
    missing = [r for r in ALL if r not in ROUTES and r not in OPEN]
    assert not missing, f"routes without a matrix entry (add them to ROUTES): {missing}"
    stale = [r for r in ROUTES if r not in ALL]
    assert not stale, f"matrix entries for routes the app does not serve: {stale}"


def test_the_openapi_document_declares_the_key_on_every_keyed_operation() -> None:
    """The bearer scheme is added to the document after it is generated (it is no dependency
    of its own): on every operation of the matrix, on none of the open ones."""
    doc = create_app().openapi()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    documented = {(method.upper(), path): operation
                  for path, operations in doc["paths"].items()
                  for method, operation in operations.items() if isinstance(operation, dict)}
    keyed = {op for op in documented if op in ROUTES}
    assert len(keyed) >= 30, sorted(documented)
    for op in keyed:
        assert documented[op].get("security") == [{"HTTPBearer": []}, {}], op
    for op in set(documented) - keyed:
        assert op in OPEN and "security" not in documented[op], op


@pytest.fixture(scope="module")
def world(keyed: Keyed) -> World:
    w = World(keyed)
    w.job = w.fresh_job()
    w.upload = w.fresh_upload()
    assert keyed.wait("rw", w.job)["state"] == "succeeded"
    return w


def _send(w: World, method: str, path: str, case: Case, headers: dict[str, str],
          params: dict[str, str]) -> tuple[int, bytes, httpx.Headers]:
    url = w.keyed.url + path.format(**params)
    kwargs = case.request(w)
    headers = {**kwargs.pop("headers", {}), **headers}
    if not case.sse:
        resp = httpx.request(method, url, headers=headers, timeout=30, **kwargs)
        return resp.status_code, resp.content, resp.headers
    body = b""
    with httpx.stream(method, url, headers=headers, timeout=30, **kwargs) as resp:
        if resp.status_code == 200:
            deadline = time.monotonic() + 1.5
            for chunk in resp.iter_raw():
                body += chunk
                if time.monotonic() > deadline:
                    break  # the global stream never ends by itself
        else:
            body = resp.read()
        return resp.status_code, body, resp.headers


def _identity(identity: str, scope: str | None) -> str | None:
    if identity == "none":
        return None
    if identity == "revoked":
        return "revoked"
    if identity == "wrong_scope":
        return WRONG_SCOPE.get(scope) if scope else None
    if identity == "other_tenant":
        return "b"
    return OWN[scope]


def _leaks(w: World, body: bytes) -> list[str]:
    return [s for s in (w.job, SECRET.decode()) if s.encode() in body]


def _cases() -> list[tuple[str, str, str]]:
    """Every served route x every identity; a route that takes any valid key has no wrong
    scope, so that one pair is not a case."""
    return [(m, p, who) for m, p in ALL if (m, p) not in OPEN for who in IDENTITIES
            if not (who == "wrong_scope" and (m, p) in ROUTES and ROUTES[(m, p)].scope is None)]


@pytest.mark.parametrize(("method", "path", "identity"), _cases(),
                         ids=[f"{m} {p}-{who}" for m, p, who in _cases()])
def test_route(world: World, method: str, path: str, identity: str) -> None:
    case = ROUTES.get((method, path))
    if case is None:
        pytest.fail(f"{method} {path} is not in the matrix: add it to ROUTES")
    role = _identity(identity, case.scope)
    headers = world.keyed.h(role) if role else {}
    params = case.path(world)
    status, body, resp_headers = _send(world, method, path, case, headers, params)
    if identity in ("none", "revoked"):
        assert status == 401, body
        assert resp_headers["www-authenticate"].startswith("Bearer")
        if method != "HEAD":
            assert b'"code":"unauthorized"' in body
    elif identity == "wrong_scope":
        assert status == 403, body
        if method != "HEAD":
            assert b'"code":"forbidden"' in body
    elif identity == "other_tenant":
        _other_tenant(world, method, path, case, params, status, body, resp_headers)
    else:
        assert status == case.own, body
    if identity != "own":
        # The id the caller sent may be echoed ("no job <id>", as for any id); nothing else.
        echoed = body.replace(params["job_id"].encode(), b"") if "job_id" in params else body
        assert not _leaks(world, echoed), f"tenant a's data in the answer: {body[:300]!r}"


def _other_tenant(w: World, method: str, path: str, case: Case, params: dict[str, str],
                  status: int, body: bytes, headers: httpx.Headers) -> None:
    if case.scope == ADMIN:
        assert status == 403, body
        return
    if "{upload_id}" in path and not case.anonymous_path:
        # Tenant a's upload is, to tenant b, exactly an upload that never existed.
        never = {**params, "upload_id": NEVER_UPLOAD}
        n_status, n_body, _ = _send(w, method, path, case, w.keyed.h("b"), never)
        assert status == n_status == 404, body
        assert body.replace(params["upload_id"].encode(), b"<id>") == n_body.replace(
            NEVER_UPLOAD.encode(), b"<id>")
        still = httpx.head(f"{w.keyed.url}/v1/uploads/{params['upload_id']}",
                           headers={**w.keyed.h("rw"), **TUS})
        assert still.status_code == 200
        return
    if "{job_id}" not in path:  # (an anonymous upload path included)
        # A collection (list, global events, upload, pipelines, whoami): the tenant's own view.
        assert status == case.own, body
        return
    # Tenant a's job is, to tenant b, exactly an id that never existed.
    never = {**params, "job_id": NEVER}
    n_status, n_body, n_headers = _send(w, method, path, case, w.keyed.h("b"), never)
    assert status == n_status == 404, body
    assert body.replace(params["job_id"].encode(), b"<id>") == n_body.replace(
        NEVER.encode(), b"<id>")
    assert headers.get("content-type") == n_headers.get("content-type")
    # ... and it is untouched.
    still = httpx.get(f"{w.keyed.url}/v1/jobs/{params['job_id']}", headers=w.keyed.h("rw"))
    assert still.status_code == 200


def test_whoami_names_the_tenant(keyed: Keyed) -> None:
    for role, tenant in (("rw", "a"), ("b", "b"), ("admin", "a")):
        me = httpx.get(f"{keyed.url}/v1/whoami", headers=keyed.h(role)).json()
        assert me["tenant"] == tenant and me["key_prefix"] == keyed.keys[role].prefix
        assert keyed.keys[role].key not in str(me)


def test_admin_lists_any_tenant_with_the_tenant_parameter(world: World) -> None:
    url = world.keyed.url + "/v1/jobs"
    b_job = world.keyed.submit("b", "echo", b"b's file")
    own = httpx.get(url, headers=world.keyed.h("admin")).json()["items"]
    assert world.job in {j["id"] for j in own} and b_job not in {j["id"] for j in own}
    every = httpx.get(url, params={"tenant": "*"}, headers=world.keyed.h("admin")).json()
    assert {world.job, b_job} <= {j["id"] for j in every["items"]}
    only_b = httpx.get(url, params={"tenant": "b"}, headers=world.keyed.h("admin")).json()
    assert b_job in {j["id"] for j in only_b["items"]}
    assert world.job not in {j["id"] for j in only_b["items"]}
    refused = httpx.get(url, params={"tenant": "a"}, headers=world.keyed.h("b"))
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    # An admin reads any tenant's job by id.
    assert httpx.get(f"{url}/{b_job}", headers=world.keyed.h("admin")).status_code == 200


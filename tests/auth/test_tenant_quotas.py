"""Quotas per tenant with API keys: one tenant's quota never refuses another tenant, the rate
limit counts per tenant, ``GET /v1/tenant`` answers for the key's tenant, and ``conveyor
tenants set-quota`` on a running server applies without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.auth.conftest import Keyed, cli, keyed_server

UPLOAD = "/v1/jobs?pipeline=noop&filename=q.bin"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    yield from keyed_server(tmp_path_factory, "tenant-quotas", CONVEYOR_WORKERS="0")


def upload(keyed: Keyed, role: str) -> httpx.Response:
    return httpx.post(keyed.url + UPLOAD, content=b"q" * 10, headers=keyed.h(role), timeout=30)


def until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("the quota change did not apply")


def test_a_tenants_quota_refuses_only_that_tenant(keyed: Keyed) -> None:
    cli(keyed.srv.env, "tenants", "set-quota", "a", "--max-queued", "1")
    until(lambda: upload(keyed, "rw").status_code == 429)
    refused = upload(keyed, "rw")
    assert refused.status_code == 429 and refused.json()["code"] == "quota_exceeded"
    assert refused.headers["ratelimit-policy"] == '"max_queued";q=1'
    assert upload(keyed, "b").status_code == 202
    mine = httpx.get(keyed.url + "/v1/tenant", headers=keyed.h("read")).json()
    assert mine["id"] == "a" and mine["quotas"]["max_queued"] == 1
    assert mine["usage"]["queued"] == 1
    theirs = httpx.get(keyed.url + "/v1/tenant", headers=keyed.h("b")).json()
    assert theirs["id"] == "b" and theirs["quotas"]["max_queued"] is None
    cli(keyed.srv.env, "tenants", "set-quota", "a", "--max-queued", "none")
    until(lambda: upload(keyed, "rw").status_code == 202)


def test_the_request_rate_counts_per_tenant(keyed: Keyed) -> None:
    cli(keyed.srv.env, "tenants", "set-quota", "b", "--requests-per-s", "0.1")
    time.sleep(1.1)  # past the quota cache
    codes = [httpx.get(keyed.url + "/v1/jobs", headers=keyed.h("b")).status_code
             for _ in range(3)]
    assert codes.count(429) >= 2
    limited = httpx.get(keyed.url + "/v1/jobs", headers=keyed.h("b"))
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert limited.headers["ratelimit"].startswith('"requests_per_s";r=0;')
    assert all(httpx.get(keyed.url + "/v1/jobs", headers=keyed.h("read")).status_code == 200
               for _ in range(5))
    # A request without a usable key is 401, and counts nothing.
    assert httpx.get(keyed.url + "/v1/jobs").status_code == 401
    cli(keyed.srv.env, "tenants", "set-quota", "b", "--requests-per-s", "none")

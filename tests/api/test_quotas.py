"""Tenant quotas over HTTP against real `conveyor serve` processes, on SQLite and PostgreSQL:
the answer (status, code, RateLimit headers), nothing kept of a refused upload, counters exact
under 50 concurrent requests (also across two server processes), quota changes without restart.

The servers run open (no key exists), so every request is the implicit tenant ``default``;
quotas are set with SQL, as another process (``conveyor tenants set-quota``) would.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from conveyor.store.db import normalise_url
from tests.conftest import Server, need_module
from tests.engine.conftest import db_url  # noqa: F401  (the SQLite/PostgreSQL fixture)

UPLOAD = "/v1/jobs?pipeline=noop&filename=a.bin"
N = 50


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:  # noqa: F811
    engine = create_engine(normalise_url(db_url))
    yield engine
    engine.dispose()


@pytest.fixture
def serve(server_factory: Callable[..., Server], db_url: str) -> Callable[..., Server]:  # noqa: F811
    def start(**env: str) -> Server:
        return server_factory(CONVEYOR_WORKERS="0", CONVEYOR_DATABASE_URL=db_url, **env)
    return start


def set_quota(db: Engine, **quotas: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in quotas)
    with db.begin() as conn:
        conn.execute(text(f"UPDATE tenants SET {sets} WHERE id = 'default'"), quotas)


def scalar(db: Engine, sql: str) -> Any:
    with db.connect() as conn:
        return conn.execute(text(sql)).scalar()


def upload(url: str, data: bytes = b"x" * 100) -> httpx.Response:
    return httpx.post(url + UPLOAD, content=data, timeout=60)


def race(urls: list[str], data: bytes = b"x" * 100, n: int = N) -> list[httpx.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: upload(urls[i % len(urls)], data), range(n)))


def assert_refused(resp: httpx.Response, status: int, code: str, policy: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code
    assert resp.headers["ratelimit-policy"].startswith(f'"{policy}";q=')
    assert resp.headers["ratelimit"].startswith(f'"{policy}";r=')
    if status == 429:
        assert int(resp.headers["retry-after"]) >= 1


def assert_kept(srv: Server, db: Engine, jobs: int) -> None:
    """Exactly ``jobs`` jobs and their inputs, and no half-written file."""
    assert scalar(db, "SELECT count(*) FROM jobs") == jobs
    assert len(srv.stored("inputs/")) == jobs
    assert srv.unfinished() == []


def raw_request(srv: Server, head: str, body: bytes = b"") -> tuple[int, dict[str, str],
                                                                     dict[str, Any]]:
    """Send a request head (and maybe part of a body) on a socket; the answer must come
    without the rest of the body."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    top, _, payload = raw.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(payload)


def test_max_queued_50_racing_uploads_take_exactly_the_free_slots(
        serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    set_quota(db, max_queued=5)
    answers = race([srv.url])
    assert sorted(r.status_code for r in answers) == [202] * 5 + [429] * (N - 5)
    refused = next(r for r in answers if r.status_code == 429)
    assert_refused(refused, 429, "quota_exceeded", "max_queued")
    assert refused.headers["ratelimit-policy"] == '"max_queued";q=5'
    assert refused.headers["ratelimit"].startswith('"max_queued";r=0;')
    assert_kept(srv, db, 5)
    # Refused from the headers alone now that the queue is full: no body needed.
    status, headers, body = raw_request(
        srv, f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    assert status == 429 and body["code"] == "quota_exceeded" and "ratelimit" in headers
    assert_kept(srv, db, 5)


def test_bytes_per_day_50_racing_uploads_never_overshoot(
        serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    set_quota(db, bytes_per_day=1000)
    answers = race([srv.url], b"y" * 100)
    assert [r.status_code for r in answers].count(202) == 10
    refused = next(r for r in answers if r.status_code == 429)
    assert_refused(refused, 429, "quota_exceeded", "bytes_per_day")
    assert refused.headers["ratelimit-policy"] == \
        '"bytes_per_day";q=1000;w=86400;qu="content-bytes"'
    assert scalar(db, "SELECT sum(bytes) FROM tenant_usage WHERE tenant_id = 'default'") == 1000
    assert_kept(srv, db, 10)
    tenant = httpx.get(srv.url + "/v1/tenant").json()
    assert tenant["usage"]["bytes_today"] == 1000 and tenant["quotas"]["bytes_per_day"] == 1000


def test_storage_bytes_50_racing_uploads_never_overshoot(
        serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    set_quota(db, storage_bytes=700)
    answers = race([srv.url], b"z" * 100)
    assert [r.status_code for r in answers].count(202) == 7
    assert_refused(next(r for r in answers if r.status_code == 429), 429, "quota_exceeded",
                   "storage_bytes")
    assert_kept(srv, db, 7)
    # Deleting a job frees its bytes.
    job_id = next(r.json()["id"] for r in answers if r.status_code == 202)
    assert httpx.delete(f"{srv.url}/v1/jobs/{job_id}").status_code == 204
    assert upload(srv.url, b"z" * 100).status_code == 202


def test_max_upload_bytes_413_from_the_header_and_mid_stream(
        serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    set_quota(db, max_upload_bytes=1000)
    # From Content-Length alone: answered while the body is still unsent.
    status, headers, body = raw_request(
        srv, f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", b"a" * 10)
    assert status == 413 and body["code"] == "too_large"
    assert headers["ratelimit-policy"] == '"max_upload_bytes";q=1000;qu="content-bytes"'
    assert "retry-after" not in headers  # waiting does not help
    # Chunked (no length): stopped when the count passes the quota.
    resp = httpx.post(srv.url + UPLOAD, content=iter([b"b" * 600, b"b" * 600]), timeout=30)
    assert_refused(resp, 413, "too_large", "max_upload_bytes")
    assert_kept(srv, db, 0)
    assert upload(srv.url, b"c" * 1000).status_code == 202


def test_a_chunked_upload_crossing_bytes_per_day_stops_and_keeps_nothing(
        serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    set_quota(db, bytes_per_day=1500)
    assert upload(srv.url, b"d" * 1000).status_code == 202
    resp = httpx.post(srv.url + UPLOAD, content=iter([b"e" * 400, b"e" * 400]), timeout=30)
    assert_refused(resp, 429, "quota_exceeded", "bytes_per_day")
    assert_kept(srv, db, 1)
    assert scalar(db, "SELECT sum(bytes) FROM tenant_usage") == 1000
    # Multipart too: the file part is counted, not the framing.
    files = {"file": ("f.bin", b"f" * 800)}
    resp = httpx.post(srv.url + "/v1/jobs", data={"pipeline": "noop"}, files=files)
    assert_refused(resp, 429, "quota_exceeded", "bytes_per_day")
    files = {"file": ("f.bin", b"f" * 500)}
    resp = httpx.post(srv.url + "/v1/jobs", data={"pipeline": "noop"}, files=files)
    assert resp.status_code == 202, resp.text
    assert_kept(srv, db, 2)


def test_a_raised_quota_applies_without_restart(
        serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    set_quota(db, max_queued=1)
    assert upload(srv.url).status_code == 202
    assert upload(srv.url).status_code == 429
    set_quota(db, max_queued=2)
    deadline = time.monotonic() + 10
    while (status := upload(srv.url).status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 202
    set_quota(db, max_queued=None)
    assert upload(srv.url).status_code in (202, 429)  # within a second: no limit at all
    time.sleep(1.1)
    assert upload(srv.url).status_code == 202


def test_request_rate_429_rate_limited(serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    set_quota(db, requests_per_s=0.1)  # one request per 10 s window
    time.sleep(1.1)  # past the quota cache
    started = time.monotonic()
    with ThreadPoolExecutor(N) as pool:
        answers = list(pool.map(lambda _: httpx.get(srv.url + "/v1/jobs", timeout=30),
                                range(N)))
    took = time.monotonic() - started
    if took >= 10:
        pytest.skip(f"the burst took {took:.1f} s, longer than the window, on this machine")
    assert sorted(r.status_code for r in answers) == [200] + [429] * (N - 1)
    refused = next(r for r in answers if r.status_code == 429)
    assert_refused(refused, 429, "rate_limited", "requests_per_s")
    assert refused.headers["ratelimit-policy"] == '"requests_per_s";q=1;w=10;qu="request"'
    # The one request allowed was told it used the window's only one.
    allowed = next(r for r in answers if r.status_code == 200)
    assert allowed.headers["ratelimit-policy"] == '"requests_per_s";q=1;w=10;qu="request"'
    assert allowed.headers["ratelimit"].startswith('"requests_per_s";r=0;t=')
    # Health checks are not a tenant's requests.
    health = httpx.get(srv.url + "/healthz")
    assert health.status_code == 200 and "ratelimit" not in health.headers


def test_allowed_requests_carry_the_rate_left(serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    # No requests_per_s: nothing to tell.
    assert "ratelimit" not in httpx.get(srv.url + "/v1/jobs").headers
    set_quota(db, requests_per_s=1000)
    time.sleep(1.1)  # past the quota cache
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        first, second = http.get("/v1/jobs"), upload(srv.url)
    assert first.status_code == 200 and second.status_code == 202
    for answer in (first, second):
        assert answer.headers["ratelimit-policy"] == '"requests_per_s";q=1000;w=1;qu="request"'
        policy, left, reset = answer.headers["ratelimit"].split(";")
        assert policy == '"requests_per_s"' and reset == "t=1"
        assert 0 < int(left.removeprefix("r=")) < 1000  # this request counted
    # A refusal by another quota names that quota, not the request rate.
    set_quota(db, requests_per_s=1000, max_upload_bytes=10)
    time.sleep(1.1)
    too_big = upload(srv.url, b"x" * 100)
    assert_refused(too_big, 413, "too_large", "max_upload_bytes")
    assert too_big.headers["ratelimit"].startswith('"max_upload_bytes";')


def test_get_tenant_shows_quotas_and_usage(serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    set_quota(db, max_queued=10, max_running=2, storage_bytes=10_000)
    for _ in range(3):
        assert upload(srv.url, b"q" * 100).status_code == 202
    body = httpx.get(srv.url + "/v1/tenant").json()
    assert body["id"] == "default"
    assert body["quotas"] == {"max_queued": 10, "max_running": 2, "max_upload_bytes": None,
                              "bytes_per_day": None, "storage_bytes": 10_000,
                              "requests_per_s": None}
    usage = body["usage"]
    assert (usage["queued"], usage["running"], usage["bytes_today"],
            usage["storage_bytes"]) == (3, 0, 300, 300)
    spec = httpx.get(srv.url + "/openapi.json").json()
    ok = spec["paths"]["/v1/tenant"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/TenantUsageOut")
    assert "429" in spec["paths"]["/v1/jobs"]["post"]["responses"]


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # processes share PostgreSQL
def test_two_server_processes_share_the_quotas(server_factory: Callable[..., Server],
                                               db_url: str, db: Engine) -> None:  # noqa: F811
    redis = need_module("redis", "the shared request-rate counters")
    store = "redis://127.0.0.1:6379/15"
    try:
        r = redis.Redis.from_url(store)
        for key in r.scan_iter("*conveyor/default*"):
            r.delete(key)
    except redis.ConnectionError as exc:
        from tests.conftest import need_service

        need_service("Redis on 127.0.0.1:6379", str(exc))
    env = {"CONVEYOR_WORKERS": "0", "CONVEYOR_DATABASE_URL": db_url,
           "CONVEYOR_RATE_LIMIT_STORAGE": store}
    one, two = server_factory(**env), server_factory(**env)
    set_quota(db, max_queued=5)
    answers = race([one.url, two.url])
    assert sorted(r.status_code for r in answers) == [202] * 5 + [429] * (N - 5)
    assert scalar(db, "SELECT count(*) FROM jobs") == 5
    assert len(one.stored("inputs/")) + len(two.stored("inputs/")) == 5
    assert one.unfinished() == [] and two.unfinished() == []
    set_quota(db, max_queued=None, bytes_per_day=1000)
    time.sleep(1.1)
    answers = race([one.url, two.url], b"w" * 100)
    assert [r.status_code for r in answers].count(202) == 5  # 500 bytes were used above
    assert scalar(db, "SELECT sum(bytes) FROM tenant_usage") == 1000
    # The request rate, counted once in Redis for both processes.
    set_quota(db, requests_per_s=0.1)
    time.sleep(1.1)
    started = time.monotonic()
    with ThreadPoolExecutor(N) as pool:
        codes = list(pool.map(
            lambda i: httpx.get((one, two)[i % 2].url + "/v1/jobs", timeout=30).status_code,
            range(N)))
    if time.monotonic() - started < 10:
        assert codes.count(200) == 1


def test_tus_uploads_are_checked_at_creation_and_counted_at_the_last_byte(
        serve: Callable[..., Server], db: Engine) -> None:
    srv = serve()
    tus = {"Tus-Resumable": "1.0.0"}
    set_quota(db, max_upload_bytes=1000, bytes_per_day=1500, max_queued=1)
    # Upload-Length over a quota: refused at creation, before any byte; no upload is made.
    over = httpx.post(srv.url + "/v1/uploads", headers={**tus, "Upload-Length": "5000"})
    assert_refused(over, 413, "too_large", "max_upload_bytes")
    assert scalar(db, "SELECT count(*) FROM uploads") == 0
    # Within them: made; its last byte makes the job and counts its bytes for the day.
    made = httpx.post(srv.url + "/v1/uploads", headers={
        **tus, "Upload-Length": "800", "Content-Type": "application/offset+octet-stream",
        "Upload-Metadata": "pipeline " + base64.b64encode(b"noop").decode()},
        content=b"t" * 800)
    assert made.status_code == 201, made.text
    assert made.headers["upload-offset"] == "800"
    assert scalar(db, "SELECT count(*) FROM jobs") == 1
    assert scalar(db, "SELECT sum(bytes) FROM tenant_usage WHERE tenant_id = 'default'") == 800
    # Now max_queued (1 queued job, no workers) and bytes_per_day (800 + 800 > 1500) refuse.
    again = httpx.post(srv.url + "/v1/uploads", headers={**tus, "Upload-Length": "800"})
    assert again.status_code == 429 and again.json()["code"] == "quota_exceeded", again.text
    assert int(again.headers["retry-after"]) >= 1
    assert scalar(db, "SELECT count(*) FROM uploads") == 1

"""Slow, oversized and crowding requests end in a specific problem+json and leave nothing."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server, module_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(
        tmp_path_factory, "limits",
        CONVEYOR_HEADER_TIMEOUT_S="1.5", CONVEYOR_BODY_IDLE_TIMEOUT_S="1.5",
        CONVEYOR_MAX_HEADER_BYTES="8192", CONVEYOR_MAX_HEADERS="50",
        CONVEYOR_MAX_CONNECTIONS_PER_CLIENT="20",
    )


def _connect(srv: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _problem(raw: bytes) -> tuple[int, dict[str, object], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), head.lower()


def test_a_head_that_trickles_in_gets_408_and_is_closed(srv: Server) -> None:
    started = time.monotonic()
    with _connect(srv) as sock:
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass  # closed on us mid-trickle: what we want
        raw = _read_all(sock)
    assert time.monotonic() - started < 10
    status, body, head = _problem(raw)
    assert status == 408 and body["code"] == "request_timeout"
    assert b"application/problem+json" in head and b"connection: close" in head


def test_a_connection_that_sends_nothing_is_closed(srv: Server) -> None:
    with _connect(srv) as sock:
        status, body, _ = _problem(_read_all(sock))
    assert status == 408 and body["code"] == "request_timeout"


@pytest.mark.parametrize("headers", [
    {"X-Big": "a" * 200_000},
    {f"X-H{i}": "v" for i in range(60)},
], ids=["one-huge-header", "too-many-headers"])
def test_oversized_heads_get_431(srv: Server, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "headers_too_large"


def test_ordinary_requests_share_a_keep_alive_connection(srv: Server) -> None:
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        assert client.get("/v1/jobs", headers={"X-Fine": "b" * 4000}).status_code == 200


def test_a_stalled_upload_gets_408_and_leaves_no_bytes(srv: Server) -> None:
    before = httpx.get(f"{srv.url}/v1/jobs?limit=500").json()["items"]
    marker = b"stalled-upload-" + str(time.time_ns()).encode()
    with _connect(srv) as sock:
        sock.sendall(b"POST /v1/jobs?pipeline=noop HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/octet-stream\r\n"
                     b"Content-Length: 1048576\r\n\r\n")
        sock.sendall(marker + b"x" * 300_000)  # past the writer's buffer: on disk
        time.sleep(0.5)
        in_flight = [p for p in srv.data_dir.rglob("*")
                     if p.is_file() and p.read_bytes().startswith(marker)]
        assert in_flight, "the upload's bytes should be on disk while it is in flight"
        status, body, head = _problem(_read_all(sock))
    assert status == 408 and body["code"] == "request_timeout"
    assert b"connection: close" in head
    deadline = time.monotonic() + 5
    while any(p.exists() for p in in_flight) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.exists() for p in in_flight), "the stalled upload's temp file remains"
    after = httpx.get(f"{srv.url}/v1/jobs?limit=500").json()["items"]
    assert len(after) == len(before)


def test_connections_per_client_address_are_capped(srv: Server) -> None:
    held = [_connect(srv) for _ in range(20)]
    try:
        with _connect(srv) as extra:
            status, body, _ = _problem(_read_all(extra))
        assert status == 503 and body["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the count goes down as they close
        try:
            if httpx.get(f"{srv.url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert httpx.get(f"{srv.url}/healthz", timeout=2).status_code == 200



"""The sender against real receivers on 127.0.0.1 (plain HTTP and TLS).

Names resolve through a stub resolver at check time; a guard fails the test if anything asks
the system resolver about a name, which also proves the sender connects to the checked address.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conveyor.webhooks import signing
from conveyor.webhooks.schedule import classify
from conveyor.webhooks.sender import DeliveryOutcome, send
from conveyor.webhooks.ssrf import AllowList, Target, check_url
from tests.conftest import need_service

SECRET = signing.generate_secret()
LOOPBACK = AllowList.parse("127.0.0.0/8")
BODY = b'{"type": "job.succeeded", "data": {"id": "job_1", "size": 12}}'


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server_names: list[str | None] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def _handler(receiver_ref: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            receiver = receiver_ref[0]
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver.requests.append(Recorded("POST", self.path, headers, body))
            try:
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("location", f"http://127.0.0.1:{receiver.port}/landed")
                elif self.path.startswith("/slow"):
                    receiver.release.wait(timeout=5)
                    self.send_response(200)
                elif self.path.startswith("/gone"):
                    self.send_response(410)
                else:
                    self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up (timeout tests)

    return Handler


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    ref: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ref))
    receiver = Receiver(server)
    ref.append(receiver)
    if tls is not None:

        def remember_name(_sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
            receiver.server_names.append(name)

        tls.sni_callback = remember_name
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve()


@pytest.fixture(autouse=True)
def no_system_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any lookup of a name (IP literals are fine): the sender must not resolve."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else str(host)
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        except OSError:
            asked.append(text)
            raise socket.gaierror(socket.EAI_NONAME, f"test forbids resolving {text!r}") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return asked


def stub(zone: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        return list(zone[host])

    return resolve


def target_for(url: str, zone: dict[str, list[str]] | None = None) -> Target:
    return check_url(url, allow=LOOPBACK, resolve=stub(zone or {"hooks.test": ["127.0.0.1"]}))


def deliver(target: Target, body: bytes = BODY, **kwargs: Any) -> DeliveryOutcome:
    msg_id = "msg_01J0000000000000000000000"
    headers = signing.headers(SECRET, msg_id, int(time.time()), body)
    return asyncio.run(send(target, headers, body, **kwargs))


def test_the_request_arrives_intact_and_verifies(
    receiver: Receiver, no_system_dns: list[str]
) -> None:
    target = target_for(f"http://hooks.test:{receiver.port}/in/hook?tenant=a%20b")
    outcome = deliver(target)

    assert outcome.status_code == 204
    assert outcome.error is None
    assert outcome.duration_ms >= 0
    assert classify(outcome.status_code) == "delivered"
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.path == "/in/hook?tenant=a%20b"
    assert request.body == BODY
    assert request.headers["host"] == f"hooks.test:{receiver.port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "conveyor-webhooks"
    assert request.headers["content-length"] == str(len(BODY))
    assert request.headers["webhook-id"] == "msg_01J0000000000000000000000"
    signing.verify(SECRET, request.headers, request.body)
    # The receiver was reached at the checked address without looking the name up again.
    assert no_system_dns == []


def test_a_receiver_sees_a_tampered_body_as_forged(receiver: Receiver) -> None:
    target = target_for(f"http://hooks.test:{receiver.port}/hook")
    headers = signing.headers(SECRET, "msg_1", int(time.time()), BODY)
    tampered = BODY.replace(b"12", b"13")
    outcome = asyncio.run(send(target, headers, tampered))
    assert outcome.status_code == 204
    [request] = receiver.requests
    assert request.body == tampered
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify(SECRET, request.headers, request.body)


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    outcome = deliver(target_for(f"http://hooks.test:{receiver.port}/redirect"))
    assert outcome.status_code == 302
    assert outcome.error is None
    assert classify(outcome.status_code) == "retry"
    assert receiver.paths() == ["/redirect"]


def test_410_reaches_the_caller_as_disable(receiver: Receiver) -> None:
    outcome = deliver(target_for(f"http://127.0.0.1:{receiver.port}/gone"))
    assert outcome.status_code == 410
    assert classify(outcome.status_code) == "disable"
    assert receiver.requests[0].headers["host"] == f"127.0.0.1:{receiver.port}"


def test_a_slow_receiver_times_out(receiver: Receiver) -> None:
    started = time.monotonic()
    outcome = deliver(target_for(f"http://hooks.test:{receiver.port}/slow"), timeout=0.3)
    elapsed = time.monotonic() - started

    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("timeout")
    assert classify(outcome.status_code) == "retry"
    assert 250 <= outcome.duration_ms < 3000
    assert elapsed < 3.0
    assert receiver.paths() == ["/slow"]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_closed_port_gives_a_connection_error() -> None:
    port = _closed_port()
    outcome = deliver(target_for(f"http://hooks.test:{port}/hook"))
    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("connect error (127.0.0.1)")
    assert classify(outcome.status_code) == "retry"


def test_the_next_checked_address_is_tried_when_one_refuses(receiver: Receiver) -> None:
    # Nothing listens on 127.0.0.2 (the receiver is bound to 127.0.0.1 only).
    zone = {"hooks.test": ["127.0.0.2", "127.0.0.1"]}
    target = target_for(f"http://hooks.test:{receiver.port}/hook", zone)
    outcome = deliver(target)
    assert outcome.status_code == 204
    assert receiver.paths() == ["/hook"]


def test_only_checked_addresses_are_contacted(receiver: Receiver) -> None:
    # A target whose addresses hold only a dead address: the live receiver behind the same
    # name and port is never reached, because the sender does not resolve the name itself.
    target = target_for(f"http://hooks.test:{receiver.port}/hook", {"hooks.test": ["127.0.0.2"]})
    outcome = deliver(target)
    assert outcome.status_code is None
    assert outcome.error is not None and "127.0.0.2" in outcome.error
    assert receiver.requests == []


# --- https: the TLS server name and certificate check use the original host name ------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        need_service("the openssl command", "it makes the test certificate (.ci/run installs it)")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=hooks.test",
            "-addext", "subjectAltName=DNS:hooks.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_receiver(certificate: tuple[Path, Path]) -> Iterator[Receiver]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve(context)


def _client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def test_https_sends_the_host_name_as_sni_and_verifies_it(
    tls_receiver: Receiver, certificate: tuple[Path, Path]
) -> None:
    target = target_for(f"https://hooks.test:{tls_receiver.port}/secure")
    outcome = deliver(target, verify=_client_context(certificate[0]))

    assert outcome.error is None
    assert outcome.status_code == 204
    assert tls_receiver.server_names == ["hooks.test"]
    [request] = tls_receiver.requests
    assert request.headers["host"] == f"hooks.test:{tls_receiver.port}"
    assert json.loads(request.body) == json.loads(BODY)
    signing.verify(SECRET, request.headers, request.body)


def test_https_refuses_a_certificate_for_another_name(
    tls_receiver: Receiver, certificate: tuple[Path, Path]
) -> None:
    zone = {"other.test": ["127.0.0.1"]}
    target = target_for(f"https://other.test:{tls_receiver.port}/secure", zone)
    outcome = deliver(target, verify=_client_context(certificate[0]))

    assert outcome.status_code is None
    assert outcome.error is not None and "certificate" in outcome.error.lower()
    assert tls_receiver.requests == []

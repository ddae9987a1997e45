"""The fetch against a real origin on 127.0.0.1, names resolved by a stub resolver.

A guard fails the test if anything asks the system resolver about a name: the fetch must
connect to the address the SSRF guard checked, never look the name up again (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.errors import ProcessorError
from conveyor.ingest.url_fetch import Fetched, FetchLimits, fetch
from conveyor.webhooks.ssrf import AllowList
from tests.origin import CSV, Origin, running_origin

LOOPBACK = AllowList.parse("127.0.0.0/8", "CONVEYOR_URL_IMPORT_ALLOW_PRIVATE")


class MemoryWriter:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data

    async def complete(self) -> None:  # pragma: no cover - the caller's step
        pass

    async def abort(self) -> None:  # pragma: no cover - the caller's step
        self.data.clear()


class StubResolver:
    """Answers from a table; a list of answers is served one per call (the last one repeats)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with running_origin() as running:
        yield running


@pytest.fixture(autouse=True)
def no_system_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise AssertionError(f"the system resolver was asked about {name!r}") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


def run(url: str, resolver: StubResolver | None = None, limit: int = 1 << 20,
        **kw: Any) -> tuple[Fetched, bytes]:
    writer = MemoryWriter()
    limits = FetchLimits(max_bytes=limit, allow=kw.pop("allow", LOOPBACK), connect_s=2,
                         read_s=kw.pop("read_s", 2), total_s=kw.pop("total_s", 20), **kw)
    got = asyncio.run(fetch(url, writer, limits, resolver or StubResolver({})))
    return got, bytes(writer.data)


def failure(url: str, resolver: StubResolver | None = None, **kw: Any) -> ProcessorError:
    with pytest.raises(ProcessorError) as err:
        run(url, resolver, **kw)
    return err.value


def test_the_checked_address_is_the_one_connected_to(origin: Origin) -> None:
    # Rebinding: the first answer is loopback (allowed), every later one is 10.0.0.1.
    resolver = StubResolver({"files.test": [["127.0.0.1"], ["10.0.0.1"]]})
    got, data = run(f"http://files.test:{origin.port}/files/data.csv", resolver)
    assert data == CSV and got.sha256 == hashlib.sha256(CSV).hexdigest()
    assert got.size == len(CSV) and got.head == CSV
    assert resolver.calls == ["files.test"]  # resolved once, then pinned
    assert ("/files/data.csv", f"files.test:{origin.port}") in origin.seen


def test_a_refused_address_falls_back_to_the_next_checked_one(origin: Origin) -> None:
    # Nothing listens on 127.0.0.2 at the origin's port: that connect fails, 127.0.0.1 serves.
    resolver = StubResolver({"two.test": [["127.0.0.2", "127.0.0.1"]]})
    _got, data = run(f"http://two.test:{origin.port}/files/data.csv", resolver)
    assert data == CSV


def test_every_redirect_hop_is_checked_again(origin: Origin) -> None:
    resolver = StubResolver({"inside.test": [["10.0.0.1"]]})
    to = f"http://inside.test:{origin.port}/files/data.csv"
    error = failure(origin.url(f"/redirect?to={to}"), resolver)
    assert (error.code, error.retryable) == ("url_forbidden", False)
    assert "10.0.0.1" in error.message and "CONVEYOR_URL_IMPORT_ALLOW_PRIVATE" in error.message
    assert resolver.calls == ["inside.test"]


def test_a_redirect_hop_to_an_allowed_name_is_followed_and_pinned(origin: Origin) -> None:
    resolver = StubResolver({"next.test": [["127.0.0.1"], ["169.254.169.254"]]})
    to = f"http://next.test:{origin.port}/files/data.csv"
    got, data = run(origin.url(f"/redirect?to={to}"), resolver)
    assert data == CSV and got.final_url == to
    assert resolver.calls == ["next.test"]


def test_a_rebinding_name_cannot_pass_on_its_second_lookup(origin: Origin) -> None:
    # First hop resolves to loopback; the redirect names it again, now resolving inside.
    resolver = StubResolver({"flip.test": [["127.0.0.1"], ["10.1.2.3"]]})
    to = f"http://flip.test:{origin.port}/files/data.csv"
    error = failure(f"http://flip.test:{origin.port}/redirect?to={to}", resolver)
    assert error.code == "url_forbidden"
    assert resolver.calls == ["flip.test", "flip.test"]


@pytest.mark.parametrize("limit", [0, 1])
def test_the_redirect_limit_is_kept(origin: Origin, limit: int) -> None:
    error = failure(origin.url("/loop/0"), max_redirects=limit)
    assert error.code == "url_status"
    assert sum(path.startswith("/loop/") for path, _ in origin.seen) >= limit + 1


def test_too_large_from_content_length_reads_nothing(origin: Origin) -> None:
    url = origin.put("big.bin", b"y" * 5000)
    writer_error = failure(url, limit=4999)
    assert (writer_error.code, writer_error.retryable) == ("too_large", False)


def test_too_large_mid_stream(origin: Origin) -> None:
    error = failure(origin.url("/chunked/300000"), limit=200_000)
    assert error.code == "too_large"


def test_exactly_the_limit_is_fine(origin: Origin) -> None:
    got, data = run(origin.url("/chunked/200000"), limit=200_000)
    assert got.size == len(data) == 200_000


def test_an_unknown_name_is_unreachable_and_retryable(origin: Origin) -> None:
    error = failure(f"http://nowhere.test:{origin.port}/")
    assert (error.code, error.retryable) == ("url_unreachable", True)


def test_a_closed_port_is_unreachable(origin: Origin) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = failure(f"http://127.0.0.1:{port}/")
    assert (error.code, error.retryable) == ("url_unreachable", True)


def test_an_idle_origin_times_out(origin: Origin) -> None:
    origin.slow_s = 2.0
    error = failure(origin.url("/slow/unit"), read_s=0.5)
    assert (error.code, error.retryable) == ("url_unreachable", True)


def test_private_addresses_need_the_setting(origin: Origin) -> None:
    error = failure(origin.url("/files/data.csv"),
                    allow=AllowList.parse(None, "CONVEYOR_URL_IMPORT_ALLOW_PRIVATE"))
    assert error.code == "url_forbidden"
    assert "CONVEYOR_URL_IMPORT_ALLOW_PRIVATE" in error.message

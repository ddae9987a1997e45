"""Fetch a URL import's bytes into a storage writer: the thin I/O layer of URL import.

Every hop (the URL, then each redirect, followed here and never by httpx) passes the SSRF
guard of webhooks (:func:`conveyor.webhooks.ssrf.check_url`), which resolves the name once and
checks every address; the connection then goes to one of those checked addresses, with the
name in the ``Host`` header and as the TLS server name (httpcore's ``sni_hostname``
extension, which is also the name the certificate is verified against). A DNS answer that
changes between the check and the connect (rebinding) therefore cannot steer the fetch.

Failures are :class:`~conveyor.errors.ProcessorError` with the codes of
:mod:`conveyor.ingest.url_policy`; the caller aborts the writer.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx

from conveyor.errors import ProcessorError
from conveyor.ingest.url_policy import (
    guard_error,
    media_type_of,
    redirect_target,
    status_error,
    too_many_redirects,
)
from conveyor.models import ErrorCode
from conveyor.processors.sniff import SNIFF_BYTES
from conveyor.settings import Settings
from conveyor.storage import Writer
from conveyor.webhooks.ssrf import (
    AllowList,
    Resolver,
    Target,
    UnsafeUrl,
    check_url,
    default_resolve,
)

USER_AGENT = "conveyor-url-import"
ALLOW_SETTING = "CONVEYOR_URL_IMPORT_ALLOW_PRIVATE"


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_bytes: int
    connect_s: float = 10.0
    read_s: float = 30.0
    total_s: float = 3600.0
    max_redirects: int = 5
    allow: AllowList = field(default_factory=lambda: AllowList(setting=ALLOW_SETTING))
    #: For tests and private CAs.
    verify: ssl.SSLContext | bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchLimits:
        return cls(
            max_bytes=settings.max_upload_bytes,
            connect_s=settings.url_import_connect_timeout_s,
            read_s=settings.url_import_read_timeout_s,
            total_s=settings.url_import_timeout_s,
            max_redirects=settings.url_import_max_redirects,
            allow=AllowList.parse(settings.url_import_allow_private, ALLOW_SETTING),
        )


@dataclass(slots=True)
class Fetched:
    """What was written: size, sha256, the first bytes (to sniff) and the remote's type."""

    size: int = 0
    sha256: str = ""
    head: bytes = b""
    declared_type: str | None = None
    #: The URL the bytes came from (after redirects).
    final_url: str = ""


def _unreachable(what: str, exc: BaseException) -> ProcessorError:
    text = str(exc)
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return ProcessorError(ErrorCode.URL_UNREACHABLE, f"{what}: {detail}", retryable=True)


def _too_large(limit: int) -> ProcessorError:
    return ProcessorError(ErrorCode.TOO_LARGE,
                          f"the remote file is larger than {limit} bytes", retryable=False)


async def _copy_body(response: httpx.Response, writer: Writer, limit: int,
                     got: Fetched) -> None:
    declared = response.headers.get("content-length", "")
    # More digits than any limit (and int() refuses over 4,300): too large, unconverted.
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise _too_large(limit)
    digest = hashlib.sha256()
    head = bytearray()
    # Raw bytes: a Content-Encoding is not undone (the request asks for identity), so a small
    # compressed answer cannot inflate past the limit unseen.
    async for chunk in response.aiter_raw():
        got.size += len(chunk)
        if got.size > limit:
            raise _too_large(limit)
        digest.update(chunk)
        if len(head) < SNIFF_BYTES:
            head += chunk[: SNIFF_BYTES - len(head)]
        await writer.write(chunk)
    got.sha256 = digest.hexdigest()
    got.head = bytes(head)
    got.declared_type = media_type_of(response.headers.get("content-type"))


async def _get(client: httpx.AsyncClient, target: Target, url: str, writer: Writer,
               limit: int, got: Fetched) -> str | None:
    """GET one checked hop: the redirect's absolute URL, or None once the body is written."""
    headers = {"host": target.host_header, "user-agent": USER_AGENT,
               "accept-encoding": "identity"}
    extensions: dict[str, Any] = {}
    if target.scheme == "https" and not target.is_ip_literal:
        extensions["sni_hostname"] = target.host
    error: BaseException | None = None
    for ip in target.addresses:
        pinned = httpx.URL(scheme=target.scheme, host=str(ip), port=target.port,
                           raw_path=target.path.encode("ascii"))
        try:
            async with client.stream("GET", pinned, headers=headers,
                                     extensions=extensions) as response:
                location = redirect_target(url, response.status_code,
                                           response.headers.get("location"))
                if location is not None:
                    return location
                failure = status_error(response.status_code)
                if failure is not None:
                    raise failure
                got.final_url = url
                await _copy_body(response, writer, limit, got)
                return None
        except httpx.ConnectError as exc:
            # Refused, or a TLS failure on this address: try the next checked one.
            error = exc
    raise _unreachable(f"cannot connect to {target.host}", error or OSError("no address"))


async def fetch(url: str, writer: Writer, limits: FetchLimits,
                resolve: Resolver = default_resolve) -> Fetched:
    """Stream ``url`` into ``writer`` (not completed); raise ``ProcessorError`` on failure.

    Redirects are followed up to ``limits.max_redirects``, each hop checked and pinned anew.
    ``resolve`` is for tests (a stub resolver); it blocks, so it runs in a thread.
    """
    got = Fetched()
    timeout = httpx.Timeout(connect=limits.connect_s, read=limits.read_s,
                            write=limits.read_s, pool=limits.connect_s)
    try:
        async with asyncio.timeout(limits.total_s):
            hops = 0
            current: str | None = url
            while current is not None:
                hop = current
                try:
                    target = await asyncio.to_thread(
                        functools.partial(check_url, hop, allow=limits.allow, resolve=resolve))
                except UnsafeUrl as exc:
                    raise guard_error(exc) from None
                # A client per hop: a pooled connection opened for one name must not carry
                # a request for another name that shares its address (wrong TLS name).
                async with httpx.AsyncClient(follow_redirects=False, timeout=timeout,
                                             trust_env=False, verify=limits.verify) as client:
                    current = await _get(client, target, hop, writer, limits.max_bytes, got)
                if current is not None:
                    refused = too_many_redirects(hops, limits.max_redirects)
                    if refused is not None:
                        raise refused
                    hops += 1
    except TimeoutError:
        raise ProcessorError(ErrorCode.URL_UNREACHABLE,
                             f"the fetch took longer than {limits.total_s:g} s",
                             retryable=True) from None
    except httpx.TimeoutException as exc:
        raise _unreachable("time-out", exc) from None
    except (httpx.TransportError, httpx.DecodingError) as exc:
        # Reset mid-body, a chunked body cut short, a malformed answer.
        raise _unreachable("transfer failed", exc) from None
    return got

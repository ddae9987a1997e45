"""POST one webhook to a checked :class:`~conveyor.webhooks.ssrf.Target`: the thin I/O layer.

The connection goes to the target's checked addresses, never to a fresh DNS answer (so DNS
rebinding cannot redirect it); the original host travels in the ``Host`` header and, for https,
as the TLS server name, which is also the name the certificate is verified against.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from conveyor.webhooks.ssrf import Target

USER_AGENT = "conveyor-webhooks"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """One delivery attempt: the status code received, or why there was none."""

    status_code: int | None
    error: str | None
    duration_ms: int


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _post(
    client: httpx.AsyncClient, target: Target, headers: httpx.Headers, body: bytes
) -> int | str:
    """The status code, or the error text of the last address tried."""
    extensions: dict[str, Any] = {}
    if target.scheme == "https" and not target.is_ip_literal:
        extensions["sni_hostname"] = target.host
    error = "no address to connect to"
    for ip in target.addresses:
        url = httpx.URL(
            scheme=target.scheme,
            host=str(ip),
            port=target.port,
            raw_path=target.path.encode("ascii"),
        )
        try:
            # Streamed and closed unread: only the status matters, however large the body.
            async with client.stream(
                "POST", url, headers=headers, content=body, extensions=extensions
            ) as response:
                return response.status_code
        except httpx.ConnectError as exc:
            # Refused or TLS failure on this address: try the next checked one.
            error = f"connect error ({ip}): {_describe(exc)}"
    return error


async def send(
    target: Target,
    headers: Mapping[str, str],
    body: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    verify: ssl.SSLContext | bool = True,
) -> DeliveryOutcome:
    """POST ``body`` to ``target``; never raises for network trouble.

    Redirects are not followed (a 3xx is returned as the outcome). ``timeout`` bounds the whole
    attempt, connection included. ``headers`` (e.g. from :func:`signing.headers`) are added to
    ``content-type: application/json`` and ``user-agent: conveyor-webhooks``; ``Host`` is always
    the target's. ``verify`` is for tests and private CAs.
    """
    request_headers = httpx.Headers({"content-type": "application/json", "user-agent": USER_AGENT})
    request_headers.update(headers)
    request_headers["host"] = target.host_header

    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout):
            # A client per delivery: a pooled connection opened for one host name must not be
            # reused for another name that shares its address (wrong TLS server name).
            async with httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(timeout),
                trust_env=False,  # a proxy from the environment would undo the address pinning
                verify=verify,
            ) as client:
                result = await _post(client, target, request_headers, body)
        if isinstance(result, int):
            status = result
        else:
            error = result
    except TimeoutError:
        error = f"timeout: no answer within {timeout:g} s"
    except httpx.TimeoutException as exc:
        error = f"timeout: {_describe(exc)}"
    except (httpx.HTTPError, OSError) as exc:
        error = f"request failed: {_describe(exc)}"
    duration_ms = round((time.perf_counter() - started) * 1000)
    return DeliveryOutcome(status_code=status, error=error, duration_ms=duration_ms)

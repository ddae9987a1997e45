"""URL import decisions, as pure functions: redirects, remote statuses, guard refusals, names.

The fetch itself (:mod:`conveyor.ingest.url_fetch`) is the thin I/O layer around these; each
failure is a :class:`~conveyor.errors.ProcessorError` with a stable code, so the runner's
classifier and retry policy treat it like any other attempt that failed.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote, urljoin, urlsplit

from conveyor.errors import ProcessorError
from conveyor.ingest.params import clean_filename
from conveyor.models import ErrorCode
from conveyor.webhooks.ssrf import UnsafeUrl

#: Statuses whose ``Location`` is followed (always with GET: the import only reads).
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: 4xx answers that say "not now" rather than "never": retried like 5xx.
RETRYABLE_4XX: Final = frozenset({408, 425, 429})


def redirect_target(current: str, status: int, location: str | None) -> str | None:
    """The absolute URL a redirect leads to, or None when ``status`` is no redirect.

    A redirect without a ``Location`` fails the job with ``url_status`` (final).
    """
    if status not in REDIRECTS:
        return None
    if not location or not location.strip():
        raise ProcessorError(ErrorCode.URL_STATUS,
                             f"the remote answered {status} without a Location", retryable=False)
    target = urljoin(current, location.strip())
    # The guard parses the URL again; the fragment never goes on the wire.
    return target.split("#", 1)[0]


def too_many_redirects(hops: int, limit: int) -> ProcessorError | None:
    """The error when following one more redirect would pass ``limit`` (``hops`` so far)."""
    if hops < limit:
        return None
    return ProcessorError(ErrorCode.URL_STATUS,
                          f"more than {limit} redirects", retryable=False)


def status_error(status: int) -> ProcessorError | None:
    """None for a 2xx answer (the body is the input); else the job's error.

    4xx is final (``url_status``) except 408, 425 and 429; 5xx is retried; anything else
    (1xx, a 3xx that is not followed, such as 300 or 304) is final.
    """
    if 200 <= status < 300:
        return None
    retryable = status >= 500 or status in RETRYABLE_4XX
    return ProcessorError(ErrorCode.URL_STATUS, f"the remote answered {status}",
                          retryable=retryable)


def guard_error(exc: UnsafeUrl) -> ProcessorError:
    """A refusal of the SSRF guard as the job's error: a name that does not resolve is
    ``url_unreachable`` (retried: DNS may recover), everything else ``url_forbidden`` (final)."""
    if exc.reason == "resolve":
        return ProcessorError(ErrorCode.URL_UNREACHABLE, exc.message, retryable=True)
    return ProcessorError(ErrorCode.URL_FORBIDDEN, exc.message, retryable=False)


def filename_from_url(url: str) -> str:
    """The display name of an import: the URL path's last segment, decoded (``upload`` if
    none)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return clean_filename(None)
    last = unquote(path.rstrip("/").rsplit("/", 1)[-1]) if path.strip("/") else None
    return clean_filename(last or None)


def media_type_of(content_type: str | None) -> str | None:
    """The media type of a ``Content-Type`` header, lower case, without parameters."""
    if not content_type:
        return None
    value = content_type.split(";", 1)[0].strip().lower()
    return value[:200] or None

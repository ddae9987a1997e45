"""The tus 1.0.0 header rules as pure functions (no I/O): parse, check, format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from email.utils import formatdate
from typing import Any

from conveyor.errors import MalformedBody, TusError, TusVersion, UnsupportedMedia

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,expiration,checksum,termination"
#: ``Upload-Checksum`` algorithms, in the server's order of preference (tus wants ``sha1``).
ALGORITHMS: dict[str, Any] = {"sha256": hashlib.sha256, "sha1": hashlib.sha1,
                              "md5": hashlib.md5}
OFFSET_TYPE = "application/offset+octet-stream"
#: Upload-Metadata larger than this is refused (it is echoed in every HEAD).
MAX_METADATA = 16 * 1024
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


def check_version(header: str | None) -> None:
    """Every request but OPTIONS names the protocol version (412 otherwise)."""
    if header is None or header.strip() != VERSION:
        raise TusVersion(f"Tus-Resumable must be {VERSION} (got {header!r})")


def check_content_type(header: str | None) -> None:
    if (header or "").split(";")[0].strip().lower() != OFFSET_TYPE:
        raise UnsupportedMedia(f"a PATCH body must be {OFFSET_TYPE} (got {header!r})")


def parse_int(name: str, header: str | None) -> int:
    """A non-negative integer header (``Upload-Length``, ``Upload-Offset``)."""
    if header is None or not header.strip().isdigit() or len(header.strip()) > 19:
        raise TusError(f"{name} must be a non-negative integer (got {header!r})")
    return int(header.strip())


def parse_metadata(header: str | None) -> dict[str, str]:
    """``key base64value, key2 base64value2`` -> a dict; keys unique, values UTF-8 text."""
    if not header or not header.strip():
        return {}
    if len(header) > MAX_METADATA:
        raise MalformedBody(f"Upload-Metadata is over {MAX_METADATA} bytes", code="bad_metadata")
    found: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _KEY.fullmatch(parts[0]):
            raise MalformedBody(f"Upload-Metadata pair {pair.strip()[:80]!r} is not "
                                "`key base64value`", code="bad_metadata")
        key = parts[0]
        if key in found:
            raise MalformedBody(f"Upload-Metadata key {key!r} given twice", code="bad_metadata")
        try:
            raw = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
            found[key] = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise MalformedBody(f"Upload-Metadata value of {key!r} is not base64 of UTF-8 "
                                "text", code="bad_metadata") from None
    return found


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>`` -> (algorithm, digest), or None."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in ALGORITHMS:
        raise TusError(f"Upload-Checksum algorithm {algorithm!r} is not one of "
                       f"{', '.join(ALGORITHMS)}", code="bad_checksum_algorithm")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TusError("Upload-Checksum digest is not base64") from None
    if len(digest) != ALGORITHMS[algorithm]().digest_size:
        raise TusError(f"Upload-Checksum digest has the wrong length for {algorithm}")
    return algorithm, digest


def http_date(seconds: float) -> str:
    """RFC 9110 IMF-fixdate, as ``Upload-Expires`` wants."""
    return formatdate(seconds, usegmt=True)

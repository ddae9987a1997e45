"""Standard Webhooks 1.0 signatures (HMAC-SHA256, ``v1``): sign on our side, verify on a receiver's.

The signed content is ``f"{webhook-id}.{webhook-timestamp}."`` followed by the raw body bytes;
the key is the base64 part of a ``whsec_...`` secret. Pure code: no clock unless ``now`` is
omitted, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableSet

from conveyor.errors import ConveyorError

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class WebhookVerificationError(ConveyorError):
    """A webhook's headers, timestamp or signature did not check out."""


def generate_secret() -> str:
    """A new endpoint secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # Reference libraries accept unpadded secrets; restore the padding before decoding.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not base64 (expected whsec_<base64>)") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{msg_id}.{timestamp}.{body}``.

    ``secret`` may carry the ``whsec_`` prefix or not. Ids with ``.`` or whitespace are
    refused: they would make the signed content ambiguous or break header parsing.
    """
    if not msg_id or "." in msg_id or any(c.isspace() for c in msg_id):
        raise ValueError(f"webhook id must be non-empty, without '.' or spaces: {msg_id!r}")
    digest = _digest(_key(secret), msg_id, timestamp, body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str | list[str], msg_id: str, timestamp: int,
            body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt.

    Several secrets (a rotation: the new one and the previous one) give several signatures,
    space-separated in one ``webhook-signature`` header; a receiver accepts any that verifies.
    """
    keys = [secret] if isinstance(secret, str) else secret
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(sign(k, msg_id, timestamp, body) for k in keys),
    }


def _candidates(header: str) -> Iterator[bytes]:
    """The decoded ``v1`` signatures of a space-separated header; other versions are skipped."""
    for entry in header.split():
        version, sep, encoded = entry.partition(",")
        if not sep or version != "v1":
            continue
        try:
            yield base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE_S,
    now: int | None = None,
    seen_ids: MutableSet[str] | None = None,
) -> None:
    """Check a received webhook; raise :class:`WebhookVerificationError` if anything is off.

    ``body`` must be the raw request bytes (re-serialised JSON will not verify). Header names
    are matched case-insensitively. The timestamp must lie within ``tolerance`` seconds of
    ``now`` either way. With ``seen_ids``, an id already in it is refused as a replay, and the
    id is added once the message has verified.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get(ID_HEADER, "")
    raw_timestamp = lowered.get(TIMESTAMP_HEADER, "").strip()
    signature = lowered.get(SIGNATURE_HEADER, "")
    missing = [
        name
        for name, value in (
            (ID_HEADER, msg_id),
            (TIMESTAMP_HEADER, raw_timestamp),
            (SIGNATURE_HEADER, signature),
        )
        if not value
    ]
    if missing:
        raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")

    # Digits only: a sign, fraction or exponent would let two headers mean one signed string.
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()):
        raise WebhookVerificationError(f"invalid {TIMESTAMP_HEADER}: {raw_timestamp!r}")
    timestamp = int(raw_timestamp)
    current = int(time.time()) if now is None else now
    if current - timestamp > tolerance:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp - current > tolerance:
        raise WebhookVerificationError("message timestamp too new")

    expected = _digest(_key(secret), msg_id, timestamp, body)
    # Check every candidate so the time taken does not reveal which one matched.
    matched = False
    for candidate in _candidates(signature):
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("no matching signature")

    if seen_ids is not None:
        if msg_id in seen_ids:
            raise WebhookVerificationError(f"replayed {ID_HEADER}: {msg_id!r}")
        seen_ids.add(msg_id)


class BoundedIdSet(MutableSet[str]):
    """A set that forgets its oldest entries beyond ``maxlen`` (insertion order)."""

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self._items: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: str) -> None:
        self._items[value] = None
        self._items.move_to_end(value)
        while len(self._items) > self.maxlen:
            self._items.popitem(last=False)

    def discard(self, value: str) -> None:
        self._items.pop(value, None)


class Verifier:
    """A receiver's verifier: one secret and a bounded memory of ids already accepted.

    Replays are caught for as long as an id stays in the cache, so ``max_seen`` should exceed
    the number of webhooks a receiver accepts within twice the ``tolerance`` window.
    Thread-safe.
    """

    def __init__(
        self,
        secret: str,
        *,
        tolerance: int = DEFAULT_TOLERANCE_S,
        max_seen: int = 10_000,
    ) -> None:
        _key(secret)  # fail at construction, not on the first webhook
        self._secret = secret
        self.tolerance = tolerance
        self._seen = BoundedIdSet(max_seen)
        self._lock = threading.Lock()

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: int | None = None) -> None:
        """Like :func:`verify`, remembering accepted ids to refuse replays."""
        with self._lock:
            verify(
                self._secret,
                headers,
                body,
                tolerance=self.tolerance,
                now=now,
                seen_ids=self._seen,
            )

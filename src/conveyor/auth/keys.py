"""API key material: generation, parsing, hashing, constant-time comparison.

A key reads ``cvk_<public id>_<secret>``: ``cvk_`` makes it recognisable (secret scanners, logs),
the 8-character public id is the stored ``prefix`` (``cvk_<id>``) that names the key in lists
and log lines, and the secret is 256 random bits (43 base64url characters).

Why a plain SHA-256 and not a password hash (bcrypt, scrypt, argon2): those are slow on purpose
to protect *guessable* human passwords from offline guessing. A 256-bit random secret cannot be
guessed, so a fast hash is as safe, and keeps the check on every request far below a
millisecond. The stored hash is compared with :func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "cvk_"
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_LEN = 8
#: ``cvk_`` + id + ``_`` + 43 base64url characters (32 bytes).
KEY_LEN = len(PREFIX) + _ID_LEN + 1 + 43
#: Longer ``Authorization`` values are refused before any parsing or hashing.
MAX_HEADER_LEN = 256
_SHAPE = re.compile(r"^cvk_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: ``secret`` (the whole key) is shown once and never stored."""

    key: str
    prefix: str
    hash: str


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """What authentication needs of a stored key, read by its prefix."""

    id: str
    tenant_id: str
    hash: str
    scopes: frozenset[str]
    usable: bool  # not revoked, and its tenant not deleted


def digest(key: str) -> str:
    """The stored form of a key: hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def generate() -> NewKey:
    public = "".join(secrets.choice(_ID_CHARS) for _ in range(_ID_LEN))
    key = f"{PREFIX}{public}_{secrets.token_urlsafe(32)}"
    return NewKey(key=key, prefix=PREFIX + public, hash=digest(key))


def prefix_of(key: str) -> str | None:
    """The stored prefix of a well-formed key, or None for anything else."""
    if len(key) != KEY_LEN:
        return None
    match = _SHAPE.match(key)
    return PREFIX + match.group(1) if match else None


def matches(key: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(digest(key).encode("ascii"), stored_hash.encode("ascii"))


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when missing or malformed.

    The length is capped first: a 10 KB header costs a length check, not a hash.
    """
    if not header or len(header) > MAX_HEADER_LEN:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None

"""The key layout, spelled here and nowhere else.

Keys are relative, slash-separated names made by conveyor itself, never by a client::

    inputs/{job id}                       the uploaded file (or a child job's input)
    artifacts/{job id}/{token}/{name}     what one attempt (lease token) produced
    chunks/{job id}/{start}-{token}       one PATCH's bytes of the tus upload of a job (S3);
                                          an upload sent in one chunk keeps it as its input
    chunks/{job id}/input-{token}         the input made of an upload's chunks (S3)

Prefixes end with ``/`` so that listing ``artifacts/01AB/`` never matches ``artifacts/01ABC/``.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")

INPUTS = "inputs/"
ARTIFACTS = "artifacts/"
CHUNKS = "chunks/"


class BadKey(ValueError):
    """A string that is not a storage key (or prefix) conveyor could have made."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a well-formed key: no empty, ``.`` or ``..`` part, no leading /."""
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise BadKey(f"not a storage key: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is empty (everything) or a key, optionally ending with ``/``."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


def input_key(job_id: str) -> str:
    return check_key(f"{INPUTS}{job_id}")


def input_job_id(key: str) -> str | None:
    """The job id of an input key, or None for any other key."""
    rest = key.removeprefix(INPUTS)
    return rest if rest != key and rest and "/" not in rest else None


def artifacts_prefix(job_id: str) -> str:
    """Every artifact of every attempt of a job."""
    return check_prefix(f"{ARTIFACTS}{job_id}/")


def attempt_prefix(job_id: str, token: str) -> str:
    """The artifacts of one attempt (its lease token)."""
    return check_prefix(f"{ARTIFACTS}{job_id}/{token}/")


def artifact_key(job_id: str, token: str, name: str) -> str:
    return check_key(f"{attempt_prefix(job_id, token)}{name}")


def chunk_prefix(job_id: str) -> str:
    """Every chunk of the tus upload that makes job ``job_id``."""
    return check_prefix(f"{CHUNKS}{job_id}/")


def chunk_key(job_id: str, start: int, token: str) -> str:
    """The bytes one PATCH appended at ``start`` (``token``: that request's own name)."""
    return check_key(f"{chunk_prefix(job_id)}{start:020d}-{token}")


def composed_key(job_id: str, token: str) -> str:
    """The input one finisher makes of an upload's chunks."""
    return check_key(f"{chunk_prefix(job_id)}input-{token}")


def chunk_job_id(key: str) -> str | None:
    """The job id of a chunk key, or None for any other key."""
    rest = key.removeprefix(CHUNKS)
    job_id, slash, name = rest.partition("/")
    return job_id if rest != key and slash and name and "/" not in name else None

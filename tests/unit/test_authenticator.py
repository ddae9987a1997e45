"""The Authenticator's reads of the key table, on a real SQLite store: requests that arrive
together while a read is due share one read, its answer and its error."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor.auth import keys
from conveyor.auth.authenticator import CACHE_TTL_S, OPEN, Authenticator
from conveyor.auth.caller import ALL_SCOPES
from conveyor.auth.keys import KeyLookup
from conveyor.errors import Unauthorized
from conveyor.store import Store
from conveyor.store.tenants import Keys

CALLERS = 20


class CountedKeys:
    """The store's key table, counting the reads that reach it. Each read answers 50 ms after
    it read, as on a busy database, so that the other requests arrive while it runs."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.reads: Counter[str] = Counter()
        self.fail = False
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.reads[name] += 1
        time.sleep(0.05)
        if self.fail:
            raise OSError("the database is unreachable")

    def lookup(self, prefix: str) -> KeyLookup | None:
        found = self.keys.lookup(prefix)
        self._count("lookup")
        return found

    def any_exist(self) -> bool:
        found = self.keys.any_exist()
        self._count("any_exist")
        return found

    def touch(self, key_id: str, at: float) -> None:
        self.keys.touch(key_id, at)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    made = Store(f"sqlite:///{tmp_path / 'conveyor.db'}", run_dir=tmp_path / "run")
    made.migrate()
    made.tenants.ensure("acme")
    yield made
    made.close()


async def together(auth: Authenticator, header: str | None) -> list[object]:
    return await asyncio.gather(*(auth.caller(header) for _ in range(CALLERS)),
                                return_exceptions=True)


def test_an_open_server_looks_for_keys_once_per_expiry(store: Store) -> None:
    source, clock = CountedKeys(store.keys), Clock()
    auth = Authenticator(source, "auto", loopback=True, clock=clock)

    assert asyncio.run(together(auth, None)) == [OPEN] * CALLERS
    assert source.reads["any_exist"] == 1

    store.keys.create("acme", ALL_SCOPES)
    clock.now += CACHE_TTL_S
    answers = asyncio.run(together(auth, None))
    assert all(isinstance(a, Unauthorized) for a in answers), answers
    assert source.reads["any_exist"] == 2


def test_a_key_is_read_once_per_expiry_and_an_error_is_shared(store: Store) -> None:
    source, clock = CountedKeys(store.keys), Clock()
    auth = Authenticator(source, "keys", loopback=True, clock=clock)
    _, token = store.keys.create("acme", ALL_SCOPES)

    answers = asyncio.run(together(auth, f"Bearer {token}"))
    assert {getattr(a, "tenant_id", a) for a in answers} == {"acme"}
    assert source.reads["lookup"] == 1

    clock.now += CACHE_TTL_S
    source.fail = True
    answers = asyncio.run(together(auth, f"Bearer {token}"))
    assert all(isinstance(a, OSError) for a in answers), answers
    assert source.reads["lookup"] == 2

    source.fail = False  # a failed read is not kept: the next request reads again
    assert asyncio.run(auth.caller(f"Bearer {token}")).tenant_id == "acme"
    assert source.reads["lookup"] == 3


def test_a_key_revoked_during_a_read_is_read_again(store: Store) -> None:
    source = CountedKeys(store.keys)
    auth = Authenticator(source, "keys", loopback=True, clock=Clock())
    key, token = store.keys.create("acme", ALL_SCOPES)
    prefix = keys.prefix_of(token)
    assert prefix is not None

    async def revoke_during_the_read() -> tuple[list[object], object]:
        first = asyncio.gather(*(auth.caller(f"Bearer {token}") for _ in range(5)),
                               return_exceptions=True)
        await asyncio.sleep(0.01)  # the read has started: it sees the key before revocation
        store.keys.revoke(key.id)
        auth.forget(prefix)  # what DELETE /v1/keys/{id} does on this process
        later = await asyncio.gather(auth.caller(f"Bearer {token}"), return_exceptions=True)
        return await first, later[0]

    first, later = asyncio.run(revoke_during_the_read())
    assert {getattr(a, "tenant_id", a) for a in first} == {"acme"}
    assert isinstance(later, Unauthorized) and "revoked" in str(later)
    assert source.reads["lookup"] == 2

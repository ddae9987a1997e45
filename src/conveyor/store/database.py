"""One database handle shared by the store's parts: engines, write transactions, wake-ups.

A write transaction is a :class:`Tx`. Code inside it says what the commit means (an event was
written, jobs became runnable); :meth:`Database.tx` acts on that once, after the commit: it
wakes the event tailers and hands the runnable jobs to the dispatcher. Nothing is announced for
a transaction that rolled back.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, CursorResult, Executable, TextClause, text
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound

from conveyor import notify
from conveyor.dispatch import Dispatcher, Runnable
from conveyor.errors import InsufficientStorage
from conveyor.store.db import (
    disk_full,
    free_bytes,
    make_engines,
    migrate,
    normalise_url,
    sqlite_dir,
    write_gate,
)
from conveyor.telemetry.logs import ATTEMPT, REQUEST_ID

#: One line per job transition, logged after its commit (a rolled-back one never happened).
transitions_log = logging.getLogger("conveyor.jobs")


def dumps(value: Any) -> str:
    """Standard JSON text of ``value`` (results, events, webhook bodies): NaN and infinities,
    which JSON has no words for (a strict parser, a browser's ``JSON.parse``, refuses the
    whole document), are written as null, as the API's own responses write them."""
    try:
        return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"), default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass(slots=True)
class Tx:
    """An open write transaction and what its commit will announce."""

    conn: Connection
    pg: bool
    runnable: list[Runnable] = field(default_factory=list)
    wrote_events: bool = False
    #: (job id, event type, event data, request id) of the state changes written.
    transitions: list[tuple[str, str, Any, str | None]] = field(default_factory=list)

    def execute(self, stmt: Executable, params: Any = None) -> CursorResult[Any]:
        if (not self.pg and isinstance(stmt, TextClause) and _plain_text(stmt)
                and (params is None or isinstance(params, dict))):
            # SQLite and a textual statement: straight to the driver, in this transaction.
            # SQLAlchemy would pass the values through and return them unchanged too, at
            # several times the cost; on the hot path (claim, event, end) that cost is most
            # of the time the write lock is held.
            driver = self.conn.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            return _SqliteResult(driver, stmt.text, params or {})  # type: ignore[return-value]
        return self.conn.execute(stmt, params)

    def mark(self) -> tuple[int, int]:
        """Where the announcements stand now (see :meth:`forget_since`)."""
        return len(self.runnable), len(self.transitions)

    def forget_since(self, mark: tuple[int, int]) -> None:
        """A savepoint rolled back: drop what it would have announced."""
        del self.runnable[mark[0]:]
        del self.transitions[mark[1]:]

    def made_runnable(self, job_id: str, run_after: float, *, pipeline: str | None = None,
                      priority: int = 0, timeout_s: float = 0.0) -> None:
        self.runnable.append(Runnable(job_id, run_after, pipeline, priority, timeout_s))


def _plain_text(stmt: TextClause) -> bool:
    """A ``text()`` statement whose values all come from the call (none bound in advance)."""
    plain = _PLAIN.get(stmt)
    if plain is None:
        plain = all(b.value is None and b.callable is None and b.required
                    for b in stmt._bindparams.values())
        _PLAIN[stmt] = plain
    return plain


_PLAIN: weakref.WeakKeyDictionary[TextClause, bool] = weakref.WeakKeyDictionary()


class _Row(sqlite3.Row):
    """A driver row that reads like SQLAlchemy's: by index, ``row._mapping[name]``, ``row.name``."""

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self.keys(), self, strict=True))

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except IndexError:
            raise AttributeError(name) from None


class _SqliteResult:
    """The part of SQLAlchemy's result API the store uses, over a sqlite3 cursor."""

    def __init__(self, conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> None:
        cur = conn.cursor()
        cur.row_factory = _Row
        try:
            cur.execute(sql, params)
        except sqlite3.Error as exc:
            # As SQLAlchemy raises it (IntegrityError, OperationalError...): callers catch those.
            raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc
        self._cur = cur
        self.rowcount = cur.rowcount

    def __iter__(self) -> Iterator[_Row]:
        return iter(self._cur.fetchall())

    def all(self) -> list[_Row]:
        return list(self._cur.fetchall())

    def fetchall(self) -> list[_Row]:
        return self.all()

    def first(self) -> _Row | None:
        row = self._cur.fetchone()
        self._cur.fetchall()  # run a RETURNING statement to its end
        return row  # type: ignore[no-any-return]

    def one_or_none(self) -> _Row | None:
        rows = self._cur.fetchall()
        if len(rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return rows[0] if rows else None

    def one(self) -> _Row:
        row = self.one_or_none()
        if row is None:
            raise NoResultFound("No row was found when one was required")
        return row

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._cur.fetchall()]


_STATE_AFTER = {"job.started": "running", "job.retrying": "queued"}


def log_transition(job_id: str, etype: str, data: Any, request_id: str | None) -> None:
    """Log one committed job transition: job id, state, attempt and the originating request."""
    # The job's state after the event: job.started -> running, job.retrying -> queued.
    state = _STATE_AFTER.get(etype, etype.removeprefix("job."))
    attempt = data.get("attempt") if isinstance(data, dict) else None
    if attempt is None:
        attempt = ATTEMPT.get()
    request_id = request_id or REQUEST_ID.get()
    transitions_log.info(
        "job %s %s (%s)%s%s", job_id, state, etype,
        f" attempt={attempt}" if attempt is not None else "",
        f" request_id={request_id}" if request_id else "",
        extra={"event": "job", "job_id": job_id, "state": state, "transition": etype,
               "attempt": attempt, "request_id": request_id},
    )


class Database:
    """Engines, transactions and the store-wide settings the parts share."""

    def __init__(
        self,
        url: str,
        *,
        run_dir: Path,
        retention_s: float = 7 * 86400,
        default_webhook_url: str | None = None,
        durable: bool = True,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self.retention_s = retention_s
        self.default_webhook_url = default_webhook_url
        self.writer, self.reader = make_engines(self.url, durable=durable)
        self.pg = self.writer.dialect.name == "postgresql"
        self.run_dir = run_dir
        self._gate = write_gate(self.url)
        #: Where the SQLite file lives (None on PostgreSQL): free_bytes runs on every upload.
        self._folder = sqlite_dir(self.url)
        self._events = None if self.pg else notify.SocketNotifier(run_dir)
        if dispatcher is None:
            from conveyor.dispatch.embedded import EmbeddedDispatcher

            dispatcher = EmbeddedDispatcher(run_dir, self.writer if self.pg else None)
        self.dispatcher = dispatcher

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        """A write transaction (queued behind the other writers on SQLite).

        A full disk under the database raises :class:`InsufficientStorage` (nothing of the
        transaction is kept); other database errors pass through as they are.
        """
        try:
            with self._tx() as tx:
                yield tx
        except DBAPIError as exc:
            if disk_full(exc):
                raise InsufficientStorage("the database's disk is full") from exc
            raise

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        if self._gate is None:
            with self.writer.begin() as conn:
                tx = Tx(conn, self.pg)
                yield tx
                if tx.wrote_events:
                    # Delivered by PostgreSQL at commit, to every server process.
                    conn.execute(text("SELECT pg_notify('conveyor_events', '')"))
        else:
            # The connection is checked out before the write lock is queued for and returned
            # after it is released: the lock is held for the transaction alone.
            with self.writer.connect() as conn:
                with self._gate(), conn.begin():
                    tx = Tx(conn, self.pg)
                    yield tx
        for job_id, etype, data, request_id in tx.transitions:
            log_transition(job_id, etype, data, request_id)
        if tx.wrote_events and self._events is not None:
            self._events.notify(notify.EVENTS)
        if tx.runnable:
            self.dispatcher.runnable(tx.runnable)

    def listener(self, channel: str) -> notify.Listener:
        if self.pg:
            return notify.PgListener(self.url, channel)
        return notify.SocketListener(self.run_dir, channel)

    def migrate(self) -> None:
        migrate(self.writer)

    def ping(self) -> None:
        with self.reader.connect() as conn:
            conn.execute(text("SELECT 1"))

    def free_bytes(self) -> int | None:
        """Free bytes on the SQLite file's disk; None on PostgreSQL (its own server's)."""
        return free_bytes(self._folder)

    def close(self) -> None:
        self.dispatcher.close()
        if self._events is not None:
            self._events.close()
        if self._gate is not None:
            self._gate.close()
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()

"""Engines and migrations for SQLite (WAL, busy timeout, durable commits) and PostgreSQL."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"
#: An arbitrary constant naming conveyor's PostgreSQL advisory locks.
PG_MIGRATE_LOCK = 7_401_001
PG_EVENTS_LOCK = 7_401_002


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_engine(url: str, *, immediate: bool, durable: bool = True) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=False)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL makes every WAL commit durable (fsync) before it returns: 202 means durable.
        # Workers use NORMAL: a power cut may lose their last commits (the job then runs again,
        # which at-least-once allows), never an earlier FULL commit, since the WAL is sequential.
        cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: a deferred transaction that reads, then writes can
        # fail with SQLITE_BUSY at once instead of waiting for the busy timeout.
        # Straight to the driver: this runs for every transaction, and SQLAlchemy's execution
        # path costs several times the statement itself.
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class WriteGate:
    """Queues SQLite writers: a thread lock within the process, ``flock`` across processes.

    SQLite's busy handler polls with sleeps of up to 100 ms while another connection holds the
    write lock; with an upload path, two workers and the event tailer all writing, those sleeps
    dominate latency. Waiting on a lock instead hands the write lock over at once.
    """

    def __init__(self, path: str) -> None:
        self._thread_lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._thread_lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


#: SQLite's result code for "database or disk is full", and PostgreSQL's SQLSTATE disk_full.
SQLITE_FULL = 13
PG_DISK_FULL = "53100"


def disk_full(exc: BaseException) -> bool:
    """Whether a database error means its disk is full (pure)."""
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return code == SQLITE_FULL or "database or disk is full" in str(orig)
    return getattr(orig, "sqlstate", None) == PG_DISK_FULL


def sqlite_dir(url: str) -> Path | None:
    """The directory of a SQLite database file; None for other databases and in-memory ones."""
    url = normalise_url(url)
    if not is_sqlite(url):
        return None
    path = make_url(url).database
    if not path or path == ":memory:":
        return None
    return Path(path).resolve().parent


def free_bytes(url: str | Path | None) -> int | None:
    """Free bytes on the disk holding a SQLite database file (its URL, or its directory from
    :func:`sqlite_dir`); None for other databases."""
    folder = sqlite_dir(url) if isinstance(url, str) else url
    if folder is None:
        return None
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def write_gate(url: str) -> WriteGate | None:
    url = normalise_url(url)
    if not is_sqlite(url):
        return None
    path = make_url(url).database
    if not path or path == ":memory:":
        return None
    return WriteGate(f"{path}.write.lock")


def make_engines(url: str, *, durable: bool = True) -> tuple[Engine, Engine]:
    """(writer, reader). On PostgreSQL they are the same engine."""
    url = normalise_url(url)
    if is_sqlite(url):
        return (
            _sqlite_engine(url, immediate=True, durable=durable),
            _sqlite_engine(url, immediate=False),
        )
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    if not durable:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # The PostgreSQL twin of SQLite's NORMAL: a crash of the server machine may lose
            # the last worker commits (the job runs again), never corrupt or reorder them.
            with dbapi_conn.cursor() as cur:
                cur.execute("SET synchronous_commit TO off")
            dbapi_conn.commit()

    return engine, engine


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        db = make_url(str(engine.url)).database or "conveyor.db"
        with open(f"{db}.migrate.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATE_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATE_LOCK})
                conn.commit()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision``. Safe to call from several processes."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine), engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)

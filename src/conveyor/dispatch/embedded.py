"""The embedded dispatcher: wake idle workers on this machine (or, on PostgreSQL, anywhere)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine, text

from conveyor import notify
from conveyor.dispatch import Runnable

log = logging.getLogger("conveyor.dispatch")


class EmbeddedDispatcher:
    """SQLite: one datagram per listening worker. PostgreSQL: ``NOTIFY conveyor_jobs``."""

    def __init__(self, run_dir: Path, pg_engine: Engine | None = None) -> None:
        self._pg = pg_engine
        self._notifier = None if pg_engine is not None else notify.SocketNotifier(run_dir)

    def runnable(self, jobs: Sequence[Runnable]) -> None:
        if not jobs:
            return
        if self._notifier is not None:
            self._notifier.notify(notify.JOBS)
            return
        assert self._pg is not None
        try:
            with self._pg.connect() as conn:
                conn.execute(text("SELECT pg_notify(:c, '')"), {"c": f"conveyor_{notify.JOBS}"})
                conn.commit()
        except Exception:
            # Workers re-check every second: a lost wake-up costs latency, never a job.
            log.warning("could not wake the workers", exc_info=True)

    def close(self) -> None:
        if self._notifier is not None:
            with contextlib.suppress(OSError):
                self._notifier.close()

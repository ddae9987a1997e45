"""``conveyor worker`` with a broker: start a Celery worker node on conveyor's app."""

from __future__ import annotations

import os

from conveyor.dispatch.routing import all_queues
from conveyor.settings import Settings


def celery_worker(settings: Settings, queues: str | None) -> int:
    """Run a prefork Celery worker until it is stopped; returns its exit code."""
    from conveyor import celery_app

    app = celery_app.use(settings)
    names = queues or ",".join(all_queues(settings))
    argv = [
        "worker",
        "--pool=prefork",
        f"--concurrency={max(settings.workers, 1)}",
        f"--queues={names}",
        f"--loglevel={settings.log_level}",
        # Several nodes may share a host name (containers, the tests' namespaces).
        f"--hostname=conveyor-{os.getpid()}@%h",
        # Start in well under a second: conveyor needs neither (the database is the truth).
        "--without-mingle",
        "--without-gossip",
    ]
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0

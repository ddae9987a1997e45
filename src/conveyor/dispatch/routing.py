"""Scale-out rules as pure functions: which combinations keep the guarantees, which queue and
broker priority a job's message gets, and how long the broker may hold an unacked message."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.settings import Settings

#: The queue of every pipeline that ``CONVEYOR_QUEUES`` does not route elsewhere.
DEFAULT_QUEUE = "conveyor"
#: Broker priorities run 0..9 (RabbitMQ ``x-max-priority``, kombu's Redis priority steps).
MAX_PRIORITY = 9
#: The longest per-job timeout the API accepts (ingest.params), plus margin: the broker must
#: not redeliver (Redis ``visibility_timeout``) or cut (RabbitMQ ``consumer_timeout``) the
#: message of a job that may still legitimately run.
LONGEST_JOB_S = 7 * 86400 + 3600


def refusal(settings: Settings) -> str | None:
    """Why a broker cannot be used with these settings (one line), or None."""
    url = settings.broker_url or ""
    if not url.startswith(("amqp://", "amqps://", "pyamqp://", "redis://", "rediss://")):
        return (f"CONVEYOR_BROKER_URL must be amqp://... (RabbitMQ) or redis://... (Redis), "
                f"not {url.split(':', 1)[0]}://")
    if importlib.util.find_spec("celery") is None:
        return ("CONVEYOR_BROKER_URL needs Celery: pip install 'conveyor[celery]'")
    if not settings.db_url.startswith(("postgresql", "postgres://")):
        return ("CONVEYOR_BROKER_URL needs a PostgreSQL CONVEYOR_DATABASE_URL: workers on other "
                "machines cannot share a SQLite file")
    storage = settings.storage_url or "file://"
    if storage.startswith("file://") and not settings.shared_filesystem:
        return ("CONVEYOR_BROKER_URL with file:// storage needs every machine to see the same "
                "directory: use S3 storage, or set CONVEYOR_SHARED_FILESYSTEM=true if it is "
                "a shared mount")
    try:
        routes(settings.queues)
    except ValueError as exc:
        return str(exc)
    return None


def routes(pairs: list[str]) -> dict[str, str]:
    """``["media=heavy", "pdf=heavy"]`` -> ``{"media": "heavy", "pdf": "heavy"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        pipeline, sep, queue = pair.partition("=")
        if not sep or not pipeline.strip() or not queue.strip():
            raise ValueError(f"CONVEYOR_QUEUES entries are pipeline=queue, not {pair!r}")
        out[pipeline.strip()] = queue.strip()
    return out


def queue_for(pipeline: str, table: dict[str, str]) -> str:
    return table.get(pipeline, DEFAULT_QUEUE)


def broker_priority(priority: int, broker_url: str) -> int:
    """conveyor's priority (higher first) as a broker priority 0..9: 0 is the middle level 5,
    each step up or down one level, clamped (so priorities 4 and 100 share the top level).
    RabbitMQ delivers higher numbers first; kombu's Redis transport serves lower numbers first.
    """
    level = 5 + max(-5, min(MAX_PRIORITY - 5, priority))
    if broker_url.startswith(("redis://", "rediss://")):
        return MAX_PRIORITY - level
    return level


def hard_time_limit(timeout_s: float, cancel_grace_s: float) -> float:
    """Celery's per-message hard limit: a backstop well above the watchdog's own kill."""
    return timeout_s + cancel_grace_s + max(30.0, timeout_s * 0.1)


def all_queues(settings: Settings) -> list[str]:
    """Every queue a worker started without ``--queues`` consumes."""
    return sorted({DEFAULT_QUEUE, *routes(settings.queues).values()})

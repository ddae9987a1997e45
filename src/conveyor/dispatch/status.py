"""What /readyz and /metrics say about the scale-out engine: is the broker reachable, which
Celery worker nodes are alive (their heartbeat rows, so the same with RabbitMQ and Redis)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from conveyor.dispatch.reconciler import lost_after
from conveyor.settings import Settings
from conveyor.store import Store

#: A broker check is a TCP connect and a handshake: reuse the answer this long.
_BROKER_CACHE_S = 2.0


@dataclass
class _Cached:
    at: float = 0.0
    ok: bool = False


_broker = _Cached()
_lock = threading.Lock()


def broker_reachable(url: str) -> bool:
    """Connect to the broker (1 s at most), cached for a couple of seconds."""
    with _lock:
        if time.monotonic() - _broker.at < _BROKER_CACHE_S:
            return _broker.ok
    from kombu.connection import Connection

    ok = True
    try:
        with Connection(url, connect_timeout=1.0) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1, timeout=1.0)
    except Exception:
        ok = False
    with _lock:
        _broker.at, _broker.ok = time.monotonic(), ok
    return ok


def scaleout_status(settings: Settings, store: Store) -> dict[str, Any] | None:
    """``{"broker": "ok"|"unreachable", "workers": live nodes, "processes": their pool
    size, "running": jobs they run}``, or None without a broker (blocking: call in a thread)."""
    if not settings.broker_url:
        return None
    since = time.time() - lost_after(settings.lease_s)
    nodes = store.dispatching.live(since)
    return {
        "broker": "ok" if broker_reachable(settings.broker_url) else "unreachable",
        "workers": len(nodes),
        "processes": sum(n.concurrency for n in nodes),
        "running": sum(n.running for n in nodes),
    }


def metric_gauges(status: dict[str, Any] | None) -> list[tuple[str, str, dict[str, float]]]:
    """Gauges for :func:`scaleout_status` (none without a broker), as the /metrics collector
    takes them: (name, help, {"": value})."""
    if status is None:
        return []
    return [
        ("conveyor_broker_up", "Whether the Celery broker answered (1) or not (0).",
         {"": 1.0 if status["broker"] == "ok" else 0.0}),
        ("conveyor_worker_nodes", "Celery worker nodes with a recent heartbeat.",
         {"": float(status["workers"])}),
        ("conveyor_worker_node_processes", "Pool processes of the live worker nodes.",
         {"": float(status["processes"])}),
    ]

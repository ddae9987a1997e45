"""Scale-out rules (pure): refused combinations, pipeline routes, broker priorities."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.dispatch.routing import (
    DEFAULT_QUEUE,
    all_queues,
    broker_priority,
    hard_time_limit,
    queue_for,
    refusal,
    routes,
)
from conveyor.settings import Settings
from tests.conftest import base_env

PG = "postgresql://postgres@db.example/conveyor"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"broker_url": "redis://r/0"}, "needs a PostgreSQL"),
        ({"broker_url": "redis://r/0", "database_url": PG}, "CONVEYOR_SHARED_FILESYSTEM=true"),
        ({"broker_url": "kafka://k", "database_url": PG}, "must be amqp://"),
        ({"broker_url": "amqp://r", "database_url": PG, "shared_filesystem": True,
          "queues": "media"}, "pipeline=queue"),
    ],
)
def test_combinations_that_break_the_guarantees_are_refused(
    tmp_path: Path, overrides: dict[str, object], needle: str
) -> None:
    settings = Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    problem = settings.unsupported()
    assert problem is not None and needle in problem
    assert "\n" not in problem


@pytest.mark.parametrize("broker", ["redis://r/0", "amqp://guest:guest@r//"])
def test_a_shared_filesystem_or_object_storage_is_accepted(tmp_path: Path, broker: str) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=broker, database_url=PG,
                        shared_filesystem=True)
    assert refusal(settings) is None


def test_routes_send_pipelines_to_their_queue() -> None:
    table = routes(["media=heavy", " pdf = heavy "])
    assert table == {"media": "heavy", "pdf": "heavy"}
    assert queue_for("pdf", table) == "heavy"
    assert queue_for("image", table) == DEFAULT_QUEUE
    settings = Settings(queues="media=heavy,pdf=slow")  # type: ignore[arg-type]
    assert all_queues(settings) == ["conveyor", "heavy", "slow"]


@pytest.mark.parametrize(
    ("priority", "amqp", "redis"),
    [(0, 5, 4), (1, 6, 3), (4, 9, 0), (1000, 9, 0), (-1, 4, 5), (-5, 0, 9), (-1000, 0, 9)],
)
def test_priority_maps_to_the_brokers_order(priority: int, amqp: int, redis: int) -> None:
    # RabbitMQ serves high numbers first, kombu's Redis transport low numbers first.
    assert broker_priority(priority, "amqp://x") == amqp
    assert broker_priority(priority, "redis://x") == redis


def test_the_hard_time_limit_is_a_backstop_above_the_watchdog() -> None:
    for timeout in (0.5, 60.0, 86400.0):
        assert hard_time_limit(timeout, 3.0) >= timeout + 3.0 + 30


def test_serve_refuses_a_broker_with_sqlite_in_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, CONVEYOR_BROKER_URL="redis://127.0.0.1:1/0")
    done = subprocess.run([sys.executable, "-m", "conveyor", "serve"], env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "needs a PostgreSQL" in lines[0], lines

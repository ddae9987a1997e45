"""The reconciler against a real PostgreSQL and a real Redis broker, one pass at a time.

A lost node's held messages are the case a whole-cluster test hits only by chance (the
machine must die in the instant between taking a message and claiming its job), so the
instant is set up here directly: the times are written into the database as they would be.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from conveyor.celery_app import make_app
from conveyor.dispatch.broker import BrokerDispatcher
from conveyor.dispatch.reconciler import Reconciler, lost_after
from conveyor.runner.retry import RetryPolicy
from conveyor.settings import Settings
from conveyor.store.dispatching import WorkerNode
from conveyor.store.tables import jobs
from tests.engine.conftest import Engine
from tests.scaleout.conftest import Broker

pytestmark = [pytest.mark.postgres]

LEASE_S = 3.0


@pytest.fixture
def redis_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker("redis", tmp_path)
    yield broker
    broker.close()


def _queued_messages(url: str) -> list[str]:
    """The job ids of the messages waiting in the broker's queues (every priority step)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        ids = []
        for key in client.scan_iter("conveyor*"):
            if client.type(key) == b"list":
                ids += [json.loads(raw)["headers"]["id"] for raw in client.lrange(key, 0, -1)]
        return ids
    finally:
        client.close()


def _take_all(url: str) -> None:
    """What a node does when it takes messages: they leave the queue."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in list(client.scan_iter("conveyor*")):
            if client.type(key) == b"list":
                client.delete(key)
    finally:
        client.close()


def test_a_message_sent_after_a_lost_nodes_last_beat_is_sent_again(
    tmp_path: Path, pg_url: str, redis_broker: Broker
) -> None:
    engine = Engine(tmp_path / "data", pg_url)
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url,
                        broker_url=redis_broker.url, lease_s=LEASE_S)
    publisher = BrokerDispatcher(settings, make_app(settings))
    publisher.bind(engine.store.dispatching)
    reconciler = Reconciler(engine.store, publisher, RetryPolicy(0.2, 1), LEASE_S)
    try:
        early, late, unsent = (engine.add("mark") for _ in range(3))
        engine.store.dispatching.mark([unsent], time.time())  # a message elsewhere, later
        assert set(publisher.publish([early, late])) == {early, late}
        assert sorted(_queued_messages(redis_broker.url)) == sorted([f"{early}.1",
                                                                     f"{late}.1"])
        # A node took both messages and died before claiming either. Its last beat came
        # between the two publishes; it died a moment after the second. The third job's
        # message went out once the node had long been silent: a live node has it.
        _take_all(redis_broker.url)
        now = time.time()
        beat = now - lost_after(LEASE_S) - 1
        engine.store.dispatching.beat(WorkerNode("doomed-1", "doomed", 1, "conveyor", 2, 0,
                                                 beat), beat - 5)
        with engine.store.db.tx() as tx:
            for job_id, at in ((early, beat - 0.5), (late, beat + 0.4),
                               (unsent, beat + lost_after(LEASE_S) + 0.5)):
                tx.execute(update(jobs).where(jobs.c.id == job_id).values(dispatched_at=at))

        reconciler.tick()

        assert reconciler.leading
        assert sorted(_queued_messages(redis_broker.url)) == sorted([f"{early}.2",
                                                                     f"{late}.2"])
        assert engine.store.dispatching.lost(time.time()) == []  # handled once, then forgotten
        reconciler.tick()
        assert len(_queued_messages(redis_broker.url)) == 2
    finally:
        reconciler.lock.release()
        publisher.close()
        engine.close()

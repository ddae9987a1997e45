"""The event hub's fan-out: who gets which event, encoded once, and only when someone listens."""

from __future__ import annotations

import asyncio

from conveyor.api.hub import EventHub, format_event
from conveyor.api.subscriber import Subscriber, Wire
from conveyor.auth.caller import EVERY_TENANT
from conveyor.store import Event


def _events() -> list[Event]:
    return [
        Event(1, "j1", "job.queued", 1.0, {}, "a"),
        Event(2, "j2", "job.queued", 1.0, {}, "b"),
        Event(3, "j1", "job.progress", 2.0, {"percent": 50}, "a"),
        Event(4, "j1", "job.succeeded", 3.0, {}, "a"),
    ]


def _received(sub: Subscriber) -> list[Wire]:
    out: list[Wire] = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        assert isinstance(item, Wire)
        out.append(item)
    return out


def test_each_stream_gets_its_events_encoded_once_for_all() -> None:
    async def run() -> None:
        hub = EventHub(store=None)  # type: ignore[arg-type]  # _fan_out never reads the store
        tenant_a = hub.subscribe(None, "a")
        admin = hub.subscribe(None, EVERY_TENANT)
        job1 = hub.subscribe("j1", "a")
        job2 = hub.subscribe("j2", "b")
        events = _events()
        hub._fan_out(events)

        assert [w.id for w in _received(tenant_a)] == [1, 3, 4]
        every = _received(admin)
        assert [w.id for w in every] == [1, 2, 3, 4]
        one = _received(job1)
        assert [w.id for w in one] == [1, 3, 4]
        assert [w.id for w in _received(job2)] == [2]
        # The job stream shares the global streams' encoding: the same objects, not copies.
        assert one[0] is every[0]
        assert [w.data for w in every] == [format_event(e) for e in events]
        assert [w.terminal for w in every] == [False, False, False, True]

    asyncio.run(run())


def test_a_job_stream_alone_encodes_its_job_only() -> None:
    async def run() -> None:
        hub = EventHub(store=None)  # type: ignore[arg-type]
        job2 = hub.subscribe("j2", "b")
        hub._fan_out(_events())
        got = _received(job2)
        assert [(w.id, w.job_id, w.data) for w in got] == [(2, "j2", format_event(_events()[1]))]

    asyncio.run(run())

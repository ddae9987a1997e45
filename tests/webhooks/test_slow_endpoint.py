"""An endpoint slow to answer delays its own webhooks only, not other jobs' (of any tenant)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.conftest import Server
from tests.webhooks.receiver import Receiver, deliveries

ENV = {"CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8", "CONVEYOR_WEBHOOK_TIMEOUT_S": "8"}


def _submit(srv: Server, url: str) -> str:
    r = httpx.post(f"{srv.url}/v1/jobs", data={"pipeline": "noop", "webhook_url": url},
                   files={"file": ("x.txt", b"x")}, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_a_hanging_endpoint_does_not_hold_up_other_webhooks(
        server_factory: Callable[..., Server]) -> None:
    slow, fast = Receiver(hold_first=True), Receiver()
    srv = server_factory(**ENV)
    try:
        _submit(srv, slow.url)
        assert slow.first.wait(30), "the first webhook was never sent"
        # The first endpoint holds its request open (up to the 8 s time-out). Meanwhile:
        others = [_submit(srv, fast.url) for _ in range(3)]
        started = time.monotonic()
        for job_id in others:
            fast.for_job(job_id, timeout=30)
        waited = time.monotonic() - started
    finally:
        slow.close()
        fast.close()
    assert waited < 4, f"the other webhooks waited {waited:.1f} s behind the hanging endpoint"


def test_a_delivery_cut_by_a_stop_is_sent_again_at_the_next_start(
        server_factory: Callable[..., Server]) -> None:
    """SIGTERM while an endpoint holds the request: the message is given back, so the next
    start sends it at once, not after its claim (3 x the 8 s time-out + 5 s) runs out."""
    hook = Receiver(hold_first=True)
    try:
        srv = server_factory(**ENV)
        job_id = _submit(srv, hook.url)
        assert hook.first.wait(30), "the webhook was never sent"
        srv.stop()
        again = server_factory(data_dir=srv.data_dir, **ENV)
        waited = hook.wait_for(2)
        sent = hook.ids()
        assert sent[1:] == sent[:1], sent
        assert waited < 5, f"sent again {waited:.1f} s after the start"
        attempts = deliveries(again.url, job_id)
        assert [(d["attempt"], d["outcome"]) for d in attempts] == [(1, "delivered")], attempts
    finally:
        hook.close()

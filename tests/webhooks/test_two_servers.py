"""Two ``conveyor serve`` machines on one database: each webhook is sent once, by one of them,
signed with the one secret they share."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from conveyor.webhooks.signing import generate_secret, verify
from tests.conftest import Server
from tests.engine.conftest import db_url  # noqa: F401 - the fixture, parametrised
from tests.webhooks.receiver import Receiver, deliveries


def test_each_webhook_once_with_the_shared_secret(
        server_factory: Callable[..., Server], db_url: str, tmp_path: Path) -> None:  # noqa: F811
    # Answers after 0.5 s: long enough for both servers' delivery loops to find a message due
    # while the first send is still in flight.
    receiver = Receiver(delay=0.5)
    shared = {"CONVEYOR_DATABASE_URL": db_url, "CONVEYOR_WORKERS": "1",
              "CONVEYOR_STORAGE_URL": f"file://{tmp_path / 'files'}",
              "CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8"}
    # Each machine has a secret of its own in its data dir, from an earlier version.
    first, second = generate_secret(), generate_secret()
    a = server_factory(start=False, **shared)
    b = server_factory(start=False, **shared)
    for srv, secret in ((a, first), (b, second)):
        srv.data_dir.mkdir(parents=True, exist_ok=True)
        (srv.data_dir / "webhook-secret").write_text(secret + "\n")
    a.start()
    b.start()
    try:
        hook = receiver.url
        jobs = []
        for i in range(12):
            srv = (a, b)[i % 2]
            r = httpx.post(f"{srv.url}/v1/jobs", data={"pipeline": "noop", "webhook_url": hook},
                           files={"file": (f"{i}.txt", b"hook me")}, timeout=30)
            assert r.status_code == 202, r.text
            jobs.append(r.json()["id"])
        for job_id in jobs:
            assert a.wait_state(job_id)["state"] == "succeeded"
        deadline = time.monotonic() + 30
        while len(receiver.got) < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # time for a second send, if any server were to make one
    finally:
        receiver.close()
    # The first machine to start gave its secret; the other now signs with it, and shows it.
    assert (b.data_dir / "webhook-secret").read_text().strip() == first
    assert "another webhook secret" in b.log()
    sent = Counter(headers["webhook-id"] for headers, _ in receiver.got)
    assert len(sent) == len(jobs) and set(sent.values()) == {1}, sent
    for headers, body in receiver.got:
        verify(first, headers, body)
        assert any(job_id.encode() in body for job_id in jobs)


def test_a_webhook_claimed_by_a_server_that_died_is_sent_by_another(
        server_factory: Callable[..., Server], tmp_path: Path) -> None:
    """At-least-once: the claim is a lease. Server A dies while its request hangs; once the
    lease (3 x the 0.5 s time-out + 5 s) ends, server B sends the same message."""
    hook = Receiver(hold_first=True)
    shared = {"CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
              "CONVEYOR_WORKERS": "1", "CONVEYOR_STORAGE_URL": f"file://{tmp_path / 'files'}",
              "CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
              "CONVEYOR_WEBHOOK_TIMEOUT_S": "0.5"}
    try:
        a = server_factory(**shared)
        r = httpx.post(f"{a.url}/v1/jobs", files={"file": ("x.txt", b"x")}, timeout=30,
                       data={"pipeline": "noop", "webhook_url": hook.url})
        assert r.status_code == 202, r.text
        assert hook.first.wait(30), "A never sent the webhook"
        a.kill()
        killed = time.monotonic()
        b = server_factory(**shared)
        hook.wait_for(2)
        waited = time.monotonic() - killed
        sent = hook.ids()
    finally:
        hook.close()
    assert sent[1:] == sent[:1], sent  # the same message, sent again by B
    assert 3 < waited < 20, waited  # not before A's lease ended
    # A's attempt was never recorded (it died first); B's is, as the first attempt.
    attempts = deliveries(b.url, r.json()["id"])
    assert [(d["attempt"], d["outcome"]) for d in attempts] == [(1, "delivered")], attempts

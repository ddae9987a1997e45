"""The delivery loop: sends due outbox messages, signed, on the Standard Webhooks schedule.

Messages are written by the store in the transaction that ends a job, so a crash can delay a
webhook but never lose it; a receiver may see one twice (the ``webhook-id`` tells).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from functools import partial
from pathlib import Path

from anyio import to_thread

from conveyor.settings import Settings
from conveyor.store import OutboxMessage, Store
from conveyor.telemetry.metrics import WEBHOOK_DELIVERIES
from conveyor.webhooks.schedule import classify, next_delay
from conveyor.webhooks.sender import send
from conveyor.webhooks.signing import generate_secret, headers
from conveyor.webhooks.ssrf import AllowList, UnsafeUrl, check_url

log = logging.getLogger("conveyor.webhooks")


def load_secret(settings: Settings, store: Store) -> str:
    """``CONVEYOR_WEBHOOK_SECRET``, else the secret every server on this database shares (kept
    in the database). The first server to start gives its own: the one in its data dir from
    an earlier version, or a new one. Each server writes the shared secret to
    ``<data dir>/webhook-secret`` too, where an operator reads it."""
    if settings.webhook_secret:
        return settings.webhook_secret
    path: Path = settings.data_dir / "webhook-secret"
    mine = path.read_text().strip() if path.exists() else None
    shared = store.outbox.shared_secret(mine or generate_secret())
    if mine == shared:
        return shared
    if mine is not None:
        log.warning("%s held another webhook secret than the one the servers on this database "
                    "share: it is replaced by the shared one (set CONVEYOR_WEBHOOK_SECRET to "
                    "choose it)", path)
    tmp = path.with_name(f".webhook-secret.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(shared + "\n")
    os.replace(tmp, path)
    return shared


#: Deliveries in flight at once per server: a slow endpoint holds one of them, not the rest.
MAX_IN_FLIGHT = 64


class Outbox:
    def __init__(self, settings: Settings, store: Store, secret: str,
                 changed: asyncio.Event | None = None) -> None:
        self.settings = settings
        self.store = store
        self.secret = secret
        self.allow = AllowList.parse(settings.webhook_allow_private)
        self.changed = changed
        self.rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        #: Deliveries running, each with the message it sends.
        self._sending: dict[asyncio.Task[None], OutboxMessage] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="conveyor-webhooks")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Deliveries cut short give their messages back at once (not after their claim ends).
        cut = list(self._sending.values())
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if cut:
            with contextlib.suppress(Exception):
                await to_thread.run_sync(self.store.outbox.release, cut)

    async def _run(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception:
                log.exception("webhook delivery pass failed")
            next_at = await to_thread.run_sync(self.store.outbox.next_due_at)
            wait = 1.0 if next_at is None else min(max(next_at - time.time(), 0.02), 1.0)
            if self.changed is not None:
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), timeout=wait)
            else:
                await asyncio.sleep(wait)

    async def deliver_due(self) -> int:
        """Start sending the due messages, as many as there are free places; each delivery
        runs on its own, so an endpoint slow to answer delays only its own messages."""
        room = MAX_IN_FLIGHT - len(self._sending)
        if room <= 0:
            return 0
        # Claimed for as long as an attempt may take (the address check, the request and its
        # record), with room to spare: no other server sends them meanwhile. A server that
        # dies with them claimed delays them by this much.
        lease = 3 * self.settings.webhook_timeout_s + 5
        due = await to_thread.run_sync(
            lambda: self.store.outbox.claim(time.time(), lease, limit=room))
        for message in due:
            task = asyncio.create_task(self._send(message), name=f"webhook-{message.msg_id}")
            self._sending[task] = message
            task.add_done_callback(self._done)
        return len(due)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        if self.changed is not None:
            self.changed.set()  # a place is free: the loop may start the next one now

    async def _send(self, message: OutboxMessage) -> None:
        try:
            await self.deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Unrecorded: the message is sent again when its claim ends.
            log.exception("webhook %s: delivery failed", message.msg_id)

    async def deliver(self, message: OutboxMessage) -> None:
        attempt = message.attempts + 1
        body = message.body.encode()
        try:
            target = await to_thread.run_sync(lambda: check_url(message.url, allow=self.allow))
        except UnsafeUrl as exc:
            refused = partial(
                self.store.outbox.record_delivery, message.id, attempt=attempt, status_code=None,
                error=str(exc), duration_ms=0.0, outcome="failed", next_attempt_at=None,
            )
            await to_thread.run_sync(refused)
            WEBHOOK_DELIVERIES.labels("failed").inc()
            return
        # The job's tenant's secret(s) (two during a rotation), else the server-wide one.
        own = await to_thread.run_sync(self.store.tenants.secrets_for_job, message.job_id)
        signed = headers(own or self.secret, message.msg_id, int(time.time()), body)
        outcome = await send(target, signed, body, timeout=self.settings.webhook_timeout_s)
        verdict = classify(outcome.status_code)
        if verdict == "delivered":
            result, next_at = "delivered", None
        elif verdict == "disable":
            result, next_at = "disabled", None
        else:
            delay = next_delay(attempt + 1, self.rng, scale=self.settings.webhook_schedule_scale)
            result = "retry" if delay is not None else "failed"
            next_at = time.time() + delay if delay is not None else None
        await to_thread.run_sync(lambda: self.store.outbox.record_delivery(
            message.id, attempt=attempt, status_code=outcome.status_code,
            error=outcome.error, duration_ms=float(outcome.duration_ms), outcome=result,
            next_attempt_at=next_at))
        WEBHOOK_DELIVERIES.labels(result).inc()

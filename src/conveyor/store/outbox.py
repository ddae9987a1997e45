"""The webhook outbox: one message per terminal event of a job with a webhook URL, written in
the transaction that ends the job, and the log of every delivery attempt."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from conveyor.models import EventType
from conveyor.store.database import Database, Tx, dumps
from conveyor.store.records import Delivery, OutboxMessage
from conveyor.store.tables import deliveries, outbox, server_values

#: The ``server_values`` row of the generated server-wide webhook secret.
WEBHOOK_SECRET = "webhook_secret"
#: What a delivery outcome leaves the message in; anything else keeps it pending (a retry).
_FINAL_STATE = {"delivered": "delivered", "disabled": "disabled", "failed": "failed"}


def enqueue(tx: Tx, job_id: str, event_id: int, etype: EventType, url: str,
            data: dict[str, Any], now: float) -> None:
    body = {"type": str(etype), "timestamp": now,
            "data": {"job_id": job_id, "event_id": event_id, **data}}
    tx.execute(
        insert(outbox).values(
            msg_id=f"msg_{uuid.uuid4().hex}", job_id=job_id, event_id=event_id,
            event_type=str(etype), url=url, body=dumps(body), state="pending",
            next_attempt_at=now, created_at=now, updated_at=now,
        )
    )


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, now: float, lease_s: float, limit: int = 50) -> list[OutboxMessage]:
        """Take up to ``limit`` due messages to deliver. Their next attempt moves ``lease_s``
        ahead in the same transaction, so the delivery loop of another server on this database
        does not send them too; a server that dies before recording its attempt leaves them
        due again when the lease ends (at-least-once). ``SKIP LOCKED`` (PostgreSQL) lets
        claims run side by side; SQLite serialises them."""
        with self.db.tx() as tx:
            rows = tx.execute(
                select(outbox)
                .where(outbox.c.state == "pending", outbox.c.next_attempt_at <= now)
                .order_by(outbox.c.next_attempt_at, outbox.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if rows:
                tx.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                           .values(next_attempt_at=now + lease_s))
        return [OutboxMessage.from_row(r) for r in rows]

    def release(self, messages: list[OutboxMessage]) -> None:
        """Give back claimed messages whose attempt was cut short before it was recorded
        (a server stopping): due again at once."""
        now = time.time()
        with self.db.tx() as tx:
            for m in messages:
                tx.execute(update(outbox)
                           .where(outbox.c.id == m.id, outbox.c.state == "pending",
                                  outbox.c.attempts == m.attempts)
                           .values(next_attempt_at=now))

    def shared_secret(self, candidate: str) -> str:
        """The server-wide webhook secret of every server on this database: the stored one,
        else ``candidate``, stored now (of servers starting together, one stores its own)."""
        for _ in range(2):
            with self.db.reader.connect() as conn:
                found = conn.execute(select(server_values.c.value)
                                     .where(server_values.c.name == WEBHOOK_SECRET)).scalar()
            if found is not None:
                return str(found)
            try:
                with self.db.tx() as tx:
                    tx.execute(insert(server_values).values(
                        name=WEBHOOK_SECRET, value=candidate, created_at=time.time()))
                return candidate
            except IntegrityError:
                continue  # another server stored its own meanwhile: read it
        raise RuntimeError("the shared webhook secret could be neither read nor stored")

    def next_due_at(self) -> float | None:
        with self.db.reader.connect() as conn:
            value = conn.execute(
                select(func.min(outbox.c.next_attempt_at)).where(outbox.c.state == "pending")
            ).scalar()
        return float(value) if value is not None else None

    def record_delivery(
        self,
        message_id: int,
        *,
        attempt: int,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: str,
        next_attempt_at: float | None,
    ) -> None:
        """Log one attempt and move the message on (delivered, failed, disabled or retry)."""
        now = time.time()
        with self.db.tx() as tx:
            msg = tx.execute(select(outbox.c.job_id, outbox.c.url)
                             .where(outbox.c.id == message_id)).one()
            tx.execute(
                insert(deliveries).values(
                    outbox_id=message_id, job_id=msg.job_id, attempt=attempt, at=now,
                    url=msg.url, status_code=status_code, error=error,
                    duration_ms=duration_ms, outcome=outcome,
                )
            )
            values: dict[str, Any] = {"attempts": attempt,
                                      "state": _FINAL_STATE.get(outcome, "pending"),
                                      "updated_at": now}
            if next_attempt_at is not None:
                values["next_attempt_at"] = next_attempt_at
            tx.execute(
                update(outbox)
                .where(outbox.c.id == message_id, outbox.c.state == "pending")
                .values(**values)
            )
            if outcome == "disabled":
                # 410 Gone: the receiver asked us to stop sending to this endpoint.
                tx.execute(
                    update(outbox)
                    .where(and_(outbox.c.url == msg.url, outbox.c.state == "pending"))
                    .values(state="disabled", updated_at=now)
                )

    def deliveries(self, job_id: str) -> list[Delivery]:
        with self.db.reader.connect() as conn:
            rows = conn.execute(
                select(deliveries, outbox.c.msg_id, outbox.c.event_type)
                .join(outbox, outbox.c.id == deliveries.c.outbox_id)
                .where(deliveries.c.job_id == job_id)
                .order_by(deliveries.c.id)
            )
            return [Delivery.from_row(r) for r in rows]

    def messages(self, job_id: str) -> list[OutboxMessage]:
        with self.db.reader.connect() as conn:
            rows = conn.execute(
                select(outbox).where(outbox.c.job_id == job_id).order_by(outbox.c.id)
            )
            return [OutboxMessage.from_row(r) for r in rows]

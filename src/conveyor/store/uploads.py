"""tus uploads (``/v1/uploads``): every SQL statement about them.

An upload is ``receiving`` until its last byte is durable; then one transaction moves it to
``done`` *and* inserts its job (:func:`conveyor.store.jobs.insert_job`), so the job exists
exactly once whatever crashes around it. ``terminated`` and ``expired`` rows stay as
tombstones (410) until the retention sweep forgets them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from conveyor.store.database import Database, dumps
from conveyor.store.jobs import insert_job
from conveyor.store.quotas import reserve
from conveyor.store.records import NewJob
from conveyor.store.tables import upload_chunks, uploads

RECEIVING, DONE, TERMINATED, EXPIRED = "receiving", "done", "terminated", "expired"


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    tenant_id: str
    state: str
    length: int
    offset: int
    metadata: str
    params: dict[str, Any]
    job_id: str
    created_at: float
    updated_at: float
    expires_at: float

    @classmethod
    def from_row(cls, row: Any) -> Upload:
        return cls(
            id=row.id, tenant_id=row.tenant_id, state=row.state, length=int(row.length),
            offset=int(row.upload_offset), metadata=row.metadata,
            params=json.loads(row.params), job_id=row.job_id, created_at=row.created_at,
            updated_at=row.updated_at, expires_at=row.expires_at,
        )


class Uploads:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, *, upload_id: str, job_id: str, tenant_id: str, length: int,
               metadata: str, params: dict[str, Any], expires_at: float) -> Upload:
        now = time.time()
        with self.db.tx() as tx:
            tx.execute(insert(uploads).values(
                id=upload_id, tenant_id=tenant_id, state=RECEIVING, length=length,
                upload_offset=0, metadata=metadata, params=dumps(params), job_id=job_id,
                created_at=now, updated_at=now, expires_at=expires_at,
            ))
        found = self.get(upload_id)
        assert found is not None
        return found

    def get(self, upload_id: str) -> Upload | None:
        with self.db.reader.connect() as conn:
            row = conn.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        return Upload.from_row(row) if row is not None else None

    def advance(self, upload_id: str, old: int, new: int, expires_at: float,
                chunk_key: str | None = None) -> bool:
        """Record a durable offset (``old`` -> ``new``), and the object ``chunk_key`` that
        holds those bytes, if one does; False if it was not ``old`` any more."""
        with self.db.tx() as tx:
            moved = bool(tx.execute(
                update(uploads)
                .where(uploads.c.id == upload_id, uploads.c.state == RECEIVING,
                       uploads.c.upload_offset == old)
                .values(upload_offset=new, updated_at=time.time(), expires_at=expires_at)
            ).rowcount)
            if moved and chunk_key is not None:
                tx.execute(insert(upload_chunks).values(
                    upload_id=upload_id, start=old, length=new - old, key=chunk_key))
            return moved

    def adopt(self, upload_id: str, length: int, chunk_key: str) -> bool:
        """Record ``chunk_key`` as the first ``length`` bytes of a receiving upload at offset
        ``length`` that has no chunk yet (bytes staged on a server's disk before the upload's
        storage was S3); False, writing nothing, otherwise."""
        with self.db.tx() as tx:
            offset = tx.execute(select(uploads.c.upload_offset).where(
                uploads.c.id == upload_id, uploads.c.state == RECEIVING)).scalar()
            has = tx.execute(select(upload_chunks.c.start).where(
                upload_chunks.c.upload_id == upload_id).limit(1)).first()
            if offset is None or int(offset) != length or has is not None:
                return False
            tx.execute(insert(upload_chunks).values(
                upload_id=upload_id, start=0, length=length, key=chunk_key))
            return True

    def chunks(self, upload_id: str) -> list[tuple[int, int, str]]:
        """The upload's chunks as (start, length, key), in order."""
        with self.db.reader.connect() as conn:
            return [(int(a), int(n), str(k)) for a, n, k in conn.execute(
                select(upload_chunks.c.start, upload_chunks.c.length, upload_chunks.c.key)
                .where(upload_chunks.c.upload_id == upload_id)
                .order_by(upload_chunks.c.start)
            )]

    def finish(self, upload: Upload, new_job: NewJob) -> bool:
        """Mark the upload done and insert its job, in one transaction; False if another
        request (or process) finished it first (then nothing is written)."""
        now = time.time()
        with self.db.tx() as tx:
            moved = tx.execute(
                update(uploads)
                .where(uploads.c.id == upload.id, uploads.c.state == RECEIVING,
                       uploads.c.upload_offset == upload.length)
                .values(state=DONE, updated_at=now)
            ).rowcount
            if not moved:
                return False
            tx.execute(delete(upload_chunks).where(upload_chunks.c.upload_id == upload.id))
            # Checked against the tenant's quotas at creation; here only counted.
            reserve(tx, new_job.tenant_id, new_job.input_size, now, check=False)
            insert_job(tx, new_job, now, self.db.retention_s)
        return True

    def end(self, upload_id: str, state: str, only_before: float | None = None) -> bool:
        """``receiving`` (or ``done``) -> ``terminated``; ``receiving`` -> ``expired`` when due."""
        now = time.time()
        before = (RECEIVING, DONE) if state == TERMINATED else (RECEIVING,)
        stmt = update(uploads).where(uploads.c.id == upload_id, uploads.c.state.in_(before))
        if only_before is not None:
            stmt = stmt.where(uploads.c.expires_at <= only_before)
        with self.db.tx() as tx:
            ended = bool(tx.execute(stmt.values(state=state, updated_at=now)).rowcount)
            if ended:
                tx.execute(delete(upload_chunks).where(upload_chunks.c.upload_id == upload_id))
            return ended

    def due(self, now: float, limit: int = 500) -> list[str]:
        """Receiving uploads whose time ran out."""
        with self.db.reader.connect() as conn:
            return list(conn.execute(
                select(uploads.c.id)
                .where(uploads.c.state == RECEIVING, uploads.c.expires_at <= now)
                .limit(limit)
            ).scalars())

    def complete_unfinished(self) -> list[tuple[str, int]]:
        """Receiving uploads that have all their bytes (a crash came before their job), with
        their lengths."""
        with self.db.reader.connect() as conn:
            return [(str(i), int(n)) for i, n in conn.execute(
                select(uploads.c.id, uploads.c.length)
                .where(uploads.c.state == RECEIVING, uploads.c.upload_offset == uploads.c.length)
            )]

    def receiving(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` that are still receiving (their staged bytes are wanted)."""
        return self._receiving(uploads.c.id, ids)

    def receiving_jobs(self, job_ids: list[str]) -> set[str]:
        """Those of ``job_ids`` whose upload is still receiving (their chunks are wanted)."""
        return self._receiving(uploads.c.job_id, job_ids)

    def _receiving(self, column: Any, values: list[str]) -> set[str]:
        found: set[str] = set()
        with self.db.reader.connect() as conn:
            for i in range(0, len(values), 500):
                found.update(conn.execute(
                    select(column)
                    .where(column.in_(values[i : i + 500]), uploads.c.state == RECEIVING)
                ).scalars())
        return found

    def forget(self, before: float) -> int:
        """Drop rows that ended (done, terminated, expired) before ``before``."""
        with self.db.tx() as tx:
            return int(tx.execute(
                delete(uploads)
                .where(uploads.c.state != RECEIVING, uploads.c.updated_at < before)
            ).rowcount)

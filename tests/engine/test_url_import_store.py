"""The store's side of URL import: the pending input, its fenced fill, and schema 0005."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from ulid import ULID

from conveyor.errors import LeaseLost
from conveyor.models import EventType
from conveyor.storage import input_key
from conveyor.store import NewJob
from tests.engine.conftest import Engine


def _url_job(engine: Engine, url: str = "https://files.example/a.csv") -> str:
    job_id = str(ULID())
    engine.store.jobs.create(NewJob(
        id=job_id, pipeline="probe", options={}, input_key=input_key(job_id),
        input_filename="a.csv", input_size=0, input_sha256="",
        media_type="application/octet-stream", input_url=url))
    return job_id


def test_a_url_job_is_pending_until_its_input_is_filled(engine: Engine) -> None:
    job_id = _url_job(engine)
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.input_pending
    assert job.input_url == "https://files.example/a.csv"
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None and claim.job.input_pending
    with pytest.raises(LeaseLost):
        engine.store.attempts.fill_input(job_id, "not-the-token", "a.csv", 3, "ab" * 32,
                                         "text/csv", None)
    engine.store.attempts.fill_input(job_id, claim.token, "a.csv", 3, "ab" * 32, "text/csv",
                                     "text/plain")
    job = engine.store.jobs.get(job_id)
    assert job is not None and not job.input_pending
    assert (job.input_size, job.input_sha256, job.media_type, job.declared_type) == (
        3, "ab" * 32, "text/csv", "text/plain")
    progress = [e for e in engine.store.events.after(0, job_id=job_id)
                if e.type == EventType.PROGRESS.value]
    assert progress and progress[-1].data["message"] == "fetched 3 bytes"


def test_an_upload_is_never_pending(engine: Engine) -> None:
    job = engine.store.jobs.get(engine.add("noop"))
    assert job is not None and job.input_url is None and not job.input_pending


def test_0005_adds_the_column_to_an_older_database(engine: Engine) -> None:
    job_id = engine.add("noop")
    writer = engine.store.db.writer
    # A database as conveyor 0003 left it: no input_url column.
    with writer.begin() as conn:
        conn.execute(text("ALTER TABLE jobs DROP COLUMN input_url"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    assert "input_url" not in {c["name"] for c in inspect(writer).get_columns("jobs")}
    engine.store.migrate()
    engine.store.migrate()
    assert "input_url" in {c["name"] for c in inspect(writer).get_columns("jobs")}
    job = engine.store.jobs.get(job_id)
    assert job is not None and job.input_url is None
    assert engine.store.jobs.get(_url_job(engine)) is not None

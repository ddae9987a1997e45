"""Result reuse in the store, on SQLite and PostgreSQL: what is copied, what a delete keeps, a
delete racing a reuse of the same job, and migration 0006 on a database that predates it."""

from __future__ import annotations

import hashlib
import threading

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from ulid import ULID

from conveyor.storage import artifact_key, input_key
from conveyor.store import Artifact, NewJob
from conveyor.store.db import MIGRATIONS, migrate
from tests.engine.conftest import Engine

DATA = b"reused input"


def _new(version: str = "1", options: dict[str, object] | None = None) -> NewJob:
    job_id = str(ULID())
    return NewJob(id=job_id, pipeline="noop", options=options or {"a": 1, "b": [2]},
                  input_key=input_key(job_id), input_filename="in.bin", input_size=len(DATA),
                  input_sha256=hashlib.sha256(DATA).hexdigest(), media_type="text/plain",
                  processor_version=version)


def _original(engine: Engine) -> tuple[str, str]:
    """A succeeded job with one artifact: (job id, the artifact's storage key)."""
    new = _new()
    engine.store.jobs.create(new)
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is not None and claim.job.id == new.id
    key = artifact_key(new.id, claim.token, "out.txt")
    engine.store.attempts.complete(new.id, claim.token, {"n": 1},
                                   [Artifact(new.id, "out.txt", "text/plain", 3, "ab" * 32, key)])
    return new.id, key


def test_reuse_copies_result_and_artifacts_and_deletes_keep_shared_keys(engine: Engine) -> None:
    original, key = _original(engine)
    assert engine.store.reuse.create(_new(version="2"), "default")[2] is None  # version
    assert engine.store.reuse.create(_new(), "other")[2] is None  # tenant
    # The same options in another key order are the same options.
    new = _new(options={"b": [2], "a": 1})
    job, created, reused_from = engine.store.reuse.create(new, "default")
    assert created and reused_from == original
    assert job.state == "succeeded" and job.attempts == 0 and job.result == {"n": 1}
    assert [(a.name, a.storage_key) for a in job.artifacts] == [("out.txt", key)]
    events = engine.store.events.after(0, job_id=new.id)
    assert [e.type for e in events] == ["job.queued", "job.succeeded"]
    assert events[-1].data == {"result": {"n": 1}, "reused_from": original}
    # No worker may claim it.
    claim = engine.store.attempts.claim_next("w", 30)
    assert claim is None or claim.job.id != new.id

    # Deleting the original keeps the shared key; deleting the last job naming it returns it.
    assert engine.store.jobs.delete(original) == [input_key(original)]
    assert engine.store.reuse.referenced(f"artifacts/{original}/") == {key}
    assert engine.store.jobs.delete(new.id) == [input_key(new.id), key]
    assert engine.store.reuse.referenced(f"artifacts/{original}/") == set()


def _race(engine: Engine, original: str, new: NewJob) -> dict[str, object]:
    """A reuse of ``original`` and its delete, started together: what each returned."""
    results: dict[str, object] = {}
    start = threading.Barrier(2)

    def reuse() -> None:
        start.wait()
        results["reuse"] = engine.store.reuse.create(new, "default")[2]

    def delete() -> None:
        start.wait()
        results["delete"] = engine.store.jobs.delete(original)

    threads = [threading.Thread(target=reuse), threading.Thread(target=delete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_delete_racing_a_reuse_never_loses_a_shared_key(engine: Engine) -> None:
    for _ in range(15):
        original, key = _original(engine)
        new = _new()
        results = _race(engine, original, new)
        removed = results["delete"]
        assert isinstance(removed, list)
        if results["reuse"] == original:
            # The reuse won: its rows name the key, so the delete must not remove it.
            assert key not in removed
            assert engine.store.reuse.referenced(f"artifacts/{original}/") == {key}
        else:
            assert results["reuse"] is None and key in removed
        engine.store.jobs.delete(new.id)


def test_deleting_both_sharers_at_once_removes_the_key_once(engine: Engine) -> None:
    for _ in range(10):
        original, key = _original(engine)
        new = _new()
        assert engine.store.reuse.create(new, "default")[2] == original
        removed: list[list[str]] = []
        start = threading.Barrier(2)

        def delete(job_id: str, start: threading.Barrier = start,
                   removed: list[list[str]] = removed) -> None:
            start.wait()
            removed.append(engine.store.jobs.delete(job_id))

        threads = [threading.Thread(target=delete, args=(j,)) for j in (original, new.id)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # Exactly one of the two deletes saw itself as the last to name the key.
        assert sum(keys.count(key) for keys in removed) == 1, removed


def test_migration_0006_adds_what_an_older_database_lacks(engine: Engine) -> None:
    writer = engine.store.db.writer
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with writer.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")

    def schema() -> tuple[set[str], set[str], set[str]]:
        found = inspect(writer)
        return ({c["name"] for c in found.get_columns("jobs")},
                {i["name"] for i in found.get_indexes("jobs")},
                {i["name"] for i in found.get_indexes("artifacts")})

    columns, job_indexes, artifact_indexes = schema()
    assert "processor_version" not in columns and "ix_jobs_reuse" not in job_indexes
    migrate(writer)
    migrate(writer)  # idempotent
    columns, job_indexes, artifact_indexes = schema()
    assert "processor_version" in columns and "ix_jobs_reuse" in job_indexes
    assert "ix_artifacts_storage_key" in artifact_indexes
    original, _key = _original(engine)
    assert engine.store.reuse.create(_new(), "default")[2] == original

"""The worker and storage: the input is materialised for processors, artifacts go up through
the protocol, a missing input fails at once."""

from __future__ import annotations

from conveyor.storage import artifacts_prefix, input_key
from tests.engine.conftest import Engine


def test_input_in_artifacts_out_and_missing_input(engine: Engine) -> None:
    ok = engine.add("echo", {"name": "copy.bin"}, data=b"payload \x00\xff")
    gone = engine.add("echo")
    engine.storage.delete(input_key(gone))
    engine.burst(workers=1)

    job = engine.store.jobs.get(ok)
    assert job is not None and job.state.value == "succeeded", job and job.error
    (art,) = job.artifacts
    assert engine.storage.keys(artifacts_prefix(ok)) == [art.storage_key]
    assert engine.storage.read_bytes(art.storage_key) == b"payload \x00\xff"
    # The stored input is intact and the attempt's work dir (with its copy) is gone.
    assert engine.storage.read_bytes(input_key(ok)) == b"payload \x00\xff"
    work = engine.data_dir / "work"
    assert not work.exists() or list(work.iterdir()) == []

    failed = engine.store.jobs.get(gone)
    assert failed is not None and failed.state.value == "failed"
    assert failed.error is not None and failed.error.code == "input_missing"
    assert failed.attempts == 1  # not retried: the file will not come back

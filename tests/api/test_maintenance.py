"""The storage sweep: what it removes, and what it must leave to uploads still in progress."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from conveyor.api.maintenance import ORPHAN_MIN_AGE_S, startup_sweep
from conveyor.settings import Settings
from conveyor.storage import LocalStorage, input_key
from conveyor.store import NewJob, Store


def test_an_input_without_its_job_row_is_an_orphan_only_once_old(tmp_path: Path) -> None:
    """An upload stores its input, then commits its job row: a sweep between the two (another
    process starting, or the periodic sweep) must not take the input."""
    settings = Settings(data_dir=tmp_path)
    store = Store(settings.db_url, run_dir=settings.run_dir)
    storage = LocalStorage(tmp_path / "files")
    try:
        store.migrate()
        inputs = {name: tmp_path / "files" / input_key(name)
                  for name in ("01FRESH", "01OLD", "01KNOWN")}
        for path in inputs.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"bytes")
        store.jobs.create(NewJob(id="01KNOWN", pipeline="noop", options={},
                                 input_key=input_key("01KNOWN"), input_filename="f",
                                 input_size=5, input_sha256="0" * 64, media_type="text/plain"))
        old = time.time() - ORPHAN_MIN_AGE_S - 60
        for name in ("01OLD", "01KNOWN"):
            os.utime(inputs[name], (old, old))
        swept = asyncio.run(startup_sweep(store, storage))
    finally:
        store.close()
    assert swept == {"temp_files": 0, "orphan_inputs": 1}
    assert {name for name, path in inputs.items() if path.exists()} == {"01FRESH", "01KNOWN"}

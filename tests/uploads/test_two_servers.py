"""Two ``conveyor serve`` machines on one database, each staging tus uploads on its own disk.

A request that reaches the server without the upload's bytes gets 409 ``upload_elsewhere`` and
changes nothing (it used to write the upload's end after a hole of zeros, or fail with a 500);
the server that has the bytes finishes the upload, and removes the bytes of an upload that
ended at the other one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import Server
from tests.engine.conftest import db_url  # noqa: F401 - the fixture, parametrised
from tests.uploads.conftest import TUS, create, offset_of, patch


def _staged(srv: Server) -> list[str]:
    return sorted(p.stem for p in (srv.data_dir / "uploads").glob("*.bin"))


def _elsewhere(r: object) -> None:
    assert r.status_code == 409, r.text  # type: ignore[attr-defined]
    assert r.json()["code"] == "upload_elsewhere"  # type: ignore[attr-defined]


def test_an_upload_stays_with_the_server_that_has_its_bytes(
        server_factory: Callable[..., Server], db_url: str, tmp_path: Path) -> None:  # noqa: F811
    shared = {"CONVEYOR_DATABASE_URL": db_url, "CONVEYOR_WORKERS": "1",
              "CONVEYOR_STORAGE_URL": f"file://{tmp_path / 'files'}",
              "CONVEYOR_SWEEP_INTERVAL_S": "0.5"}
    a = server_factory(**shared)
    b = server_factory(**shared)
    data = bytes(range(256)) * 400
    with a.client() as ca, b.client() as cb:
        path = create(ca, len(data), filename="moved.bin", pipeline="probe")
        upload_id = path.rsplit("/", 1)[1]
        assert patch(ca, path, 0, data[:40_000]).status_code == 204
        # The next PATCH reaches the other server: refused, nothing appended or staged there.
        _elsewhere(patch(cb, path, 40_000, data[40_000:]))
        assert offset_of(cb, path) == offset_of(ca, path) == 40_000
        assert _staged(b) == []
        # A wrong offset is still told as such.
        assert patch(cb, path, 0, data).json()["code"] == "offset_mismatch"
        # Back at the server with the bytes, the upload ends whole.
        r = patch(ca, path, 40_000, data[40_000:])
        assert r.status_code == 204, r.text
        job = a.wait_state(r.headers["Conveyor-Job-Id"])
        assert job["state"] == "succeeded"
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        assert cb.get(f"/v1/jobs/{job['id']}/input").content == data
        assert upload_id not in _staged(a)

        # Terminated at the other server: it ends there, and the server holding the bytes
        # removes them at its next sweep.
        other = create(ca, 10_000)
        assert patch(ca, other, 0, data[:4_000]).status_code == 204
        assert other.rsplit("/", 1)[1] in _staged(a)
        assert cb.delete(other, headers=TUS).status_code == 204
        assert ca.head(other, headers=TUS).status_code == 410
        deadline = time.monotonic() + 15
        while other.rsplit("/", 1)[1] in _staged(a) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert other.rsplit("/", 1)[1] not in _staged(a)

        # An upload that is new (offset 0) may start at either server.
        fresh = create(ca, 5)
        r = patch(cb, fresh, 0, b"hello")
        assert r.status_code == 204, r.text
        assert a.wait_state(r.headers["Conveyor-Job-Id"])["state"] == "succeeded"

        # Every byte in at A, and A crashed before the job's commit.
        last = create(ca, len(data), filename="late.bin", pipeline="probe")
        last_id = last.rsplit("/", 1)[1]
        assert patch(ca, last, 0, data[:5_000]).status_code == 204
    a.kill()
    with open(a.data_dir / "uploads" / f"{last_id}.bin", "ab") as fh:
        fh.write(data[5_000:])
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE uploads SET upload_offset = length WHERE id = :id"),
                     {"id": last_id})
    engine.dispose()
    # B cannot finish it (a HEAD answers, without a job yet), nor does its start-up try.
    with b.client() as cb:
        r = cb.head(last, headers=TUS)
        assert r.status_code == 200
        assert int(r.headers["Upload-Offset"]) == len(data)
        assert "Conveyor-Job-Id" not in r.headers
    b.stop()
    b.start()
    with b.client() as cb:
        assert "Conveyor-Job-Id" not in cb.head(last, headers=TUS).headers
    # A, restarted, commits the job from its bytes; B then sees it too.
    a.start()
    with b.client() as cb:
        deadline = time.monotonic() + 15
        while "Conveyor-Job-Id" not in (r := cb.head(last, headers=TUS)).headers:
            assert time.monotonic() < deadline, "A did not finish the upload"
            time.sleep(0.1)
    job = b.wait_state(r.headers["Conveyor-Job-Id"])
    assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
    assert _staged(a) == []

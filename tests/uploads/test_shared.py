"""tus on S3 with two ``conveyor serve`` machines on one database: no sticky sessions.

Each PATCH stores its bytes as an object of its own, so any server goes on with any upload,
finishes it, or takes over after another died; two PATCHes at one offset on two servers
never both count. The bucket is moto's, inspected directly.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Callable

import httpx
import sqlalchemy as sa

from tests import objects
from tests.conftest import Server
from tests.engine.conftest import db_url  # noqa: F401 - the fixture, parametrised
from tests.uploads.conftest import TUS, create, offset_of, patch
from tests.uploads.cutter import Cutter


def _chunks(moto: objects.Moto, prefix: str, *done: str) -> list[str]:
    """The objects under chunks/, but for the inputs of the jobs ``done`` (each has one)."""
    keys = sorted(objects.s3_keys(moto, prefix, "chunks/"))
    for job_id in done:
        [kept] = [k for k in keys if k.startswith(f"chunks/{job_id}/input-")]
        keys.remove(kept)
    return keys


def _pair(server_factory: Callable[..., Server], db_url: str,  # noqa: F811
          moto: objects.Moto) -> tuple[Server, Server, str]:
    # No quick storage sweeps here: moto lists every multipart upload as started in 2010,
    # so a sweep would abort the uploads in flight as stale.
    # Parts of 64 KiB (the least moto takes here): chunks of 100 kB are copied inside S3.
    env = {**moto.env(), "CONVEYOR_DATABASE_URL": db_url, "CONVEYOR_WORKERS": "1",
           "CONVEYOR_MAX_UPLOAD_BYTES": str(64 * 1024**2)}
    prefix = objects.bucket_prefix(env)
    assert prefix is not None
    return server_factory(**env), server_factory(**env), prefix


def test_any_server_goes_on_with_an_upload(server_factory: Callable[..., Server],
                                           db_url: str, moto: objects.Moto) -> None:  # noqa: F811
    a, b, prefix = _pair(server_factory, db_url, moto)
    data = os.urandom(300_000)
    with a.client() as ca, b.client() as cb:
        # Small chunks (under one part): the input is streamed together.
        path = create(ca, 100_000, filename="small.bin", pipeline="probe")
        assert patch(ca, path, 0, data[:40_000]).status_code == 204
        assert offset_of(cb, path) == 40_000
        assert patch(cb, path, 40_000, data[40_000:70_000]).status_code == 204
        assert len(_chunks(moto, prefix)) == 2
        r = patch(ca, path, 70_000, data[70_000:100_000])
        assert r.status_code == 204, r.text
        job = b.wait_state(r.headers["Conveyor-Job-Id"])
        assert job["state"] == "succeeded"
        assert job["input"]["sha256"] == hashlib.sha256(data[:100_000]).hexdigest()  # type: ignore[index]
        assert cb.get(f"/v1/jobs/{job['id']}/input").content == data[:100_000]
        done = [str(job["id"])]
        assert _chunks(moto, prefix, *done) == []

        # Chunks of a part or more: the input is copied together inside S3. B never saw
        # the first chunk, so it hashes the input back to get its sha256.
        path = create(cb, len(data), filename="large.bin", pipeline="probe")
        for offset, client in ((0, ca), (100_000, ca), (200_000, cb)):
            r = patch(client, path, offset, data[offset:offset + 100_000])
            assert r.status_code == 204, r.text
        job = a.wait_state(r.headers["Conveyor-Job-Id"])
        assert job["state"] == "succeeded"
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        assert job["input"]["size"] == len(data)  # type: ignore[index]
        assert ca.get(f"/v1/jobs/{job['id']}/input").content == data
        done.append(str(job["id"]))
        assert _chunks(moto, prefix, *done) == []
        assert objects.s3_keys(moto, prefix, "inputs/") == {}
        assert objects.s3_uploads(moto, prefix) == []

        # A checksum that does not match appends nothing and leaves no object.
        path = create(ca, 1000)
        bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
        r = patch(cb, path, 0, data[:1000], **{"Upload-Checksum": f"sha256 {bad}"})
        assert r.status_code == 460, r.text
        assert offset_of(ca, path) == 0
        assert _chunks(moto, prefix, *done) == []

        # Terminated at the other server: the chunk goes with it.
        assert patch(ca, path, 0, data[:500]).status_code == 204
        assert len(_chunks(moto, prefix, *done)) == 1
        assert cb.delete(path, headers=TUS).status_code == 204
        assert ca.head(path, headers=TUS).status_code == 410
        assert _chunks(moto, prefix, *done) == []


def test_racing_patches_on_two_servers(server_factory: Callable[..., Server],
                                       db_url: str, moto: objects.Moto) -> None:  # noqa: F811
    """Two whole bodies at offset 0, one per server, at once: exactly one counts, the other
    gets 409 (nothing appended), and the input is that one body, whole."""
    a, b, prefix = _pair(server_factory, db_url, moto)
    size = 2_000_000
    bodies = {a.port: os.urandom(size), b.port: os.urandom(size)}
    with a.client() as ca:
        path = create(ca, size, filename="race.bin", pipeline="probe")
    answers: dict[int, httpx.Response] = {}

    def send(srv: Server) -> None:
        with srv.client() as c:
            answers[srv.port] = patch(c, path, 0, bodies[srv.port])

    threads = [threading.Thread(target=send, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in answers.values())
    assert codes == [204, 409], [r.text for r in answers.values()]
    won = next(port for port, r in answers.items() if r.status_code == 204)
    loser = next(r for r in answers.values() if r.status_code == 409)
    assert loser.json()["code"] == "offset_mismatch"
    job = a.wait_state(answers[won].headers["Conveyor-Job-Id"])
    assert job["input"]["sha256"] == hashlib.sha256(bodies[won]).hexdigest()  # type: ignore[index]
    with a.client() as ca:
        assert ca.get(f"/v1/jobs/{job['id']}/input").content == bodies[won]
    # Sent in one piece, the winner's chunk is the input; the loser's chunk is gone.
    deadline = time.monotonic() + 15
    while len(_chunks(moto, prefix)) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_chunks(moto, prefix)) == 1


def test_another_server_takes_over(server_factory: Callable[..., Server], db_url: str,  # noqa: F811
                                   moto: objects.Moto) -> None:
    """A dies after a PATCH; B goes on from the durable offset. A dies again after the last
    chunk counted but before the job's commit; B's HEAD commits the job, exactly once."""
    a, b, prefix = _pair(server_factory, db_url, moto)
    data = os.urandom(200_000)
    with a.client() as ca:
        path = create(ca, len(data), filename="taken.bin", pipeline="probe")
        assert patch(ca, path, 0, data[:50_000]).status_code == 204
        last = create(ca, len(data), filename="late.bin", pipeline="probe")
        assert patch(ca, last, 0, data[:50_000]).status_code == 204
    a.kill()
    upload_id = last.rsplit("/", 1)[1]
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        job_id = conn.execute(sa.text("SELECT job_id FROM uploads WHERE id = :id"),
                              {"id": upload_id}).scalar()
    # What the crashed A had done for `last`: the last chunk stored and counted, no job yet.
    key = f"chunks/{job_id}/{50_000:020d}-deadbeefdeadbeef"
    moto.client().put_object(Bucket=objects.BUCKET, Key=f"{prefix}/{key}", Body=data[50_000:])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE uploads SET upload_offset = length WHERE id = :id"),
                     {"id": upload_id})
        conn.execute(sa.text("INSERT INTO upload_chunks (upload_id, start, length, key) "
                             "VALUES (:id, 50000, :n, :key)"),
                     {"id": upload_id, "n": len(data) - 50_000, "key": key})
    engine.dispose()
    with b.client() as cb:
        assert offset_of(cb, path) == 50_000
        r = patch(cb, path, 50_000, data[50_000:])
        assert r.status_code == 204, r.text
        taken = r.headers["Conveyor-Job-Id"]
        job = b.wait_state(taken)
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]

        r = cb.head(last, headers=TUS)
        assert r.status_code == 200
        late = r.headers["Conveyor-Job-Id"]
        job = b.wait_state(late)
        assert job["state"] == "succeeded"
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        assert cb.head(last, headers=TUS).headers["Conveyor-Job-Id"] == late
        listed = cb.get("/v1/jobs", params={"limit": 500}).json()["items"]
        assert sorted(j["id"] for j in listed) == sorted([taken, late])
    assert _chunks(moto, prefix, taken, late) == []


def test_cut_bodies_keep_what_arrived(server_factory: Callable[..., Server],
                                      moto: objects.Moto) -> None:
    """A body cut mid-way on S3 keeps what arrived (no checksum): the client goes on from the
    offset HEAD gives, and the input is bit-identical."""
    srv = server_factory(CONVEYOR_WORKERS="1", **moto.env())
    data = os.urandom(1_000_000)
    with srv.client() as c:
        path = create(c, len(data), filename="cut.bin", pipeline="probe")
    with Cutter(srv.port, [300_000]) as cutter:
        with httpx.Client(base_url=f"http://127.0.0.1:{cutter.port}") as c:
            try:
                patch(c, path, 0, data)
            except httpx.HTTPError:
                pass
        assert cutter.cut == 1
    with srv.client() as c:
        deadline = time.monotonic() + 10
        while (kept := offset_of(c, path)) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the server is still storing what the cut request sent
        assert 0 < kept <= 300_000
        r = patch(c, path, kept, data[kept:])
        assert r.status_code == 204, r.text
        job = srv.wait_state(r.headers["Conveyor-Job-Id"])
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        assert c.get(f"/v1/jobs/{job['id']}/input").content == data


def test_uploads_staged_before_s3_are_adopted(server_factory: Callable[..., Server],
                                              moto: objects.Moto) -> None:
    """An upload staged on the server's disk (by a version that staged uploads on S3 too, or
    before the storage became S3) goes on after the restart: its durable bytes, and only
    those, become its first chunk."""
    srv = server_factory(CONVEYOR_WORKERS="1", **moto.env())
    data = os.urandom(150_000)
    with srv.client() as c:
        path = create(c, len(data), filename="old.bin", pipeline="probe")
    srv.kill()
    upload_id = path.rsplit("/", 1)[1]
    # What the old server had done: 60,000 bytes durable, 1,000 more staged but never counted.
    (srv.data_dir / "uploads").mkdir(exist_ok=True)
    (srv.data_dir / "uploads" / f"{upload_id}.bin").write_bytes(data[:60_000] + b"x" * 1000)
    engine = sa.create_engine(f"sqlite:///{srv.data_dir / 'conveyor.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE uploads SET upload_offset = 60000 WHERE id = :id"),
                     {"id": upload_id})
    engine.dispose()
    srv.start()
    assert not list((srv.data_dir / "uploads").glob("*.bin"))
    with srv.client() as c:
        assert offset_of(c, path) == 60_000
        r = patch(c, path, 60_000, data[60_000:])
        assert r.status_code == 204, r.text
        job = srv.wait_state(r.headers["Conveyor-Job-Id"])
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        assert c.get(f"/v1/jobs/{job['id']}/input").content == data


def test_sweeps_keep_inputs_and_remove_stray_chunks(server_factory: Callable[..., Server],
                                                    moto: objects.Moto) -> None:
    """An upload sent in one PATCH keeps its chunk as the job's input; a sweep removes what
    no upload wants (a chunk of a done upload, chunks of unknown jobs) and keeps the input,
    the chunks of receiving uploads, and DELETE of the job removes the input."""
    # Small objects only (single PUTs): a sweep here aborts no upload in flight.
    env = moto.env()
    prefix = objects.bucket_prefix(env)
    assert prefix is not None
    srv = server_factory(CONVEYOR_WORKERS="1", CONVEYOR_SWEEP_INTERVAL_S="0.5", **env)
    data = os.urandom(50_000)
    with srv.client() as c:
        path = create(c, len(data), filename="one.bin", pipeline="probe")
        r = patch(c, path, 0, data)
        assert r.status_code == 204, r.text
        job_id = r.headers["Conveyor-Job-Id"]
        assert srv.wait_state(job_id)["state"] == "succeeded"
        [chunk] = _chunks(moto, prefix)
        assert chunk.startswith(f"chunks/{job_id}/")
        assert objects.s3_keys(moto, prefix, "inputs/") == {}
        receiving = create(c, 1000)
        assert patch(c, receiving, 0, data[:400]).status_code == 204
        [kept] = [k for k in _chunks(moto, prefix) if k != chunk]
        bucket = moto.client()
        strays = [f"chunks/{job_id}/{0:020d}-0123456789abcdef", f"chunks/{'Z' * 26}/x"]
        for key in strays:
            bucket.put_object(Bucket=objects.BUCKET, Key=f"{prefix}/{key}", Body=b"stray")
        deadline = time.monotonic() + 15
        while any(k in _chunks(moto, prefix) for k in strays):
            assert time.monotonic() < deadline, _chunks(moto, prefix)
            time.sleep(0.1)
        assert _chunks(moto, prefix) == sorted([chunk, kept])
        assert c.get(f"/v1/jobs/{job_id}/input").content == data
        # Terminating the done upload ends the upload, not its job's input.
        assert c.delete(path, headers=TUS).status_code == 204
        assert _chunks(moto, prefix) == sorted([chunk, kept])
        assert c.get(f"/v1/jobs/{job_id}/input").content == data
        assert c.delete(f"/v1/jobs/{job_id}").status_code in (200, 202, 204)
        assert _chunks(moto, prefix) == [kept]


def test_s3_down_mid_upload_appends_nothing(server_factory: Callable[..., Server],
                                            moto: objects.Moto) -> None:
    """S3 unreachable: a PATCH is 503 ``storage_unavailable`` and appends nothing (the offset
    lives in the database: HEAD still answers); once S3 is back the upload goes on and ends
    whole, in one chunk or in a multipart object."""
    gate = objects.Gate(moto.port).up()
    try:
        env = moto.env(endpoint=gate.endpoint)
        srv = server_factory(CONVEYOR_WORKERS="1", **env,
                             CONVEYOR_MAX_UPLOAD_BYTES=str(64 * 1024**2))
        data = os.urandom(400_000)
        with srv.client() as c:
            path = create(c, len(data), filename="outage.bin", pipeline="probe")
            assert patch(c, path, 0, data[:100_000]).status_code == 204
            gate.down()
            for size in (1000, 200_000):  # one PUT; a multipart object (64 KiB parts)
                r = patch(c, path, 100_000, data[100_000:100_000 + size])
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "storage_unavailable"
                assert offset_of(c, path) == 100_000
            gate.up()
            r = patch(c, path, 100_000, data[100_000:])
            assert r.status_code == 204, r.text
            job = srv.wait_state(r.headers["Conveyor-Job-Id"])
            assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
            assert c.get(f"/v1/jobs/{job['id']}/input").content == data
    finally:
        gate.down()

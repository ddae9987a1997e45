"""The tus flow on both databases: SQLite and a fresh PostgreSQL database."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from tests.conftest import Server
from tests.engine.conftest import db_url  # noqa: F401 - the fixture, parametrised
from tests.uploads.conftest import TUS, create, offset_of, patch


def test_upload_on_each_database(server_factory: Callable[..., Server],
                                 db_url: str) -> None:  # noqa: F811
    srv = server_factory(CONVEYOR_WORKERS="1", CONVEYOR_DATABASE_URL=db_url)
    data = bytes(range(256)) * 400
    with srv.client() as c:
        path = create(c, len(data), filename="db.bin", pipeline="probe")
        assert patch(c, path, 0, data[:40_000]).status_code == 204
        bad = patch(c, path, 40_000, data[40_000:60_000], **{
            "Upload-Checksum": "md5 " + base64.b64encode(hashlib.md5(b"x").digest()).decode()})
        assert bad.status_code == 460
        assert offset_of(c, path) == 40_000
        r = patch(c, path, 40_000, data[40_000:])
        assert r.status_code == 204
        job = srv.wait_state(r.headers["Conveyor-Job-Id"])
        assert job["input"]["sha256"] == hashlib.sha256(data).hexdigest()  # type: ignore[index]
        other = create(c, 10)
        assert c.delete(other, headers=TUS).status_code == 204
        assert c.head(other, headers=TUS).status_code == 410

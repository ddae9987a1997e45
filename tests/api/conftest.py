from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Server, base_env


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a module of request/response tests (upload limit 1 MiB)."""
    folder = tmp_path_factory.mktemp("api") / "data"
    srv = Server(folder, base_env(folder, CONVEYOR_WORKERS="1",
                                  CONVEYOR_MAX_UPLOAD_BYTES=str(1024 * 1024)))
    srv.start()
    yield srv
    srv.kill()

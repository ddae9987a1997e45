from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Server, module_server


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a module of request/response tests (upload limit 1 MiB)."""
    yield from module_server(tmp_path_factory, "api", CONVEYOR_WORKERS="1",
                             CONVEYOR_MAX_UPLOAD_BYTES=str(1024 * 1024))

"""The Python clients and the CLI's client commands send the API key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.client import AsyncClient, Client
from conveyor.errors import ClientError
from tests.auth.conftest import Keyed


def test_client_sends_its_api_key(keyed: Keyed, tmp_path: Path) -> None:
    source = tmp_path / "c.bin"
    source.write_bytes(b"client bytes")
    with Client(keyed.url, api_key=keyed.keys["rw"].key) as client:
        job = client.submit(source, pipeline="echo")
        assert client.get(job["id"])["id"] == job["id"]
    with Client(keyed.url, api_key=keyed.keys["b"].key) as other, \
            pytest.raises(ClientError) as caught:
        other.get(job["id"])
    assert caught.value.status == 404
    with Client(keyed.url) as nobody, pytest.raises(ClientError) as caught:
        nobody.list()
    assert caught.value.code == "unauthorized"


def test_async_client_reads_conveyor_api_key(keyed: Keyed,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_API_KEY", keyed.keys["read"].key)

    async def run() -> dict[str, object]:
        async with AsyncClient(keyed.url) as client:
            return await client.list()

    assert "items" in asyncio.run(run())


def test_cli_reads_conveyor_api_key(keyed: Keyed) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_URL=keyed.url, PYTHONPATH=os.environ.get("PYTHONPATH", ""))

    def jobs_list(key: str | None) -> subprocess.CompletedProcess[str]:
        extra = {"CONVEYOR_API_KEY": key} if key else {}
        return subprocess.run([sys.executable, "-m", "conveyor", "jobs", "list", "--json"],
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=60, check=False)

    assert jobs_list(keyed.keys["read"].key).returncode == 0
    refused = jobs_list(None)
    assert refused.returncode == 1 and "unauthorized" in refused.stderr

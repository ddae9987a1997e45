"""Servers with API keys: keys are made with ``conveyor keys create`` on the server's database
before (or while) it runs, as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import Server, base_env


@dataclass
class Key:
    id: str
    tenant: str
    prefix: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "conveyor", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def make_key(env: dict[str, str], tenant: str, *scopes: str, name: str = "") -> Key:
    args = ["keys", "create", "--tenant", tenant, "--json", "--name", name]
    for scope in scopes:
        args += ["--scope", scope]
    data = json.loads(cli(env, *args).stdout)
    return Key(data["id"], tenant, data["prefix"], data["key"])


@dataclass
class Keyed:
    """A running server and the keys made on its database, by role."""

    srv: Server
    keys: dict[str, Key] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.srv.url

    def h(self, role: str) -> dict[str, str]:
        return self.keys[role].headers

    def submit(self, role: str, pipeline: str = "echo", data: bytes = b"hello",
               **fields: str) -> str:
        resp = httpx.post(f"{self.url}/v1/jobs", files={"file": ("in.bin", data)},
                          data={"pipeline": pipeline, **fields}, headers=self.h(role),
                          timeout=30)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["id"])

    def wait(self, role: str, job_id: str, timeout: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        job: dict[str, object] = {}
        while time.monotonic() < deadline:
            job = httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=self.h(role),
                            timeout=10).json()
            if job.get("state") in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} stuck: {job}")


#: Roles made for every keyed server: tenant ``a`` with each scope, a revoked key of ``a``,
#: and tenant ``b``'s keys.
ROLES = {
    "admin": ("a", ("admin",)),
    "rw": ("a", ("jobs:read", "jobs:write")),
    "read": ("a", ("jobs:read",)),
    "write": ("a", ("jobs:write",)),
    "revoked": ("a", ("jobs:read", "jobs:write", "admin")),
    "b": ("b", ("jobs:read", "jobs:write")),
    "b_admin": ("b", ("admin",)),
}


def keyed_server(folder_factory: pytest.TempPathFactory, name: str,
                 **env: str) -> Iterator[Keyed]:
    folder = folder_factory.mktemp(name) / "data"
    srv = Server(folder, base_env(folder, **{"CONVEYOR_WORKERS": "1", "CONVEYOR_LEASE_S": "5",
                                             **env}))
    keyed = Keyed(srv)
    for role, (tenant, scopes) in ROLES.items():
        keyed.keys[role] = make_key(srv.env, tenant, *scopes, name=role)
    cli(srv.env, "keys", "revoke", keyed.keys["revoked"].id)
    srv.start()
    yield keyed
    srv.kill()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    yield from keyed_server(tmp_path_factory, "keyed")

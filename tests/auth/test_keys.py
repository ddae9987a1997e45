"""Keys at rest and in use: hashes only, revocation on every server within a second, the
modes (open on loopback, refusal on a network address, CONVEYOR_AUTH=none), bad inputs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.auth.conftest import Keyed, cli, make_key
from tests.conftest import Server, base_env, free_port
from tests.engine.conftest import db_url  # noqa: F401  (the fixture: SQLite and PostgreSQL)


def test_no_key_in_plaintext_in_the_database(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    env = base_env(tmp_path / "data", CONVEYOR_DATABASE_URL=db_url)
    made = [make_key(env, tenant, *scopes) for tenant, scopes in
            (("acme", ("admin",)), ("acme", ("jobs:read",)), ("other", ("jobs:write",)))]
    if db_url.startswith("sqlite"):
        raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("conveyor.db*"))
    else:
        with psycopg.connect(db_url) as conn:
            raw = repr(conn.execute("SELECT * FROM api_keys").fetchall()).encode()
    assert raw, "nothing read"
    for key in made:
        # The secret is all that follows the prefix: token_urlsafe may put "_" inside it (a
        # split on the last "_" once gave a 2-character "secret" that the file's bytes held).
        secret = key.key.removeprefix(key.prefix + "_")
        assert len(secret) == 43
        assert key.key.encode() not in raw and secret.encode() not in raw
        assert key.prefix.encode() in raw  # the prefix is stored, to name the key
    listed = cli(env, "keys", "list").stdout
    assert all(k.prefix in listed and k.key not in listed for k in made)


def test_revocation_reaches_a_second_server_within_a_second(
        server_factory: Callable[..., Server], tmp_path: Path) -> None:
    data = tmp_path / "shared"
    admin = make_key(base_env(data), "a", "admin")
    user = make_key(base_env(data), "a", "jobs:read")
    first = server_factory(data_dir=data, CONVEYOR_WORKERS="0")
    second = server_factory(data_dir=data, CONVEYOR_WORKERS="0")
    for srv in (first, second):  # both have it cached now
        assert httpx.get(f"{srv.url}/v1/jobs", headers=user.headers).status_code == 200
    revoked = httpx.delete(f"{first.url}/v1/keys/{user.id}", headers=admin.headers)
    assert revoked.status_code == 204
    at = time.monotonic()
    assert httpx.get(f"{first.url}/v1/jobs", headers=user.headers).status_code == 401
    while httpx.get(f"{second.url}/v1/jobs", headers=user.headers).status_code == 200:
        assert time.monotonic() - at < 5, "the second server still takes the revoked key"
        time.sleep(0.02)
    # The bound is the cache's 0.5 s; a second is the contract (and the slack of a busy box).
    assert time.monotonic() - at <= 1.0 + 0.5
    listed = httpx.get(f"{second.url}/v1/keys", headers=admin.headers).json()
    assert [k["revoked_at"] is not None for k in listed if k["id"] == user.id] == [True]


def test_open_on_loopback_until_a_key_exists(server: Server) -> None:
    me = httpx.get(f"{server.url}/v1/whoami").json()
    assert me == {"tenant": "default", "scopes": ["admin", "jobs:read", "jobs:write"],
                  "key_prefix": None, "open": True}
    assert httpx.get(f"{server.url}/v1/jobs").status_code == 200
    key = make_key(server.env, "default", "jobs:read")
    deadline = time.monotonic() + 5
    while httpx.get(f"{server.url}/v1/jobs").status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/v1/jobs").status_code == 401
    assert httpx.get(f"{server.url}/v1/jobs", headers=key.headers).status_code == 200
    # Liveness, readiness and the docs stay open.
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/"):
        assert httpx.get(server.url + path).status_code == 200, path


def _serve(env: dict[str, str], host: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conveyor", "serve", "--host", host,
                           "--port", str(free_port()), "--no-workers"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_refuses_a_network_address_without_a_key(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    done = _serve(env, "0.0.0.0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: refusing to serve on 0.0.0.0 with no API key"), lines
    assert "CONVEYOR_AUTH=none" in lines[-1]


def test_network_address_with_a_key_needs_it(server_factory: Callable[..., Server],
                                             tmp_path: Path) -> None:
    data = tmp_path / "net"
    key = make_key(base_env(data), "a", "jobs:read")
    srv = server_factory("--host", "0.0.0.0", data_dir=data)
    assert httpx.get(f"{srv.url}/v1/jobs").status_code == 401
    assert httpx.get(f"{srv.url}/v1/jobs", headers=key.headers).status_code == 200


def test_auth_none_is_open_on_any_address(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("--host", "0.0.0.0", CONVEYOR_AUTH="none")
    assert httpx.get(f"{srv.url}/v1/jobs").status_code == 200
    assert httpx.get(f"{srv.url}/v1/whoami").json()["open"] is True


def test_auth_keys_needs_a_key_even_on_loopback(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(CONVEYOR_AUTH="keys")
    resp = httpx.get(f"{srv.url}/v1/jobs")
    assert resp.status_code == 401 and resp.json()["code"] == "unauthorized"


@pytest.mark.parametrize("header", [
    "Bearer", "cvk_abc", "Bearer cvk_abc", "Bearer cvk_abcdefgh_short",
    "Basic dXNlcjpwYXNz", "Token cvk_x", "Bearer " + "x" * 10_240,
    "Bearer cvk_abcdefgh_" + "A" * 43, "bearer\tcvk_x", "Bearer a b c",
])
def test_bad_authorization_is_401(keyed: Keyed, header: str) -> None:
    resp = httpx.get(f"{keyed.url}/v1/jobs", headers={"Authorization": header})
    assert resp.status_code == 401, resp.text
    assert resp.json()["code"] == "unauthorized"
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_a_key_with_one_character_changed_is_401(keyed: Keyed) -> None:
    key = keyed.keys["rw"].key
    twisted = key[:-1] + ("A" if key[-1] != "A" else "B")
    resp = httpx.get(f"{keyed.url}/v1/jobs", headers={"Authorization": f"Bearer {twisted}"})
    assert resp.status_code == 401


def test_a_deleted_tenants_keys_are_401(keyed: Keyed) -> None:
    key = make_key(keyed.srv.env, "doomed", "jobs:read")
    assert httpx.get(f"{keyed.url}/v1/jobs", headers=key.headers).status_code == 200
    gone = httpx.delete(f"{keyed.url}/v1/tenants/doomed", headers=keyed.h("admin"))
    assert gone.status_code == 204
    deadline = time.monotonic() + 5
    while httpx.get(f"{keyed.url}/v1/jobs", headers=key.headers).status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    resp = httpx.get(f"{keyed.url}/v1/jobs", headers=key.headers)
    assert resp.status_code == 401 and resp.json()["code"] == "unauthorized"
    # Its id is not reused, and no key can be made for it.
    again = httpx.post(f"{keyed.url}/v1/keys", headers=keyed.h("admin"),
                       json={"tenant": "doomed", "scopes": ["jobs:read"]})
    assert again.status_code == 409 and again.json()["code"] == "conflict"


def test_log_lines_carry_the_prefix_never_the_key(keyed: Keyed) -> None:
    key = keyed.keys["read"]
    assert httpx.get(f"{keyed.url}/v1/pipelines", headers=key.headers).status_code == 200
    time.sleep(0.3)
    log = keyed.srv.log_path.read_text() if keyed.srv.log_path else ""
    assert key.key not in log
    assert key.key.removeprefix(key.prefix + "_") not in log  # the secret part


def test_admin_key_routes(keyed: Keyed) -> None:
    made = httpx.post(f"{keyed.url}/v1/keys", headers=keyed.h("admin"),
                      json={"tenant": "c", "scopes": ["jobs:read"], "name": "ci"})
    assert made.status_code == 201
    body = made.json()
    assert body["key"].startswith(body["prefix"] + "_") and body["tenant"] == "c"
    listed = httpx.get(f"{keyed.url}/v1/keys", headers=keyed.h("admin")).json()
    assert body["id"] in {k["id"] for k in listed}
    assert all("key" not in k for k in listed)
    assert body["key"] not in str(listed)
    bad = httpx.post(f"{keyed.url}/v1/keys", headers=keyed.h("admin"),
                     json={"tenant": "c", "scopes": ["root"]})
    assert bad.status_code == 422 and bad.json()["code"] == "bad_parameter"
    bad = httpx.post(f"{keyed.url}/v1/keys", headers=keyed.h("admin"),
                     json={"tenant": "Not A Tenant!", "scopes": ["jobs:read"]})
    assert bad.status_code == 422
    missing = httpx.delete(f"{keyed.url}/v1/keys/01NOPE", headers=keyed.h("admin"))
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_a_key_records_when_it_was_last_used(keyed: Keyed) -> None:
    made = httpx.post(f"{keyed.url}/v1/keys", headers=keyed.h("admin"),
                      json={"tenant": "a", "scopes": ["jobs:read"], "name": "probe"}).json()

    def listed() -> dict[str, object]:
        found = httpx.get(f"{keyed.url}/v1/keys", headers=keyed.h("admin")).json()
        return next(k for k in found if k["id"] == made["id"])

    assert made["last_used_at"] is None and listed()["last_used_at"] is None
    before = time.time()
    resp = httpx.get(f"{keyed.url}/v1/jobs",
                     headers={"Authorization": f"Bearer {made['key']}"})
    assert resp.status_code == 200, resp.text
    used = listed()["last_used_at"]
    assert isinstance(used, str)
    assert datetime.fromisoformat(used).timestamp() >= int(before)
    # The admin key that listed them was used too; a failed attempt is not a use.
    bad = httpx.get(f"{keyed.url}/v1/jobs",
                    headers={"Authorization": f"Bearer {keyed.keys['revoked'].key}"})
    assert bad.status_code == 401
    revoked = next(k for k in httpx.get(f"{keyed.url}/v1/keys", headers=keyed.h("admin")).json()
                   if k["id"] == keyed.keys["revoked"].id)
    assert revoked["last_used_at"] is None

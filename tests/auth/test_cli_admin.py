"""``conveyor keys ...`` and ``conveyor tenants ...`` on the database directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.auth.conftest import cli, make_key
from tests.conftest import base_env


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    key = make_key(env, "acme", "jobs:read", name="reader")
    listed = json.loads(cli(env, "keys", "list", "--json").stdout)
    assert [(k["prefix"], k["tenant"], k["scopes"], k["revoked"]) for k in listed] == [
        (key.prefix, "acme", ["jobs:read"], False)]
    assert key.key not in json.dumps(listed)
    cli(env, "keys", "revoke", key.id)
    assert json.loads(cli(env, "keys", "list", "--json").stdout)[0]["revoked"] is True
    missing = cli(env, "keys", "revoke", "01NOPE", check=False)
    assert missing.returncode == 1 and "no API key" in missing.stderr
    bad = cli(env, "keys", "create", "--scope", "root", check=False)
    assert bad.returncode == 2 and "unknown scope" in bad.stderr


def test_tenants_create_list_show_set_quota(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    cli(env, "tenants", "create", "acme")
    again = cli(env, "tenants", "create", "acme", check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    cli(env, "tenants", "set-quota", "acme", "--max-queued", "5", "--requests-per-s", "2.5",
        "--bytes-per-day", "1000000")
    shown = json.loads(cli(env, "tenants", "show", "acme", "--json").stdout)
    assert shown["quotas"] == {"max_queued": 5, "max_running": None, "max_upload_bytes": None,
                               "bytes_per_day": 1000000, "storage_bytes": None,
                               "requests_per_s": 2.5}
    cli(env, "tenants", "set-quota", "acme", "--max-queued", "none")
    shown = json.loads(cli(env, "tenants", "show", "acme", "--json").stdout)
    assert shown["quotas"]["max_queued"] is None and shown["quotas"]["bytes_per_day"] == 1000000
    ids = [t["id"] for t in json.loads(cli(env, "tenants", "list", "--json").stdout)]
    assert ids == ["acme", "default"]
    bad = cli(env, "tenants", "set-quota", "acme", "--max-queued", "lots", check=False)
    assert bad.returncode == 2
    unknown = cli(env, "tenants", "set-quota", "nobody", "--max-queued", "1", check=False)
    assert unknown.returncode == 1 and "no tenant" in unknown.stderr


@pytest.mark.parametrize("command", [
    ["keys"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["tenants"],
    ["tenants", "create"], ["tenants", "list"], ["tenants", "show"], ["tenants", "set-quota"],
])
def test_every_command_has_help(tmp_path: Path, command: list[str]) -> None:
    done = cli(base_env(tmp_path / "data"), *command, "--help")
    assert "Usage" in done.stdout

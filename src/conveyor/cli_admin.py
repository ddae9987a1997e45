"""``conveyor keys ...`` and ``conveyor tenants ...``: work directly on the database (like
``conveyor migrate``), so the first admin key can be made on the server's own machine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer

from conveyor.errors import ConveyorError

keys_app = typer.Typer(help="API keys: create (shown once), list (prefixes), revoke.",
                       no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants: create, list, show, set-quota.", no_args_is_help=True)

_JSON = typer.Option("--json", help="Print JSON instead of text.")


@contextmanager
def _store() -> Iterator[object]:
    from conveyor.cli import _settings
    from conveyor.store import Store

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_url, run_dir=settings.run_dir)
    try:
        store.migrate()
        yield store
    except (ConveyorError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds") if at else "-"


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The key's tenant (made if new).")] = "default",
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="jobs:read, jobs:write or admin (repeat; default: jobs:read and "
                        "jobs:write).")] = None,
    name: Annotated[str, typer.Option(help="A note on what the key is for.")] = "",
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Make an API key and print it. It is shown this once: only its hash is stored."""
    from conveyor.auth import parse_scopes
    from conveyor.store import Store

    try:
        scopes = parse_scopes(scope or ["jobs:read", "jobs:write"])
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with _store() as store:
        assert isinstance(store, Store)
        store.tenants.ensure(tenant)
        key, secret = store.keys.create(tenant, scopes, name)
    if as_json:
        typer.echo(json.dumps({"id": key.id, "tenant": tenant, "prefix": key.prefix,
                               "scopes": sorted(scopes), "key": secret}))
        return
    typer.echo(secret)
    typer.echo(f"key {key.id} ({key.prefix}) of tenant {tenant}, scopes "
               f"{' '.join(sorted(scopes))}: store it now, it is not shown again", err=True)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List API keys: id, prefix, tenant, scopes, state (never the keys themselves)."""
    from conveyor.store import Store

    with _store() as store:
        assert isinstance(store, Store)
        found = store.keys.list(tenant)
    if as_json:
        typer.echo(json.dumps([{"id": k.id, "tenant": k.tenant_id, "prefix": k.prefix,
                                "name": k.name, "scopes": sorted(k.scopes),
                                "revoked": k.revoked_at is not None,
                                "last_used_at": k.last_used_at} for k in found]))
        return
    for k in found:
        state = f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active"
        if k.last_used_at:
            state += f", last used {_when(k.last_used_at)}"
        typer.echo(f"{k.id}  {k.prefix}  {k.tenant_id}  {','.join(sorted(k.scopes))}  "
                   f"{state}  {k.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `keys list`).")]
                ) -> None:
    """Revoke an API key: refused by every server within a second."""
    with _store() as store:
        store.keys.revoke(key_id)  # type: ignore[attr-defined]
    typer.echo(f"revoked {key_id}")


@tenants_app.command("create")
def tenants_create(tenant_id: Annotated[str, typer.Argument(help="a-z 0-9 _ -")]) -> None:
    """Make a tenant (no quota: no limit)."""
    with _store() as store:
        store.tenants.create(tenant_id)  # type: ignore[attr-defined]
    typer.echo(f"created tenant {tenant_id}")


@tenants_app.command("list")
def tenants_list(as_json: Annotated[bool, _JSON] = False) -> None:
    """List tenants and their quotas."""
    from conveyor.store import Store

    with _store() as store:
        assert isinstance(store, Store)
        found = store.tenants.list()
    if as_json:
        typer.echo(json.dumps([{"id": t.id, "quotas": t.quotas} for t in found]))
        return
    for t in found:
        quotas = " ".join(f"{k}={v}" for k, v in t.quotas.items() if v is not None)
        typer.echo(f"{t.id}  {quotas or 'no quotas'}")


@tenants_app.command("show")
def tenants_show(tenant_id: str, as_json: Annotated[bool, _JSON] = False) -> None:
    """Show a tenant: quotas, webhook secret in use, keys."""
    from conveyor.store import Store

    with _store() as store:
        assert isinstance(store, Store)
        t = store.tenants.get(tenant_id)
        found = store.keys.list(tenant_id)
    data = {"id": t.id, "created_at": _when(t.created_at), "quotas": t.quotas,
            "webhook_secret": "own" if t.own_webhook_secret else "server",
            "keys": [k.prefix for k in found if k.revoked_at is None]}
    if as_json:
        typer.echo(json.dumps(data))
        return
    for name, value in data.items():
        typer.echo(f"{name}: {value}")


def _quota(value: str) -> int | float | None:
    if value.strip().lower() == "none":
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


@tenants_app.command("set-quota")
def tenants_set_quota(
    tenant_id: str,
    max_queued: Annotated[str | None, typer.Option(help="Queued jobs at most (`none`: no "
                                                       "limit).")] = None,
    max_running: Annotated[str | None, typer.Option(help="Running jobs at most.")] = None,
    max_upload_bytes: Annotated[str | None, typer.Option(help="Bytes of one upload.")] = None,
    bytes_per_day: Annotated[str | None, typer.Option(help="Bytes uploaded per UTC day.")] = None,
    storage_bytes: Annotated[str | None, typer.Option(help="Bytes stored (inputs and "
                                                          "artifacts).")] = None,
    requests_per_s: Annotated[str | None, typer.Option(help="Requests per second.")] = None,
) -> None:
    """Set some of a tenant's six quotas (`none` clears one); the others are kept. Takes
    effect within a second on every server, without a restart."""
    given = {"max_queued": max_queued, "max_running": max_running,
             "max_upload_bytes": max_upload_bytes, "bytes_per_day": bytes_per_day,
             "storage_bytes": storage_bytes, "requests_per_s": requests_per_s}
    try:
        values = {k: _quota(v) for k, v in given.items() if v is not None}
    except ValueError:
        typer.echo("error: a quota is a number, or `none`", err=True)
        raise typer.Exit(2) from None
    with _store() as store:
        t = store.tenants.set_quotas(tenant_id, values)  # type: ignore[attr-defined]
    typer.echo(" ".join(f"{k}={v}" for k, v in t.quotas.items()))


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(tenants_app, name="tenants")

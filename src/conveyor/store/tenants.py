"""Tenants (quotas, webhook secrets) and their API keys.

Only a hash of a key is stored (see :mod:`conveyor.auth.keys`); the prefix names it in lists
and logs. A deleted tenant keeps its row (``deleted_at``): its keys stop working and its id is
not reused.
"""

from __future__ import annotations

import builtins
import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from ulid import ULID

from conveyor.auth.keys import KeyLookup, generate
from conveyor.errors import TenantConflict, TenantNotFound
from conveyor.store.database import Database
from conveyor.store.tables import DEFAULT_TENANT, api_keys, jobs, tenants
from conveyor.webhooks.signing import generate_secret

#: The quota columns, in the order the CLI and the API list them (NULL: no limit).
QUOTAS = ("max_queued", "max_running", "max_upload_bytes", "bytes_per_day", "storage_bytes",
          "requests_per_s")
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID.match(tenant_id):
        raise ValueError(f"tenant ids are 1-63 of a-z 0-9 _ - (starting with a letter or "
                         f"digit): {tenant_id!r}")
    return tenant_id


@dataclass(slots=True)
class Tenant:
    id: str
    created_at: float
    deleted_at: float | None
    quotas: dict[str, int | float | None]
    #: Whether the tenant signs webhooks with its own secret (else the server-wide one).
    own_webhook_secret: bool
    rotating_until: float | None

    @classmethod
    def from_row(cls, row: Any) -> Tenant:
        m = row._mapping
        until = m["webhook_secret_previous_until"]
        return cls(m["id"], m["created_at"], m["deleted_at"], {q: m[q] for q in QUOTAS},
                   m["webhook_secret"] is not None,
                   until if until is not None and until > time.time() else None)


@dataclass(slots=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None
    #: When the key last authenticated a request (to within :data:`~conveyor.auth.
    #: authenticator.TOUCH_EVERY_S`), or None.
    last_used_at: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        m = row._mapping
        return cls(m["id"], m["tenant_id"], m["name"], m["prefix"],
                   frozenset(m["scopes"].split()), m["created_at"], m["revoked_at"],
                   m.get("last_used_at"))


class Tenants:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, tenant_id: str) -> Tenant:
        check_tenant_id(tenant_id)
        try:
            with self.db.tx() as tx:
                tx.execute(insert(tenants).values(id=tenant_id, created_at=time.time()))
        except IntegrityError:
            raise TenantConflict(f"tenant {tenant_id!r} exists already") from None
        return self.get(tenant_id)

    def ensure(self, tenant_id: str) -> Tenant:
        """The tenant, created if new; a deleted tenant is refused."""
        found = self.find(tenant_id)
        if found is None:
            try:
                return self.create(tenant_id)
            except TenantConflict:
                found = self.find(tenant_id)  # made meanwhile
                assert found is not None
        if found.deleted_at is not None:
            raise TenantConflict(f"tenant {tenant_id!r} was deleted")
        return found

    def find(self, tenant_id: str) -> Tenant | None:
        with self.db.reader.connect() as conn:
            row = conn.execute(select(tenants).where(tenants.c.id == tenant_id)).first()
        return Tenant.from_row(row) if row is not None else None

    def get(self, tenant_id: str) -> Tenant:
        """A tenant that is not deleted, else :class:`TenantNotFound`."""
        found = self.find(tenant_id)
        if found is None or found.deleted_at is not None:
            raise TenantNotFound(f"no tenant {tenant_id}")
        return found

    def list(self) -> builtins.list[Tenant]:
        with self.db.reader.connect() as conn:
            rows = conn.execute(select(tenants).where(tenants.c.deleted_at.is_(None))
                                .order_by(tenants.c.id))
            return [Tenant.from_row(r) for r in rows]

    def delete(self, tenant_id: str) -> None:
        if tenant_id == DEFAULT_TENANT:
            raise TenantConflict("the default tenant cannot be deleted")
        with self.db.tx() as tx:
            done = tx.execute(update(tenants).where(tenants.c.id == tenant_id,
                                                    tenants.c.deleted_at.is_(None))
                              .values(deleted_at=time.time())).rowcount
        if not done:
            raise TenantNotFound(f"no tenant {tenant_id}")

    def set_quotas(self, tenant_id: str, values: dict[str, int | float | None]) -> Tenant:
        """Set some quota columns (None clears one: no limit). Takes effect at once."""
        unknown = set(values) - set(QUOTAS)
        if unknown:
            raise ValueError(f"unknown quota(s): {', '.join(sorted(unknown))}")
        for name, value in values.items():
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 or more")
        if values:
            with self.db.tx() as tx:
                done = tx.execute(update(tenants).where(tenants.c.id == tenant_id,
                                                        tenants.c.deleted_at.is_(None))
                                  .values(**values)).rowcount
            if not done:
                raise TenantNotFound(f"no tenant {tenant_id}")
        return self.get(tenant_id)

    def rotate_webhook_secret(self, tenant_id: str, overlap_s: float,
                              server_secret: str | None = None) -> str:
        """A new secret signs from now; the previous one (the tenant's, else ``server_secret``,
        the server-wide one it was signed with) signs too for ``overlap_s`` more."""
        secret = generate_secret()
        now = time.time()
        with self.db.tx() as tx:
            row = tx.execute(select(tenants.c.webhook_secret).where(
                tenants.c.id == tenant_id, tenants.c.deleted_at.is_(None))).first()
            if row is None:
                raise TenantNotFound(f"no tenant {tenant_id}")
            previous = row[0] or server_secret
            tx.execute(update(tenants).where(tenants.c.id == tenant_id).values(
                webhook_secret=secret, webhook_secret_previous=previous,
                webhook_secret_previous_until=now + overlap_s if previous else None))
        return secret

    def secrets_for_job(self, job_id: str, now: float | None = None) -> builtins.list[str]:
        """The secrets the job's webhooks are signed with now: its tenant's, the previous one
        too during a rotation; none: the server-wide secret."""
        now = time.time() if now is None else now
        stmt = (select(tenants.c.webhook_secret, tenants.c.webhook_secret_previous,
                       tenants.c.webhook_secret_previous_until)
                .select_from(jobs.join(tenants, tenants.c.id == jobs.c.tenant_id))
                .where(jobs.c.id == job_id))
        with self.db.reader.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None or row[0] is None:
            return []
        found = [row[0]]
        if row[1] and row[2] is not None and row[2] > now:
            found.append(row[1])
        return found


class Keys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, tenant_id: str, scopes: frozenset[str], name: str = "") -> tuple[ApiKey, str]:
        """Store a new key of ``tenant_id``; returns it and the key itself (shown once)."""
        made = generate()
        values = {"id": str(ULID()), "tenant_id": tenant_id, "name": name[:200],
                  "prefix": made.prefix, "hash": made.hash, "scopes": " ".join(sorted(scopes)),
                  "created_at": time.time()}
        with self.db.tx() as tx:
            tx.execute(insert(api_keys).values(**values))
        return ApiKey.from_row(_Row(values | {"revoked_at": None})), made.key

    def list(self, tenant_id: str | None = None) -> builtins.list[ApiKey]:
        stmt = select(api_keys).order_by(api_keys.c.id)
        if tenant_id is not None:
            stmt = stmt.where(api_keys.c.tenant_id == tenant_id)
        with self.db.reader.connect() as conn:
            return [ApiKey.from_row(r) for r in conn.execute(stmt)]

    def get(self, key_id: str) -> ApiKey:
        with self.db.reader.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise TenantNotFound(f"no API key {key_id}")
        return ApiKey.from_row(row)

    def revoke(self, key_id: str) -> None:
        """Revoke a key (at once on this process; within a second on every other)."""
        with self.db.tx() as tx:
            found = tx.execute(select(api_keys.c.revoked_at).where(api_keys.c.id == key_id)).first()
            if found is None:
                raise TenantNotFound(f"no API key {key_id}")
            if found[0] is None:
                tx.execute(update(api_keys).where(api_keys.c.id == key_id)
                           .values(revoked_at=time.time()))

    def lookup(self, prefix: str) -> KeyLookup | None:
        stmt = (select(api_keys.c.id, api_keys.c.tenant_id, api_keys.c.hash, api_keys.c.scopes,
                       api_keys.c.revoked_at, tenants.c.deleted_at)
                .select_from(api_keys.outerjoin(tenants, tenants.c.id == api_keys.c.tenant_id))
                .where(api_keys.c.prefix == prefix))
        with self.db.reader.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        return KeyLookup(row[0], row[1], row[2], frozenset(row[3].split()),
                         row[4] is None and row[5] is None)

    def touch(self, key_id: str, at: float) -> None:
        """Record that the key authenticated a request at ``at``."""
        with self.db.tx() as tx:
            tx.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))

    def any_exist(self) -> bool:
        """Whether a key was ever made (revoked ones count: revoking them all never reopens a
        server that runs in ``auto`` mode)."""
        with self.db.reader.connect() as conn:
            return bool(conn.execute(select(func.count()).select_from(api_keys)).scalar())


class _Row:
    """A dict posing as a row (``._mapping``) for the ``from_row`` constructors."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping

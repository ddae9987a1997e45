"""Who is calling: the tenant, the scopes and the key (if any) of a request."""

from __future__ import annotations

from dataclasses import dataclass

READ = "jobs:read"
WRITE = "jobs:write"
ADMIN = "admin"
#: Every scope a key can have; ``admin`` implies the others.
SCOPES = (READ, WRITE, ADMIN)
ALL_SCOPES = frozenset(SCOPES)


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: str
    scopes: frozenset[str]
    key_id: str | None = None
    key_prefix: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def admin(self) -> bool:
        return ADMIN in self.scopes

    def sees(self, tenant_id: str) -> bool:
        """Whether this caller may see a job of ``tenant_id`` (admins see every tenant's)."""
        return self.admin or tenant_id == self.tenant_id


def parse_scopes(value: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """Scopes from a space/comma-separated string or a list; ValueError for an unknown one."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    unknown = sorted(set(items) - ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)} (use {', '.join(SCOPES)})")
    if not items:
        raise ValueError(f"at least one scope is needed ({', '.join(SCOPES)})")
    return frozenset(items)

"""Who is calling: the tenant, the scopes and the key (if any) of a request."""

from __future__ import annotations

from dataclasses import dataclass

READ = "jobs:read"
WRITE = "jobs:write"
ADMIN = "admin"
#: Every scope a key can have; ``admin`` implies the others.
SCOPES = (READ, WRITE, ADMIN)
ALL_SCOPES = frozenset(SCOPES)
#: ``?tenant=*``: every tenant (admin keys only).
EVERY_TENANT = "*"
#: The ``tenant`` query parameter's description in the API document.
TENANT_DOC = ("admin keys only: this tenant's jobs, or `*` for every tenant's "
              "(default: the caller's own tenant)")


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

    def tenant_filter(self, tenant: str | None) -> str | None:
        """The tenant a list or stream shows for a ``?tenant=`` parameter: the caller's own by
        default; another one, or every one (``*``: None), for admin keys only (else raises
        :class:`~conveyor.errors.Forbidden`)."""
        if tenant is None or tenant == self.tenant_id:
            return self.tenant_id
        if not self.admin:
            from conveyor.errors import Forbidden

            raise Forbidden("only an admin key may see another tenant's jobs")
        return None if tenant == EVERY_TENANT else tenant


def parse_scopes(value: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """Scopes from a space/comma-separated string or a list; ValueError for an unknown one."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    unknown = sorted(set(items) - ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)} (use {', '.join(SCOPES)})")
    if not items:
        raise ValueError(f"at least one scope is needed ({', '.join(SCOPES)})")
    return frozenset(items)

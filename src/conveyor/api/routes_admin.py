"""Admin routes (scope ``admin``): API keys and tenants; and ``GET /v1/whoami`` (any key)."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from conveyor.api.services import Services, services
from conveyor.api.views import iso
from conveyor.auth import SCOPES, AnyCaller, IsAdmin, parse_scopes
from conveyor.auth.deps import authenticator
from conveyor.errors import BadParameter
from conveyor.problems import problem_schema
from conveyor.store.tenants import TENANT_ID, ApiKey, Tenant
from conveyor.webhooks.outbox import load_secret

router = APIRouter(prefix="/v1", tags=["admin"])
Svc = Annotated[Services, Depends(services)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: problem_schema() for s in (400, 401, 403, 404, 409, 422)}
#: JSON bodies are taken as they are: no "1" for 1, no false for 0.
_STRICT = ConfigDict(strict=True)
_TENANT_PATTERN = TENANT_ID.pattern


class KeyIn(BaseModel):
    model_config = _STRICT

    tenant: str = Field(default="default", pattern=_TENANT_PATTERN,
                        description="the key's tenant (made if new)")
    scopes: list[str] = Field(min_length=1, max_length=3, description=" ".join(SCOPES))
    name: str = Field(default="", max_length=200)


class KeyOut(BaseModel):
    id: str
    tenant: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: str
    revoked_at: str | None
    last_used_at: str | None = Field(
        default=None, description="when the key last authenticated a request (to the minute)")


class NewKeyOut(KeyOut):
    key: str = Field(description="the API key itself: shown this once, never stored")


class TenantIn(BaseModel):
    model_config = _STRICT

    id: str = Field(pattern=_TENANT_PATTERN)


def _number(value: Any) -> Any:
    """A JSON number or null (``7.0`` is the integer 7; ``false`` and ``"7"`` are refused)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise PydanticCustomError("number", "a number, or null")
    return value


_Count = Annotated[Annotated[int, Field(ge=0, le=2**31 - 1)] | None, BeforeValidator(_number)]
_Bytes = Annotated[Annotated[int, Field(ge=0, le=2**53)] | None, BeforeValidator(_number)]
_Rate = Annotated[Annotated[float, Field(ge=0, le=1e9)] | None, BeforeValidator(_number)]


class QuotasIn(BaseModel):
    """Quotas to set; a field sent as null clears that quota (no limit), one left out is kept."""

    max_queued: _Count = None
    max_running: _Count = None
    max_upload_bytes: _Bytes = None
    bytes_per_day: _Bytes = None
    storage_bytes: _Bytes = None
    requests_per_s: _Rate = None


class TenantOut(BaseModel):
    id: str
    created_at: str
    quotas: dict[str, int | float | None]
    webhook_secret: str = Field(description="`own` or `server` (the server-wide secret)")
    webhook_rotation_until: str | None


class SecretOut(BaseModel):
    webhook_secret: str = Field(description="the tenant's new `whsec_` secret, shown once")
    previous_valid_until: str | None


class WhoAmI(BaseModel):
    tenant: str
    scopes: list[str]
    key_prefix: str | None
    open: bool = Field(description="the server runs without keys (loopback, or "
                                   "CONVEYOR_AUTH=none)")


def key_view(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "tenant": key.tenant_id, "name": key.name, "prefix": key.prefix,
            "scopes": sorted(key.scopes), "created_at": iso(key.created_at),
            "revoked_at": iso(key.revoked_at) if key.revoked_at else None,
            "last_used_at": iso(key.last_used_at) if key.last_used_at else None}


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "created_at": iso(tenant.created_at), "quotas": tenant.quotas,
            "webhook_secret": "own" if tenant.own_webhook_secret else "server",
            "webhook_rotation_until": iso(tenant.rotating_until) if tenant.rotating_until
            else None}


@router.get("/whoami", response_model=WhoAmI, responses=_ERRORS,
            summary="The caller: tenant, scopes, key prefix")
async def whoami(request: Request, caller: AnyCaller) -> dict[str, Any]:
    return {"tenant": caller.tenant_id, "scopes": sorted(caller.scopes),
            "key_prefix": caller.key_prefix, "open": caller.key_id is None}


@router.post("/keys", status_code=201, response_model=NewKeyOut, responses=_ERRORS,
             summary="Make an API key (shown once)")
async def create_key(body: KeyIn, svc: Svc, _caller: IsAdmin) -> dict[str, Any]:
    try:
        scopes = parse_scopes(body.scopes)
    except ValueError as exc:
        raise BadParameter(str(exc)) from None

    def make() -> tuple[ApiKey, str]:
        svc.store.tenants.ensure(body.tenant)
        return svc.store.keys.create(body.tenant, scopes, body.name)

    key, secret = await to_thread.run_sync(make)
    return {**key_view(key), "key": secret}


@router.get("/keys", response_model=list[KeyOut], responses=_ERRORS,
            summary="List API keys (prefixes, never the keys)")
async def list_keys(svc: Svc, _caller: IsAdmin) -> list[dict[str, Any]]:
    return [key_view(k) for k in await to_thread.run_sync(svc.store.keys.list)]


@router.delete("/keys/{key_id}", status_code=204, responses=_ERRORS,
               summary="Revoke an API key (on every server within a second)")
async def revoke_key(key_id: str, request: Request, svc: Svc, _caller: IsAdmin) -> Response:
    key = await to_thread.run_sync(svc.store.keys.get, key_id)
    await to_thread.run_sync(svc.store.keys.revoke, key_id)
    authenticator(request).forget(key.prefix)
    return Response(status_code=204)


@router.post("/tenants", status_code=201, response_model=TenantOut, responses=_ERRORS,
             summary="Make a tenant")
async def create_tenant(body: TenantIn, svc: Svc, _caller: IsAdmin) -> dict[str, Any]:
    return tenant_view(await to_thread.run_sync(svc.store.tenants.create, body.id))


@router.get("/tenants", response_model=list[TenantOut], responses=_ERRORS,
            summary="List tenants")
async def list_tenants(svc: Svc, _caller: IsAdmin) -> list[dict[str, Any]]:
    return [tenant_view(t) for t in await to_thread.run_sync(svc.store.tenants.list)]


@router.get("/tenants/{tenant_id}", response_model=TenantOut, responses=_ERRORS,
            summary="Show a tenant and its quotas")
async def get_tenant(tenant_id: str, svc: Svc, _caller: IsAdmin) -> dict[str, Any]:
    return tenant_view(await to_thread.run_sync(svc.store.tenants.get, tenant_id))


@router.patch("/tenants/{tenant_id}", response_model=TenantOut, responses=_ERRORS,
              summary="Set a tenant's quotas (null clears one)")
async def set_quotas(tenant_id: str, body: QuotasIn, svc: Svc,
                     _caller: IsAdmin) -> dict[str, Any]:
    values = body.model_dump(exclude_unset=True)
    return tenant_view(await to_thread.run_sync(svc.store.tenants.set_quotas, tenant_id, values))


@router.delete("/tenants/{tenant_id}", status_code=204, responses=_ERRORS,
               summary="Delete a tenant: its keys stop working")
async def delete_tenant(tenant_id: str, svc: Svc, _caller: IsAdmin) -> Response:
    await to_thread.run_sync(svc.store.tenants.delete, tenant_id)
    return Response(status_code=204)


@router.post("/tenants/{tenant_id}/webhook-secret/rotate", response_model=SecretOut,
             responses=_ERRORS, summary="Rotate a tenant's webhook secret")
async def rotate_secret(tenant_id: str, svc: Svc, _caller: IsAdmin) -> dict[str, Any]:
    overlap = svc.settings.webhook_secret_overlap.total_seconds()
    server_secret = await to_thread.run_sync(load_secret, svc.settings, svc.store)
    secret = await to_thread.run_sync(svc.store.tenants.rotate_webhook_secret, tenant_id,
                                      overlap, server_secret)
    tenant = await to_thread.run_sync(svc.store.tenants.get, tenant_id)
    until = tenant.rotating_until
    return {"webhook_secret": secret, "previous_valid_until": iso(until) if until else None}

"""``GET /v1/tenant``: the caller's tenant, its quotas and what it uses now."""

from __future__ import annotations

import time
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from conveyor.api.services import Services, services
from conveyor.auth import CanRead
from conveyor.quotas.policy import seconds_to_midnight, utc_day

router = APIRouter(prefix="/v1", tags=["tenant"])


class TenantQuotasOut(BaseModel):
    """The tenant's quotas; null is no limit."""

    max_queued: int | None = Field(description="most jobs queued at once")
    max_running: int | None = Field(description="most jobs running at once")
    max_upload_bytes: int | None = Field(description="largest upload (413 above)")
    bytes_per_day: int | None = Field(description="bytes uploaded per UTC day")
    storage_bytes: int | None = Field(
        description="bytes stored: inputs and artifacts of jobs not deleted")
    requests_per_s: float | None = Field(description="requests per second")


class UsageOut(BaseModel):
    queued: int = Field(description="jobs queued now")
    running: int = Field(description="jobs running now")
    bytes_today: int = Field(description="bytes uploaded this UTC day")
    day: str = Field(description="the UTC day `bytes_today` counts (YYYY-MM-DD)")
    day_resets_in_s: int = Field(description="seconds until the next UTC day")
    storage_bytes: int = Field(description="bytes stored now")


class TenantUsageOut(BaseModel):
    id: str
    quotas: TenantQuotasOut
    usage: UsageOut


@router.get("/tenant", response_model=TenantUsageOut,
            summary="The caller's tenant: its quotas and current usage")
async def get_tenant(svc: Annotated[Services, Depends(services)],
                     caller: CanRead) -> TenantUsageOut:
    tenant = caller.tenant_id
    quotas = await to_thread.run_sync(svc.store.quotas.quotas, tenant)
    usage = await to_thread.run_sync(svc.store.quotas.usage, tenant)
    now = time.time()
    return TenantUsageOut(
        id=tenant,
        quotas=TenantQuotasOut(max_queued=quotas.max_queued, max_running=quotas.max_running,
                         max_upload_bytes=quotas.max_upload_bytes,
                         bytes_per_day=quotas.bytes_per_day,
                         storage_bytes=quotas.storage_bytes,
                         requests_per_s=quotas.requests_per_s),
        usage=UsageOut(queued=usage.queued, running=usage.running,
                       bytes_today=usage.bytes_today, day=utc_day(now),
                       day_resets_in_s=seconds_to_midnight(now),
                       storage_bytes=usage.storage_bytes),
    )

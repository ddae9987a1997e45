"""Free space: what ``/readyz`` reports and what an upload needs before a byte is read.

The floor (``CONVEYOR_MIN_FREE_BYTES``) keeps room for what must still be written when the
disk is nearly full: job rows, events, the failures of running jobs, the retention sweep.
A full disk met anyway, mid-write, raises :class:`InsufficientStorage` where it happens.
"""

from __future__ import annotations

from conveyor.api.services import Services
from conveyor.errors import InsufficientStorage
from conveyor.storage.base import Immediate
from conveyor.telemetry import metrics


async def free_space(svc: Services) -> dict[str, int]:
    """Free bytes on the storage's disk and on the database's (where each is known).

    Local disks are asked directly: a ``statvfs`` takes microseconds, and the two thread hops
    it used to cost were a tenth of an upload's time on the event loop.
    """
    found: dict[str, int] = {}
    if isinstance(svc.storage, Immediate):
        storage = svc.storage.free_bytes_now()
    else:
        storage = await svc.storage.free_bytes()
    if storage is not None:
        found["storage"] = storage
    database = svc.store.free_bytes()  # a SQLite file's disk (statvfs), or None
    if database is not None:
        found["database"] = database
    return found


def short_of_room(free: dict[str, int], floor: int, length: int = 0) -> str | None:
    """Why a write of ``length`` bytes must be refused, or None (pure).

    The storage must keep ``floor`` bytes free after taking ``length``; the database, whose
    share of an upload is a few rows, must have ``floor`` free.
    """
    storage = free.get("storage")
    if storage is not None and storage - length < floor:
        need = f" for {length} bytes" if length else ""
        return (f"the storage disk has {storage} bytes free: not enough{need} above the "
                f"floor of {floor} (CONVEYOR_MIN_FREE_BYTES)")
    database = free.get("database")
    if database is not None and database < floor:
        return (f"the database disk has {database} bytes free, below the floor of {floor} "
                "(CONVEYOR_MIN_FREE_BYTES)")
    return None


async def check_room(svc: Services, length: int = 0) -> None:
    """Raise :class:`InsufficientStorage` when an upload of ``length`` bytes cannot fit."""
    why = short_of_room(await free_space(svc), svc.settings.min_free_bytes, length)
    if why is not None:
        metrics.UPLOADS_REFUSED_NO_ROOM.inc()
        raise InsufficientStorage(why)

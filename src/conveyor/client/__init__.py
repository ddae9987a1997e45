"""The Python client of the conveyor HTTP API (``/v1``).

Shaped like httpx: :class:`BaseClient` (``_core.py``) holds everything that does no I/O
(request building, response and error handling, the SSE parser, the ``wait()`` policy);
:class:`Client` (``_sync.py``) and :class:`AsyncClient` (``_async.py``) add only the I/O, over
``httpx.Client`` and ``httpx.AsyncClient``::

    with Client("http://127.0.0.1:8000", api_key="cvk_...") as conveyor:
        job = conveyor.submit("cat.jpg", pipeline="image", options={"sizes": [256]})
        job = conveyor.wait(job["id"], timeout=60)
        conveyor.download(job["id"], "w256.webp", "out/")

``api_key`` defaults to ``$CONVEYOR_API_KEY`` (none: a server on loopback without keys).
Every 4xx/5xx answer raises :class:`conveyor.errors.ClientError` carrying the problem's ``code``.
"""

from conveyor.client._async import AsyncClient
from conveyor.client._core import (
    TERMINAL_EVENTS,
    TERMINAL_STATES,
    BaseClient,
    SSEParser,
    UploadPlan,
    WaitPlan,
    default_api_key,
    default_base_url,
    is_terminal_event,
    is_terminal_job,
)
from conveyor.client._sync import Client
from conveyor.client._tus import UploadStore, default_store_path

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATES",
    "AsyncClient",
    "BaseClient",
    "Client",
    "SSEParser",
    "UploadPlan",
    "UploadStore",
    "WaitPlan",
    "default_api_key",
    "default_base_url",
    "default_store_path",
    "is_terminal_event",
    "is_terminal_job",
]

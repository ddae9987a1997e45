"""The HTTP API: ``create_app(settings)`` builds the FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from anyio import to_thread
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from conveyor import __version__, problems
from conveyor.api import docs
from conveyor.api.body_timeout import BodyIdleTimeout
from conveyor.api.downloads import router as downloads_router
from conveyor.api.drain import Drain
from conveyor.api.events import router as events_router
from conveyor.api.head import HeadAsGet
from conveyor.api.hub import EventHub
from conveyor.api.maintenance import retention_loop, startup_sweep, sweep_grace
from conveyor.api.quotas import limit_rate
from conveyor.api.requestlog import ConveyorApp
from conveyor.api.routes_admin import router as admin_router
from conveyor.api.routes_jobs import router as jobs_router
from conveyor.api.routes_system import router as system_router
from conveyor.api.routes_tenant import router as tenant_router
from conveyor.api.routes_uploads import router as uploads_router
from conveyor.api.services import Services
from conveyor.api.tus_headers import TusHeaders
from conveyor.auth import Authenticator
from conveyor.dispatch.serving import ServeEngine
from conveyor.processors.builtin import build_registry
from conveyor.settings import Settings
from conveyor.storage import from_url
from conveyor.store import Store
from conveyor.uploads import tus_uploads
from conveyor.webhooks.outbox import Outbox, load_secret

log = logging.getLogger("conveyor.api")

WEB = Path(__file__).resolve().parent.parent / "web"

DESCRIPTION = """
Upload a file, get `202 Accepted` and a job id at once; supervised worker processes run the
job's pipeline; follow it over Server-Sent Events, get a signed webhook, download the results.

Every error is `application/problem+json` with a stable `code`:

""" + "\n".join(f"- `{code}`: {text}" for code, text in problems.CODES.items())


#: Response headers a browser on another origin may read (tus-js-client needs the tus ones; a
#: page pacing itself reads the RateLimit fields).
EXPOSED = ("Location", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Expires",
           "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
           "Tus-Checksum-Algorithm", "Conveyor-Job-Id", "Link", "Retry-After",
           "RateLimit-Policy", "RateLimit", "X-Request-ID")


def create_app(settings: Settings | None = None, *, workers: int | None = None,
               loopback: bool = True) -> FastAPI:
    """Build the app. ``workers=0`` runs no embedded workers (``conveyor serve --no-workers``).

    ``loopback``: the server listens on loopback only (``CONVEYOR_AUTH=auto`` may run open).
    """
    settings = settings or Settings()
    problem = settings.unsupported()
    if problem:
        raise ValueError(problem)
    embedded = settings.workers if workers is None else workers
    if settings.broker_url:
        embedded = 0  # Celery workers run the jobs (conveyor worker with the broker set)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        scaleout = ServeEngine(settings) if settings.broker_url else None
        store = Store(
            settings.db_url,
            run_dir=settings.run_dir,
            retention_s=settings.retention.total_seconds(),
            default_webhook_url=settings.webhook_url,
            dispatcher=scaleout.dispatcher if scaleout else None,
        )
        await to_thread.run_sync(store.migrate)
        if scaleout is not None:
            scaleout.start(store)
        storage = from_url(settings)
        grace = sweep_grace(storage, settings.storage_sweep_grace.total_seconds())
        await startup_sweep(store, storage, grace)
        uploads = tus_uploads(settings, store, storage)
        await uploads.recover()
        app.state.tus = uploads
        registry = build_registry(settings.processors)
        hub = EventHub(store)
        svc = Services(settings, store, storage, registry, hub,
                       drain=Drain(settings.drain_seconds))
        app.state.services = svc
        app.state.auth = Authenticator(store.keys, settings.auth, loopback=loopback)
        await hub.start()
        secret = await to_thread.run_sync(load_secret, settings, store)
        outbox = Outbox(settings, store, secret, hub.changed)
        outbox.start()
        retention = asyncio.create_task(
            retention_loop(store, storage, settings.sweep_interval_s, grace, uploads),
            name="conveyor-retention",
        )
        thread: threading.Thread | None = None
        if embedded > 0:
            from conveyor.runner.supervisor import Supervisor

            svc.supervisor = Supervisor(settings, workers=embedded)
            thread = threading.Thread(target=svc.supervisor.run, name="conveyor-supervisor",
                                      daemon=True)
            thread.start()
        try:
            yield
        finally:
            retention.cancel()
            await outbox.stop()
            await hub.stop()
            if svc.supervisor is not None and thread is not None:
                svc.supervisor.stop()
                await to_thread.run_sync(thread.join)
            if scaleout is not None:
                await to_thread.run_sync(scaleout.stop)
            store.close()

    app = ConveyorApp(
        title="conveyor",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # conveyor.api.docs serves /docs with local assets
        redoc_url=None,
    )
    problems.install(app)
    docs.install(app)
    app.add_middleware(HeadAsGet, router=app.router)
    app.add_middleware(BodyIdleTimeout, idle_s=settings.body_idle_timeout_s)
    app.add_middleware(TusHeaders)
    if settings.cors_origins:
        # Outermost, so that preflights and errors get their CORS headers too.
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["*"], expose_headers=list(EXPOSED), max_age=600)
    # Every tenant route counts against the tenant's requests_per_s (not /healthz, /readyz).
    rate = [Depends(limit_rate)]
    app.include_router(jobs_router, dependencies=rate)
    app.include_router(uploads_router, dependencies=rate)
    app.include_router(downloads_router, dependencies=rate)
    app.include_router(events_router, dependencies=rate)
    app.include_router(tenant_router, dependencies=rate)
    app.include_router(system_router)
    app.include_router(admin_router)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = WEB / "index.html"
        if not page.is_file():
            return Response("conveyor: the web UI is not installed\n", media_type="text/plain")
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    if WEB.is_dir():
        app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


__all__ = ["create_app"]

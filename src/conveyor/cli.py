"""The ``conveyor`` command line."""

from __future__ import annotations

import enum
import gc
import logging
import os
import signal
import sys
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperOption

from conveyor import __version__
from conveyor.settings import Settings

_display_type_rich = TyperOption.display_type_rich


def _flag_takes_no_value(self: TyperOption, ctx: Any) -> str | None:
    """A plain flag (``--wait``, ``--json``, ``--help``) takes no value: show no ``<bool>``.

    Typer's rich help prints every option's type, flags included; Click's plain help does not.
    """
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_takes_no_value  # type: ignore[method-assign]

app = typer.Typer(
    name="conveyor",
    help="Background file processing: streamed uploads, durable jobs, supervised workers.",
    no_args_is_help=True,
    add_completion=False,
)


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


_LOG_FORMAT_HELP = ("Log lines as `text` or `json` (one object per line); "
                    "default: CONVEYOR_LOG_FORMAT, else text.")


def _settings(processors: str | None = None, workers: int | None = None,
              log_format: LogFormat | None = None) -> Settings:
    overrides: dict[str, object] = {}
    if processors:
        overrides["processors"] = processors
    if workers is not None:
        overrides["workers"] = workers
    if log_format is not None:
        overrides["log_format"] = log_format.value
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            name = "CONVEYOR_" + "_".join(map(str, error["loc"])).upper()
            typer.echo(f"error: {name}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    problem = settings.unsupported()
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    return settings


def _observability(settings: Settings, *, server: bool) -> None:
    """Logs, and metrics shared with the worker processes: before anything else is imported."""
    from conveyor.telemetry import logs, multiproc

    logs.configure(settings.log_level, settings.log_format)
    # Must precede the first import of prometheus_client (conveyor.api, the supervisor); the
    # spawned workers inherit it. A server start drops the files of processes that are gone.
    multiproc.prepare(settings.run_dir, wipe=server)


def _load_plugins(settings: Settings) -> None:
    """Import the plug-ins before serving: a bad entry is one line and exit 2, no traceback."""
    from conveyor.errors import PluginLoadError
    from conveyor.processors.builtin import build_registry

    try:
        build_registry(settings.processors)
    except PluginLoadError as exc:
        typer.echo(f"error: {exc} (CONVEYOR_PROCESSORS / --processors)", err=True)
        raise typer.Exit(2) from None


def _check_storage(settings: Settings) -> None:
    """Fail start-up with one line when the storage is unusable (no bucket, bad credentials)."""
    import asyncio

    from conveyor.storage import StorageError, from_url

    try:
        asyncio.run(from_url(settings).ping())  # a throw-away client: the app makes its own
    except (StorageError, OSError, ValueError) as exc:
        typer.echo(f"error: storage {settings.storage_url or 'file://'}: {exc}", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # The object store's client runtime (obstore, Rust) may still have threads that call
        # into Python; finalising the interpreter under them can abort (SIGABRT) instead of
        # exiting 2. Nothing else is open yet: leave at once.
        os._exit(2)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="Embedded worker processes [default: CONVEYOR_WORKERS "
                                      "or the CPU count].")
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log",
                           help="Log one line per request (logger conveyor.access, at INFO).")
    ] = True,
    no_workers: Annotated[
        bool, typer.Option("--no-workers", help="Run no embedded workers (use `conveyor worker`).")
    ] = False,
    processors: Annotated[
        str | None, typer.Option(help="Comma-separated `module` or `module:attr` plug-ins.")
    ] = None,
    log_format: Annotated[
        LogFormat | None, typer.Option(help=_LOG_FORMAT_HELP, show_default=False)
    ] = None,
) -> None:
    """Run the HTTP API (and, unless --no-workers, the supervised worker processes; none with
    CONVEYOR_BROKER_URL set, where `conveyor worker` Celery nodes run the jobs).

    SIGTERM drains first (503 `draining`, jobs get CONVEYOR_DRAIN_S): see README, Operations.
    """
    settings = _settings(processors, workers, log_format)
    _observability(settings, server=True)
    _load_plugins(settings)
    _check_storage(settings)
    from conveyor.auth.startup import is_loopback, refusal

    refused = refusal(settings, host)
    if refused:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(2)
    if not access_log:
        logging.getLogger("conveyor.access").setLevel(logging.WARNING)

    import uvicorn

    from conveyor.api import create_app
    from conveyor.api.drain import AFTER_DRAIN_S, DrainingServer
    from conveyor.api.protocol import HeadLimits, protocol_class

    application = create_app(settings, workers=0 if no_workers else settings.workers,
                             loopback=is_loopback(host))
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,  # conveyor.telemetry.logs formats uvicorn's lines too
        # The drain (jobs, uploads in flight) happens before uvicorn's shutdown begins.
        timeout_graceful_shutdown=AFTER_DRAIN_S,
        access_log=False,  # conveyor.api.requestlog writes the request lines
        http=protocol_class(HeadLimits(
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_connections_per_client=settings.max_connections_per_client,
        )),
    )
    server = DrainingServer(config)
    # The imports and the app live as long as the process: frozen, they are out of the
    # collector's sight, and a full collection no longer walks their 120,000 objects on the
    # event loop (an 87 ms pause in the middle of a burst of uploads).
    gc.collect()
    gc.freeze()
    server.run()
    if not server.started:
        raise typer.Exit(3)


@app.command()
def worker(
    workers: Annotated[int | None, typer.Option(
        "--workers", "--concurrency", help="Worker processes (default: CPU count).")] = None,
    queues: Annotated[str | None, typer.Option(
        help="With a broker: comma-separated queues to consume (default: those of "
             "CONVEYOR_QUEUES and `conveyor`).")] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Drain the queue, then exit.")
    ] = False,
    processors: Annotated[
        str | None, typer.Option(help="Comma-separated `module` or `module:attr` plug-ins.")
    ] = None,
    log_format: Annotated[
        LogFormat | None, typer.Option(help=_LOG_FORMAT_HELP, show_default=False)
    ] = None,
) -> None:
    """Run supervised worker processes against the configured database (with
    CONVEYOR_BROKER_URL set: a Celery worker node, prefork, with conveyor's watchdog).

    SIGTERM: no more claims; running jobs get CONVEYOR_DRAIN_S to finish, then are released.
    """
    settings = _settings(processors, workers, log_format)
    _observability(settings, server=False)
    _load_plugins(settings)
    _check_storage(settings)

    from conveyor.runner.supervisor import Supervisor
    from conveyor.store import Store
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_url, run_dir=settings.run_dir)
    store.migrate()
    store.close()
    if settings.broker_url:
        from conveyor.dispatch.cli import celery_worker

        if burst:
            typer.echo("error: --burst is not available with CONVEYOR_BROKER_URL", err=True)
            raise typer.Exit(2)
        raise typer.Exit(celery_worker(settings, queues))
    if queues:
        typer.echo("error: --queues needs CONVEYOR_BROKER_URL (a Celery broker)", err=True)
        raise typer.Exit(2)
    supervisor = Supervisor(settings, burst=burst)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        supervisor.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    supervisor.run()


@app.command()
def migrate() -> None:
    """Apply database migrations (also done on every start)."""
    from conveyor.store import Store

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_url, run_dir=settings.run_dir)
    store.migrate()
    store.close()
    typer.echo(f"database at {settings.db_url.split('@')[-1]} is up to date")


@app.command()
def version() -> None:
    """Print conveyor's version."""
    typer.echo(__version__)


def _register_client_commands() -> None:
    from conveyor.cli_admin import register as register_admin
    from conveyor.cli_client import register

    register(app)
    register_admin(app)


_register_client_commands()


def main() -> None:
    app(prog_name="conveyor")


if __name__ == "__main__":
    main()

"""The ``conveyor`` command line."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Annotated

import typer

from conveyor import __version__
from conveyor.settings import Settings

app = typer.Typer(
    name="conveyor",
    help="Background file processing: streamed uploads, durable jobs, supervised workers.",
    no_args_is_help=True,
    add_completion=False,
)


def _settings(processors: str | None = None, workers: int | None = None) -> Settings:
    overrides: dict[str, object] = {}
    if processors:
        overrides["processors"] = processors
    if workers is not None:
        overrides["workers"] = workers
    settings = Settings(**overrides)  # type: ignore[arg-type]
    problem = settings.unsupported()
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    return settings


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="Embedded worker processes [default: CONVEYOR_WORKERS "
                                      "or the CPU count].")
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (off by default).")
    ] = False,
    no_workers: Annotated[
        bool, typer.Option("--no-workers", help="Run no embedded workers (use `conveyor worker`).")
    ] = False,
    processors: Annotated[
        str | None, typer.Option(help="Comma-separated `module` or `module:attr` plug-ins.")
    ] = None,
) -> None:
    """Run the HTTP API (and, unless --no-workers, the supervised worker processes; none with
    CONVEYOR_BROKER_URL set, where `conveyor worker` Celery nodes run the jobs)."""
    import uvicorn

    from conveyor.api import create_app
    from conveyor.api.protocol import HeadLimits, protocol_class

    settings = _settings(processors, workers)
    _logging(settings)
    application = create_app(settings, workers=0 if no_workers else settings.workers)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
        access_log=access_log,
        http=protocol_class(HeadLimits(
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_connections_per_client=settings.max_connections_per_client,
        )),
    )


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
) -> None:
    """Run supervised worker processes against the configured database (with
    CONVEYOR_BROKER_URL set: a Celery worker node, prefork, with conveyor's watchdog)."""
    from conveyor.runner.supervisor import Supervisor
    from conveyor.store import Store

    settings = _settings(processors, workers)
    _logging(settings)
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
    from conveyor.cli_client import register

    register(app)


_register_client_commands()


def main() -> None:
    app(prog_name="conveyor")


if __name__ == "__main__":
    main()

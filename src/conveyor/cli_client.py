"""Client-side commands: ``conveyor submit``, ``conveyor jobs ...``, ``conveyor pipelines``.

They speak HTTP to a running server (``--url`` or ``$CONVEYOR_URL``) through
:class:`conveyor.client.Client`, with the API key of ``$CONVEYOR_API_KEY`` when set.
Machine-readable output (job ids, ``--json``) goes to stdout;
progress bars and errors go to stderr.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table

from conveyor.client import Client, UploadStore, default_base_url
from conveyor.errors import ClientError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Url = Annotated[
    str | None,
    typer.Option("--url", envvar="CONVEYOR_URL", show_envvar=True,
                 help="Server base URL (default http://127.0.0.1:8000); the API key is read "
                      "from $CONVEYOR_API_KEY."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
JobId = Annotated[str, typer.Argument(help="The job id.", show_default=False)]

_STATE_STYLE = {"queued": "cyan", "running": "yellow", "succeeded": "green", "failed": "red",
                "cancelled": "magenta"}


def fail(code: str, detail: str) -> typer.Exit:
    """Print ``error <code>: <detail>`` to stderr; return the exit to raise."""
    err.print(f"[red]error[/red] {escape(code)}: {escape(detail)}")
    return typer.Exit(1)


@contextlib.contextmanager
def connect(url: str | None) -> Iterator[Client]:
    """A client for ``url``; turns client and transport errors into a clean exit 1."""
    base = url or default_base_url()
    try:
        with Client(base) as client:
            yield client
    except ClientError as exc:
        raise fail(exc.code, exc.detail) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise fail("bad_url", f"{base!r} is not a usable server URL ({exc})") from None
    except httpx.TimeoutException as exc:
        raise fail("timeout", f"{base} did not answer in time ({exc})") from None
    except httpx.HTTPError as exc:
        raise fail("unreachable", f"cannot reach the server at {base} ({exc})") from None
    except TimeoutError as exc:
        raise fail("timeout", str(exc)) from None


def dump(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def parse_options(options: str | None, pairs: list[str] | None) -> dict[str, Any] | None:
    """Merge ``--options JSON`` and ``--option k=v`` (values decoded as JSON when they parse)."""
    merged: dict[str, Any] = {}
    if options:
        try:
            loaded = json.loads(options)
        except ValueError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--options") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--options")
        merged.update(loaded)
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="--option")
        try:
            merged[key.strip()] = json.loads(raw)
        except ValueError:
            merged[key.strip()] = raw
    return merged if (options or pairs) else None


def _state(state: str) -> str:
    return f"[{_STATE_STYLE.get(state, 'white')}]{escape(state)}[/]"


def _size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)  # pragma: no cover


# -- submit -------------------------------------------------------------------------------------


@dataclass
class Submitted:
    #: The file's path or the imported URL, as given.
    source: str
    #: A short name for progress lines.
    name: str
    job: dict[str, Any]


def _upload_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(),
        console=err, disable=not err.is_terminal,
    )


def _job_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err, disable=not err.is_terminal,
    )


def _follow(client: Client, progress: Progress, item: Submitted, timeout: float | None
            ) -> dict[str, Any]:
    """Wait for one job with a progress bar fed by its SSE events."""
    name = escape(item.name)
    task = progress.add_task(f"{name} [dim]queued[/]", total=1.0)

    def on_event(event: dict[str, Any]) -> None:
        payload = event.get("data")
        body = payload.get("data") if isinstance(payload, dict) else None
        kind = str(event.get("event", "")).removeprefix("job.")
        if kind == "progress" and isinstance(body, dict):
            fraction = body.get("fraction")
            message = body.get("message")
            label = f"{name} [dim]{escape(str(message))}[/]" if message else name
            progress.update(task, completed=float(fraction or 0), description=label)
        else:
            progress.update(task, description=f"{name} [dim]{escape(kind)}[/]")

    job = client.wait(item.job["id"], timeout=timeout, on_event=on_event)
    progress.update(task, completed=1.0 if job["state"] == "succeeded" else None,
                    description=f"{name} {_state(job['state'])}")
    return job


def _download_all(client: Client, job: dict[str, Any], dest: Path) -> list[Path]:
    folder = dest / job["id"]
    folder.mkdir(parents=True, exist_ok=True)
    return [client.download(job["id"], art["name"], folder) for art in job.get("artifacts", [])]


def submit(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Files to upload, one job each.", exists=True, dir_okay=False, readable=True,
        show_default=False)] = None,
    pipeline: Annotated[str, typer.Option(help="Pipeline to run (`auto` routes by type).")]
    = "auto",
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="One option as key=value; the value is JSON when it parses "
        "(sizes=[256], quality=80), else a string. Repeatable.")] = None,
    options: Annotated[str | None, typer.Option(
        help="All options as a JSON object (--option values override its keys).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow each job until it ends.")]
    = False,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Download every artifact to DIR/<job id>/ (implies --wait).",
        file_okay=False)] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    webhook_url: Annotated[str | None, typer.Option(
        help="POST a signed webhook here when the job ends.")] = None,
    timeout: Annotated[float | None, typer.Option(
        help="With --wait: give up after this many seconds.")] = None,
    from_url: Annotated[list[str] | None, typer.Option(
        "--from-url", help="Import from this http(s) URL instead of uploading: the server "
        "fetches it (one job each; repeatable).", show_default=False)] = None,
    reuse: Annotated[bool, typer.Option(
        "--reuse", help="When this tenant already has a succeeded job made from the same "
        "bytes, pipeline, options and processor version, the new job succeeds at once with "
        "its result (uploads only: an imported URL's bytes are not known yet).")] = False,
    resumable: Annotated[bool, typer.Option(
        "--resumable", help="Upload over tus (/v1/uploads): cut connections and server "
        "restarts are resumed from the server's offset, and running the same command again "
        "resumes an interrupted upload (remembered in $XDG_CACHE_HOME/conveyor/uploads.json). "
        "No --reuse.")] = False,
    chunk_mb: Annotated[float | None, typer.Option(
        "--chunk-mb", min=0.01, help="With --resumable: send at most this many MiB per "
        "request (for proxies that cap request bodies; default: the whole file).",
        show_default=False)] = None,
    url: Url = None,
) -> None:
    """Upload FILES (streamed), or import --from-url URLs, and print each job's id;
    optionally wait and download results.

    Exits 1 if an upload or import is refused or a job does not succeed.
    """
    if not files and not from_url:
        raise fail("bad_usage", "name at least one file, or --from-url URL")
    if resumable and reuse:
        raise fail("bad_usage", "--reuse works with plain uploads only, not --resumable")
    if chunk_mb is not None and not resumable:
        raise fail("bad_usage", "--chunk-mb needs --resumable")
    store = UploadStore() if resumable else None
    chunk_size = None if chunk_mb is None else max(1, int(chunk_mb * 1024 * 1024))
    files = files or []
    opts = parse_options(options, option)
    wait = wait or out_dir is not None
    failed = False
    with connect(url) as client:
        submitted: list[Submitted] = []
        with _upload_progress() as progress:
            for path in files:
                task = progress.add_task(f"{escape(path.name)} [dim]upload[/]", total=None)

                def on_progress(sent: int, total: int, task: TaskID = task) -> None:
                    progress.update(task, completed=sent, total=total)

                try:
                    if store is not None:
                        job = client.submit_resumable(
                            path, pipeline=pipeline, options=opts, priority=priority,
                            webhook_url=webhook_url, chunk_size=chunk_size, store=store,
                            on_progress=on_progress)
                    else:
                        job = client.submit(path, pipeline=pipeline, options=opts,
                                            priority=priority, webhook_url=webhook_url,
                                            reuse=reuse, on_progress=on_progress)
                except ClientError as exc:
                    err.print(f"[red]error[/red] {escape(exc.code)}: {escape(exc.detail)} "
                              f"[dim]({escape(str(path))})[/]")
                    failed = True
                    continue
                submitted.append(Submitted(str(path), path.name, job))
            for source in from_url or []:
                try:
                    job = client.submit_url(source, pipeline=pipeline, options=opts,
                                            priority=priority, webhook_url=webhook_url)
                except ClientError as exc:
                    err.print(f"[red]error[/red] {escape(exc.code)}: {escape(exc.detail)} "
                              f"[dim]({escape(source)})[/]")
                    failed = True
                    continue
                submitted.append(Submitted(source, job["input"]["filename"], job))
        # Ids go to stdout once the bars (on stderr) are done, so the two never interleave.
        for item in submitted:
            out.print(item.job["id"])
        if not wait:
            raise typer.Exit(1 if failed else 0)
        with _job_progress() as progress:
            ended = [(item, _follow(client, progress, item, timeout)) for item in submitted]
        # After the bars: one line per job with its final state (stdout keeps only the ids).
        for item, job in ended:
            err.print(f"{job['id']} {_state(job['state'])} [dim]{_routed(job)} "
                      f"{escape(item.source)}[/]")
            if job["state"] != "succeeded":
                failed = True
                error = job.get("error") or {}
                code = error.get("code") or job["state"]
                message = error.get("message") or f"the job was {job['state']}"
                err.print(f"[red]error[/red] {escape(code)}: {escape(message)} "
                          f"[dim](job {job['id']}, {escape(item.source)})[/]")
            elif out_dir is not None:
                for saved in _download_all(client, job, out_dir):
                    err.print(f"[green]saved[/green] {escape(str(saved))}")
    raise typer.Exit(1 if failed else 0)


def _routed(job: dict[str, Any]) -> str:
    """The pipeline that ran the job: for ``auto``, the one it routed to (``auto→image``)."""
    result = job.get("result")
    routed = result.get("routed_to") if isinstance(result, dict) else None
    return f"{job['pipeline']}→{routed}" if routed else str(job["pipeline"])


# -- jobs ---------------------------------------------------------------------------------------

jobs_app = typer.Typer(help="List, inspect, cancel, retry and delete jobs.",
                       no_args_is_help=True)


@jobs_app.command("list")
def list_jobs(
    state: Annotated[str | None, typer.Option(
        help="Only jobs in this state (queued, running, succeeded, failed, cancelled).")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only jobs of this pipeline.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs.", min=1, max=500)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    as_json: AsJson = False,
    url: Url = None,
) -> None:
    """List jobs, newest first."""
    with connect(url) as client:
        page = client.list(state=state, pipeline=pipeline, limit=limit, cursor=cursor)
    if as_json:
        dump(page)
        return
    table = Table(Column("id", no_wrap=True), Column("state", no_wrap=True),
                  Column("pipeline", min_width=8), Column("file", min_width=12, overflow="fold"),
                  Column("created", no_wrap=True), box=box.SIMPLE_HEAD, pad_edge=False)
    for job in page["items"]:
        state = _state(job["state"])
        if job["state"] == "running":
            state += f" {((job.get('progress') or {}).get('fraction') or 0.0):.0%}"
        created = str(job.get("created_at") or "").replace("T", " ")[5:16]
        table.add_row(job["id"], state, escape(_routed(job)),
                      escape(job["input"]["filename"]), created)
    if page.get("next_cursor"):
        table.caption = f"more: --cursor {page['next_cursor']}"
    out.print(table)


@jobs_app.command("show")
def show_job(job_id: JobId, as_json: AsJson = False, url: Url = None) -> None:
    """Show one job: state, input, result, error and artifacts."""
    with connect(url) as client:
        job = client.get(job_id)
    if as_json:
        dump(job)
        return
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    progress = job.get("progress") or {}
    rows = [
        ("id", escape(job["id"])), ("state", _state(job["state"])),
        ("pipeline", escape(job["pipeline"])),
        ("options", escape(json.dumps(job.get("options")))),
        ("input", escape(f"{job['input']['filename']} ({_size(job['input'].get('size'))}, "
                         f"{job['input'].get('media_type')})")),
        ("progress", escape(f"{(progress.get('fraction') or 0):.0%} "
                            f"{progress.get('message') or ''}".strip())),
        ("attempts", f"{job.get('attempts')}/{job.get('max_attempts')}"),
        ("created", str(job.get("created_at"))), ("started", str(job.get("started_at") or "")),
        ("finished", str(job.get("finished_at") or "")),
    ]
    if job.get("error"):
        rows.append(("error", f"[red]{escape(job['error'].get('code', ''))}[/]: "
                              f"{escape(job['error'].get('message', ''))}"))
    if job.get("result") is not None:
        rows.append(("result", escape(json.dumps(job["result"]))))
    for key, value in rows:
        info.add_row(key, value)
    out.print(info)
    if job.get("artifacts"):
        arts = Table("artifact", "type", Column("size", justify="right"),
                     Column("sha256", overflow="fold"))
        for art in job["artifacts"]:
            arts.add_row(escape(art["name"]), escape(art["media_type"]), _size(art["size"]),
                         art["sha256"])
        out.print(arts)


@jobs_app.command("cancel")
def cancel_job(
    job_id: JobId,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for a running job to stop before printing its state.")] = 30.0,
    url: Url = None,
) -> None:
    """Cancel a queued or running job and print its state once the cancel took effect."""
    with connect(url) as client:
        job = client.cancel(job_id)
        if job["state"] == "running":
            # 202: the worker is stopping it; the state after the change comes when it ends.
            with contextlib.suppress(TimeoutError):
                job = client.wait(job_id, timeout=timeout)
    note = " [dim](stop requested, still stopping)[/]" if job["state"] == "running" else ""
    out.print(f"{job['id']} {_state(job['state'])}{note}")


@jobs_app.command("retry")
def retry_job(job_id: JobId, url: Url = None) -> None:
    """Queue a failed or cancelled job again and print its new state (queued, or running)."""
    with connect(url) as client:
        job = client.retry(job_id)
    out.print(f"{job['id']} {_state(job['state'])}")


@jobs_app.command("delete")
def delete_job(job_id: JobId, url: Url = None) -> None:
    """Delete a job with its input and artifacts."""
    with connect(url) as client:
        client.delete(job_id)
    out.print(f"{job_id} deleted")


# -- pipelines ----------------------------------------------------------------------------------


def pipelines(as_json: AsJson = False, url: Url = None) -> None:
    """List the server's pipelines and the media types they accept."""
    with connect(url) as client:
        found = client.pipelines()
    if as_json:
        dump(found)
        return
    table = Table("pipeline", "accepts", "description")
    for item in found:
        table.add_row(escape(item["name"]), escape(", ".join(item.get("accepts") or [])),
                      escape(item.get("description") or ""))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app``."""
    app.command("submit")(submit)
    app.add_typer(jobs_app, name="jobs")
    app.command("pipelines")(pipelines)

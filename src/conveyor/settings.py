"""All of conveyor's settings, read from ``CONVEYOR_*`` environment variables."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, TypeAdapter, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match and str(value).startswith(("P", "-P")):
        # ISO 8601, as pydantic serialises a timedelta.
        return TypeAdapter(timedelta).validate_python(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 7d, 12h, 30m, 45s)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _split_csv(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value or [])


def _blank_is_default(value: Any) -> Any:
    # ``CONVEYOR_X=`` (set but empty) means "the default", as it did when these caps were read
    # from the environment by hand.
    if isinstance(value, str) and not value.strip():
        raise PydanticUseDefault()
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
DEFAULT_ARCHIVE_MAX_ENTRIES = 10_000
#: Inflated bytes go to disk, never to memory: the cap protects the worker's disk.
DEFAULT_ARCHIVE_MAX_BYTES = 2 * 1024**3
DEFAULT_ARCHIVE_MAX_RATIO = 200.0
DEFAULT_DRAIN_S = 20.0
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    data_dir: Path = Path("./conveyor-data")
    #: Default: ``sqlite:///{data_dir}/conveyor.db``.
    database_url: str | None = None
    #: Default: ``file://{data_dir}/files``; or ``s3://bucket/prefix`` (with the AWS_* variables).
    #: The one place that reads this is ``conveyor.storage.from_url``.
    storage_url: str | None = None
    #: S3: bytes of part buffers all uploads of one server process may hold together.
    s3_buffer_bytes: int = Field(default=256 * 1024**2, ge=1024**2)
    #: S3: least size of a multipart upload's part (also at least max_upload_bytes / 10,000).
    #: S3 wants 5 MiB or more; smaller is only for a stand-in (moto's S3_UPLOAD_PART_MIN_SIZE).
    s3_part_bytes: int = Field(default=8 * 1024**2, ge=64 * 1024)
    #: Shared storage (S3): multipart uploads and inputs no job points at are removed once they
    #: are this old (another node may be between upload and commit).
    storage_sweep_grace: Duration = timedelta(hours=24)
    #: ``proxy`` streams downloads through conveyor; ``redirect`` answers 307 to a presigned
    #: URL (S3 only; the URL carries no ETag, nosniff or CSP headers of conveyor's).
    downloads: Literal["proxy", "redirect"] = "proxy"
    #: ``amqp://...`` or ``redis://...``: scale-out on Celery (PostgreSQL and a shared storage).
    broker_url: str | None = None
    #: Scale-out: pipeline-to-queue routes, ``media=heavy,pdf=heavy``; others go to ``conveyor``.
    queues: CsvList = Field(default_factory=list)
    #: Scale-out with ``file://`` storage: the operator declares every machine mounts the same
    #: directory (NFS, a shared volume).
    shared_filesystem: bool = False

    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0)
    job_timeout_s: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    lease_s: float = Field(default=30.0, gt=0)
    #: Address-space cap per worker process (RLIMIT_AS), in MiB; 0 disables it.
    worker_memory_mb: int = Field(default=2048, ge=0)
    #: Resident-set cap checked by the supervisor while a job runs, in MiB; 0 disables it.
    worker_rss_mb: int = Field(default=1536, ge=0)
    jobs_per_worker: int = Field(default=500, ge=1)
    #: Scheduling niceness added to worker processes, so the web process always gets the CPU
    #: first and accept latency stays flat while workers are busy.
    worker_nice: int = Field(default=10, ge=0, le=19)
    #: How long a cancelled or terminating job may take to stop before its worker is killed.
    cancel_grace_s: float = Field(default=3.0, ge=0)
    #: On SIGTERM, how long running jobs (and uploads in flight) have to finish before the
    #: jobs are released (back to queued, not failed) and the process exits.
    drain_s: float | None = Field(default=None, ge=0)
    #: The former name of ``drain_s`` (``CONVEYOR_SHUTDOWN_GRACE_S``), still read.
    shutdown_grace_s: float | None = Field(default=None, ge=0)
    retry_base_s: float = Field(default=2.0, ge=0)
    retry_max_s: float = Field(default=300.0, ge=0)
    #: Least time between two stored progress updates of one job.
    progress_interval_s: float = Field(default=0.1, ge=0)

    max_upload_bytes: int = Field(default=10 * 1024**3, ge=0)
    #: Where the ``requests_per_s`` quota counts requests (a ``limits`` storage URI):
    #: ``memory://`` counts per server process (N processes let a tenant send up to N times
    #: its rate); ``redis://host:6379`` counts once across every process that shares it.
    rate_limit_storage: str = "memory://"
    #: Free bytes kept on the storage's and the database's disks: below it, /readyz is 503
    #: and uploads are refused with 507 (also when an upload's Content-Length would cross it).
    min_free_bytes: int = Field(default=64 * 1024**2, ge=0)
    #: A request head (request line and headers) must arrive within this time (408).
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: A request body that sends nothing for this long while being read ends with 408.
    body_idle_timeout_s: float = Field(default=30.0, gt=0)
    #: Largest request head, and most headers, accepted (431 above).
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=10)
    #: Concurrent connections from one client address (503 above).
    max_connections_per_client: int = Field(default=1024, ge=1)
    #: An event stream whose reader does not take a write within this time is dropped (the
    #: client resumes with Last-Event-ID).
    event_send_timeout_s: float = Field(default=20.0, gt=0)
    retention: Duration = timedelta(days=7)
    #: An unfinished tus upload (``/v1/uploads``) is removed, with its bytes, once it has
    #: received nothing for this long (each PATCH moves ``Upload-Expires`` forward).
    upload_expiry: Duration = timedelta(hours=24)
    #: Origins whose browsers may call the API (tus uploads from another site): a comma list,
    #: or ``*``. Empty: no CORS headers at all.
    cors_origins: CsvList = Field(default_factory=list)
    sweep_interval_s: float = Field(default=300.0, gt=0)

    processors: CsvList = Field(default_factory=list)
    #: Decompression-bomb cap of the ``image`` processor, in pixels (checked from the header).
    max_image_pixels: Annotated[int, BeforeValidator(_blank_is_default)] = Field(
        default=DEFAULT_MAX_IMAGE_PIXELS, ge=1)
    #: Pixel engine of the ``image`` processor: ``vips`` (libvips, shrink-on-load, streaming;
    #: Pillow still reads BMP and HEIC) or ``pillow`` (Pillow only).
    image_engine: Literal["vips", "pillow"] = "vips"
    #: Caps of the ``archive`` processor: entries, inflated bytes, inflated / compressed ratio.
    archive_max_entries: Annotated[int, BeforeValidator(_blank_is_default)] = Field(
        default=DEFAULT_ARCHIVE_MAX_ENTRIES, ge=1)
    archive_max_bytes: Annotated[int, BeforeValidator(_blank_is_default)] = Field(
        default=DEFAULT_ARCHIVE_MAX_BYTES, ge=1)
    archive_max_ratio: Annotated[float, BeforeValidator(_blank_is_default)] = Field(
        default=DEFAULT_ARCHIVE_MAX_RATIO, gt=0)

    #: Level of conveyor's own logs: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    log_level: str = "INFO"
    #: ``text`` (for people) or ``json`` (one JSON object per line, for machines).
    log_format: Literal["text", "json"] = "text"

    #: ``auto``: open (as tenant ``default``) while no API key exists and the server listens on
    #: loopback, else keys are needed; ``keys``: always needed; ``none``: open on purpose.
    auth: Literal["auto", "keys", "none"] = "auto"
    #: How long a tenant's previous webhook secret keeps signing after a rotation.
    webhook_secret_overlap: Duration = timedelta(hours=24)

    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_allow_private: str | None = None
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    #: Multiplies the Standard Webhooks retry schedule (tests shrink it).
    webhook_schedule_scale: float = Field(default=1.0, gt=0)

    #: URL import: non-public networks a URL may reach (same syntax as
    #: ``webhook_allow_private``: ``true``, ``false`` or a comma-separated list of CIDRs).
    url_import_allow_private: str | None = None
    #: URL import: seconds to open a connection (per address tried).
    url_import_connect_timeout_s: float = Field(default=10.0, gt=0)
    #: URL import: seconds the remote may stay silent (before the head, or between chunks).
    url_import_read_timeout_s: float = Field(default=30.0, gt=0)
    #: URL import: seconds the whole fetch may take, redirects included.
    url_import_timeout_s: float = Field(default=3600.0, gt=0)
    #: URL import: redirects followed (each hop passes the SSRF guard again).
    url_import_max_redirects: int = Field(default=5, ge=0, le=20)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"not a log level: {value!r} (use one of {', '.join(_LOG_LEVELS)})")
        return level

    @field_validator("url_import_allow_private")
    @classmethod
    def _allow_list(cls, value: str | None) -> str | None:
        from conveyor.webhooks.ssrf import AllowList

        AllowList.parse(value, "CONVEYOR_URL_IMPORT_ALLOW_PRIVATE")  # a bad CIDR fails start-up
        return value

    @field_validator("log_format", "auth", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def unsupported(self) -> str | None:
        """Why this configuration cannot run (a feature not built yet), or None."""
        if self.broker_url:
            from conveyor.dispatch.routing import refusal

            problem = refusal(self)
            if problem:
                return problem
        if self.storage_url and not self.storage_url.startswith(("file://", "s3://")):
            return ("CONVEYOR_STORAGE_URL must be file://... or s3://bucket/prefix, not "
                    f"{self.storage_url.split(':', 1)[0]}://")
        return None

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'conveyor.db'}"

    @property
    def drain_seconds(self) -> float:
        """``CONVEYOR_DRAIN_S``, else the older ``CONVEYOR_SHUTDOWN_GRACE_S``, else 20 s."""
        for value in (self.drain_s, self.shutdown_grace_s):
            if value is not None:
                return value
        return DEFAULT_DRAIN_S

    @property
    def run_dir(self) -> Path:
        """Sockets and pid files of the running processes."""
        return self.data_dir / "run"

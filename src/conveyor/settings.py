"""All of conveyor's settings, read from ``CONVEYOR_*`` environment variables."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

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
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    data_dir: Path = Path("./conveyor-data")
    #: Default: ``sqlite:///{data_dir}/conveyor.db``.
    database_url: str | None = None
    #: Default: ``file://{data_dir}/files``. Only local storage is implemented; the one place
    #: that reads this is ``conveyor.storage.from_url``.
    storage_url: str | None = None
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
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    retry_base_s: float = Field(default=2.0, ge=0)
    retry_max_s: float = Field(default=300.0, ge=0)
    #: Least time between two stored progress updates of one job.
    progress_interval_s: float = Field(default=0.1, ge=0)

    max_upload_bytes: int = Field(default=10 * 1024**3, ge=0)
    #: A request head (request line and headers) must arrive within this time (408).
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: A request body that sends nothing for this long while being read ends with 408.
    body_idle_timeout_s: float = Field(default=30.0, gt=0)
    #: Largest request head, and most headers, accepted (431 above).
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=10)
    #: Concurrent connections from one client address (503 above).
    max_connections_per_client: int = Field(default=1024, ge=1)
    retention: Duration = timedelta(days=7)
    sweep_interval_s: float = Field(default=300.0, gt=0)

    processors: CsvList = Field(default_factory=list)
    #: Decompression-bomb cap of the ``image`` processor, in pixels (checked from the header).
    max_image_pixels: Annotated[int, BeforeValidator(_blank_is_default)] = Field(
        default=DEFAULT_MAX_IMAGE_PIXELS, ge=1)
    #: Caps of the ``archive`` processor: entries, inflated bytes, inflated / compressed ratio.
    archive_max_entries: Annotated[int, BeforeValidator(_blank_is_default)] = Field(
        default=DEFAULT_ARCHIVE_MAX_ENTRIES, ge=1)
    archive_max_bytes: Annotated[int, BeforeValidator(_blank_is_default)] = Field(
        default=DEFAULT_ARCHIVE_MAX_BYTES, ge=1)
    archive_max_ratio: Annotated[float, BeforeValidator(_blank_is_default)] = Field(
        default=DEFAULT_ARCHIVE_MAX_RATIO, gt=0)

    #: Level of conveyor's own logs: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    log_level: str = "INFO"

    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_allow_private: str | None = None
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    #: Multiplies the Standard Webhooks retry schedule (tests shrink it).
    webhook_schedule_scale: float = Field(default=1.0, gt=0)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"not a log level: {value!r} (use one of {', '.join(_LOG_LEVELS)})")
        return level

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
        if self.storage_url and not self.storage_url.startswith("file://"):
            return ("only local storage (file://...) is implemented; S3 storage "
                    f"({self.storage_url.split(':', 1)[0]}://) is not yet")
        return None

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'conveyor.db'}"

    @property
    def run_dir(self) -> Path:
        """Sockets and pid files of the running processes."""
        return self.data_dir / "run"

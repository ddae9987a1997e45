"""conveyor's Prometheus metrics (names are stable; the README lists them).

Counters and histograms are observed where things happen, in whichever process: the API server
(accept latency, upload bytes, webhook deliveries), the workers (queue wait, run time) and the
supervisor (run time of attempts it killed or released). Gauges that describe the present
(jobs by state, subscribers, workers alive) are read at scrape time by :class:`LiveCollector`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from conveyor.telemetry import multiproc

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SLOW = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

ACCEPT_SECONDS = Histogram(
    "conveyor_accept_seconds",
    "Time from the start of POST /v1/jobs to its 202 (the upload included).",
    buckets=_FAST,
)
UPLOAD_BYTES = Counter(
    "conveyor_upload_bytes", "Bytes of accepted uploads (the files, without multipart framing)."
)
UPLOADS_ACCEPTED = Counter("conveyor_uploads_accepted", "Uploads answered 202 (a job created).")
URL_IMPORTS_ACCEPTED = Counter(
    "conveyor_url_imports_accepted", "URL imports answered 202 (a job created, not yet fetched)."
)
UPLOADS_DISCONNECTED = Counter(
    "conveyor_uploads_disconnected", "Uploads whose client disconnected before the end."
)
UPLOADS_DRAINING = Counter(
    "conveyor_uploads_refused_draining", "Uploads refused with 503 draining (SIGTERM received)."
)
QUEUE_WAIT_SECONDS = Histogram(
    "conveyor_queue_wait_seconds",
    "Time from a job's creation to the start of its first attempt.",
    buckets=_SLOW,
)
RUN_SECONDS = Histogram(
    "conveyor_job_run_seconds",
    "Run time of one attempt, by pipeline and outcome (succeeded, failed, retrying, "
    "cancelled, released, lost).",
    ["pipeline", "outcome"],
    buckets=_SLOW,
)
WEBHOOK_DELIVERIES = Counter(
    "conveyor_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retry, failed, disabled).",
    ["outcome"],
)
DOWNLOAD_BYTES = Counter("conveyor_download_bytes", "Bytes sent of inputs and artifacts.")
EVENT_STREAMS_STALLED = Counter(
    "conveyor_event_streams_stalled",
    "Event streams dropped because the client did not read within the send time-out.",
)
JOBS_REUSED = Counter(
    "conveyor_jobs_reused",
    "Jobs created succeeded from an earlier identical job's result (reuse=true).",
)
UPLOADS_REFUSED_NO_ROOM = Counter(
    "conveyor_uploads_refused_no_room",
    "Uploads refused with 507 because the disk was below CONVEYOR_MIN_FREE_BYTES.",
)


class LiveCollector(Collector):
    """Gauges computed when scraped, from the state of this server process and the database."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, dict[str, float]]]]) -> None:
        #: ``read()`` yields (name, help, {label value or "": value}); label name "state".
        self.read = read

    def collect(self) -> Iterator[Metric]:
        for name, text, values in self.read():
            labelled = any(values) and "" not in values
            family = GaugeMetricFamily(name, text, labels=["state"] if labelled else None)
            for label, value in values.items():
                family.add_metric([label] if labelled else [], value)
            yield family


def exposition(live: LiveCollector) -> bytes:
    """The Prometheus text of every process's metrics (summed) and the live gauges."""
    if multiproc.enabled():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        counted = generate_latest(registry)
    else:
        counted = generate_latest(REGISTRY)
    present = CollectorRegistry()
    present.register(live)
    return counted + generate_latest(present)


def since(start: float) -> float:
    """Seconds elapsed since ``start`` (a :func:`time.monotonic` reading), never negative."""
    return max(0.0, time.monotonic() - start)

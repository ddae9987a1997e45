"""URL import on Celery worker nodes: the fetch is the first step of the one ``run_job`` task,
on PostgreSQL (schema 0005) and shared storage; a 5xx is retried through the job's row."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.origin import CSV, Origin, running_origin
from tests.scaleout.conftest import Cluster

ALLOW = {"CONVEYOR_URL_IMPORT_ALLOW_PRIVATE": "127.0.0.1/32"}


@pytest.fixture
def origin() -> Iterator[Origin]:
    with running_origin() as running:
        yield running


def test_celery_nodes_fetch_url_imports(cluster: Cluster, origin: Origin) -> None:
    cluster.serve(**ALLOW)
    cluster.worker(2, **ALLOW)
    client = cluster.client()
    data = b"id,v\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(500))
    ok = client.submit_url(origin.put("squares.csv", data), pipeline="auto")
    flaky = client.submit_url(origin.url("/flaky/celery"), pipeline="probe")
    missing = client.submit_url(origin.url("/missing"), pipeline="probe")
    deadline = time.monotonic() + 90
    jobs = {}
    while time.monotonic() < deadline and len(jobs) < 3:
        for job in (ok, flaky, missing):
            got = client.get(job["id"])
            if got["state"] in ("succeeded", "failed", "cancelled"):
                jobs[job["id"]] = got
        time.sleep(0.1)
    assert len(jobs) == 3, cluster.node_logs()
    done = jobs[ok["id"]]
    assert done["state"] == "succeeded", done
    assert done["input"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert done["result"]["routed_to"] == "table"
    retried = jobs[flaky["id"]]
    assert retried["state"] == "succeeded" and retried["attempts"] == 2, retried
    assert retried["input"]["sha256"] == hashlib.sha256(CSV).hexdigest()
    assert jobs[missing["id"]]["error"]["code"] == "url_status"
    assert cluster.server is not None
    served = httpx.get(f"{cluster.server.url}/v1/jobs/{ok['id']}/input", timeout=30)
    assert served.content == data

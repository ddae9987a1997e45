"""Scale-out on Celery, end to end: ``conveyor serve`` + ``conveyor worker`` nodes, real
PostgreSQL, each case on Redis and on RabbitMQ (the ``broker`` fixture's parameters).

The machine-loss and partition cases run each worker node as a "machine" (network, PID and UTS
namespaces, reaching PostgreSQL and the broker over socat bridges: tests/scaleout/machines.py);
the others run nodes as plain process groups. Every node shares one storage directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from conveyor.client import Client
from conveyor.storage import LocalStorage, artifacts_prefix
from tests.conftest import free_port
from tests.scaleout.conftest import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _submit(client: Client, folder: Path, n: int, pipeline: str,
            **kwargs: Any) -> list[str]:
    ids = []
    for i in range(n):
        path = folder / f"in-{pipeline}-{i}-{time.monotonic_ns()}.txt"
        path.write_text(f"file {i}\n")
        ids.append(client.submit(path, pipeline=pipeline, **kwargs)["id"])
    return ids


def _wait_all(cluster: Cluster, ids: list[str], timeout: float = 90) -> dict[str, Any]:
    assert cluster.server is not None
    deadline = time.monotonic() + timeout
    jobs: dict[str, Any] = {}
    with httpx.Client(base_url=cluster.server.url, timeout=10) as http:
        for job_id in ids:
            while True:
                job = http.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in ("succeeded", "failed", "cancelled"):
                    jobs[job_id] = job
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} is {job['state']}\n"
                                         + cluster.node_logs())
                time.sleep(0.05)
    return jobs


def _events(db_url: str, etype: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT job_id, count(*) FROM events WHERE type = %s "
                            "GROUP BY job_id", (etype,)).fetchall()
    return {job_id: int(count) for job_id, count in rows}


def _running_on(db_url: str, machine: str) -> list[str]:
    """Jobs running on a machine (worker ids start with its host name)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT id FROM jobs WHERE state = 'running' AND worker_id "
                            "LIKE %s", (f"{machine}-%",)).fetchall()
    return [r[0] for r in rows]


def test_a_lost_worker_machine_loses_no_job(cluster: Cluster, tmp_path: Path) -> None:
    # Webhook messages are written with the job's end (delivery is tests/webhooks' business):
    # an address nobody listens on is enough to count them.
    cluster.common["CONVEYOR_WEBHOOK_URL"] = f"http://127.0.0.1:{free_port()}/hook"
    server = cluster.serve()
    cluster.worker(2, machine="doomed")
    cluster.worker(2, machine="spare")
    client = cluster.client()
    ids = _submit(client, tmp_path, 60, "mark", options={"seconds": 0.25})

    # Lose the first machine (SIGKILL of its PID 1) once it runs jobs of its own.
    deadline = time.monotonic() + 30
    while not _running_on(cluster.db_url, "doomed"):
        assert time.monotonic() < deadline, cluster.node_logs()
        time.sleep(0.02)
    cluster.machines["doomed"].lose()

    jobs = _wait_all(cluster, ids)
    assert {j["state"] for j in jobs.values()} == {"succeeded"}
    succeeded = _events(cluster.db_url, "job.succeeded")
    assert {job_id: succeeded.get(job_id) for job_id in ids} == dict.fromkeys(ids, 1)
    with psycopg.connect(cluster.db_url) as conn:
        hooks = dict(conn.execute("SELECT job_id, count(*) FROM webhook_outbox WHERE "
                                  "event_type = 'job.succeeded' GROUP BY job_id").fetchall())
    assert {job_id: hooks.get(job_id) for job_id in ids} == dict.fromkeys(ids, 1)
    # Some job ran more than once (the dead node's), yet shows only its last attempt's output.
    assert any(j["attempts"] > 1 for j in jobs.values()), "no job was running on the lost node"
    storage = LocalStorage(cluster.shared)
    for job_id, job in jobs.items():
        keys = storage_keys(storage, job_id)
        assert len(keys) == 1, (job_id, keys)
        body = httpx.get(f"{server.url}/v1/jobs/{job_id}/artifacts/attempt.txt", timeout=10)
        assert body.status_code == 200
        assert body.text == f"attempt {job['result']['attempt']}\n"


def storage_keys(storage: LocalStorage, job_id: str) -> list[str]:
    from conveyor.storage import BlockingStorage

    blocking = BlockingStorage(storage)
    try:
        return blocking.keys(artifacts_prefix(job_id))
    finally:
        blocking.close()


def test_misbehaving_jobs_end_with_their_code_and_the_node_keeps_serving(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.serve()
    node = cluster.worker(4, CONVEYOR_WORKER_RSS_MB="200")
    client = cluster.client()
    stuck = _submit(client, tmp_path, 1, "sleep", timeout_s=1,
                    options={"seconds": 60, "cooperative": False})[0]
    deaf = _submit(client, tmp_path, 1, "sleep", options={"seconds": 60, "cooperative": False})[0]
    hog = _submit(client, tmp_path, 1, "alloc_touch", options={"megabytes": 400, "hold_s": 30})[0]
    poison = _submit(client, tmp_path, 1, "abort", max_attempts=2)[0]
    server.wait_state(deaf, ("running",), timeout=30)
    assert httpx.post(f"{server.url}/v1/jobs/{deaf}/cancel", timeout=10).status_code < 300

    jobs = _wait_all(cluster, [stuck, deaf, hog, poison], timeout=60)
    assert (jobs[stuck]["state"], jobs[stuck]["error"]["code"]) == ("failed", "timeout")
    assert jobs[deaf]["state"] == "cancelled"
    assert (jobs[hog]["state"], jobs[hog]["error"]["code"]) == ("failed", "memory_exceeded")
    assert (jobs[poison]["state"], jobs[poison]["error"]["code"]) == ("failed", "worker_lost")
    assert jobs[poison]["attempts"] == 2

    # A late or duplicate message for a finished or cancelled job: acked, nothing happens.
    from conveyor.celery_app import make_app
    from conveyor.settings import Settings

    app = make_app(Settings(broker_url=cluster.broker.url))
    before = _events(cluster.db_url, "job.started")
    try:
        for job_id in (deaf, stuck):
            app.send_task("conveyor.run_job", args=[job_id], task_id=f"{job_id}.late",
                          queue="conveyor", ignore_result=True)
    finally:
        app.close()
    log = cluster.logs[0]
    deadline = time.monotonic() + 20
    while log.read_text(errors="replace").count(".late] succeeded") < 2:
        assert time.monotonic() < deadline, cluster.node_logs()
        time.sleep(0.05)
    assert _events(cluster.db_url, "job.started") == before
    for job_id in (deaf, stuck):
        assert httpx.get(f"{server.url}/v1/jobs/{job_id}").json() == jobs[job_id]

    # The node lost children, not itself: it still runs jobs.
    ok = _submit(client, tmp_path, 3, "mark")
    assert {j["state"] for j in _wait_all(cluster, ok).values()} == {"succeeded"}
    assert node.poll() is None


def test_broker_outage_accepts_uploads_and_loses_nothing(cluster: Cluster,
                                                          tmp_path: Path) -> None:
    server = cluster.serve()
    cluster.worker(2)
    client = cluster.client()
    first = _submit(client, tmp_path, 8, "mark", options={"seconds": 0.3})
    server.wait_state(first[0], ("running", "succeeded"), timeout=30)

    cluster.broker.stop()  # mid-run
    during = _submit(client, tmp_path, 5, "mark")  # each one a 202 (submit raises otherwise)
    deadline = time.monotonic() + 10  # /readyz reuses a broker check for 2 s
    while httpx.get(f"{server.url}/readyz", timeout=10).json()["checks"]["broker"] != (
            "unreachable"):
        assert time.monotonic() < deadline, "/readyz never saw the broker down"
        time.sleep(0.2)
    assert all(httpx.get(f"{server.url}/v1/jobs/{j}").json()["state"] == "queued"
               for j in during)
    cluster.broker.start()

    jobs = _wait_all(cluster, first + during, timeout=90)
    assert {j["state"] for j in jobs.values()} == {"succeeded"}
    succeeded = _events(cluster.db_url, "job.succeeded")
    assert all(succeeded.get(j) == 1 for j in first + during)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert "conveyor_broker_up 1.0" in metrics
    assert "conveyor_worker_nodes 1.0" in metrics


@pytest.mark.timeout(300)  # a partition on a loaded 2-core box: leases, reaping, re-runs
def test_a_partitioned_machine_cannot_give_a_job_two_outcomes(cluster: Cluster,
                                                                tmp_path: Path) -> None:
    cluster.serve()
    cluster.worker(2, machine="cutoff")
    cluster.worker(2, machine="healthy")
    client = cluster.client()
    ids = _submit(client, tmp_path, 10, "mark", options={"seconds": 6})
    deadline = time.monotonic() + 30
    while not (cut := _running_on(cluster.db_url, "cutoff")):
        assert time.monotonic() < deadline, cluster.node_logs()
        time.sleep(0.02)

    # Cut its PostgreSQL link for longer than the lease (3 s): its jobs are requeued and run
    # on the other machine while its children keep running them; after the heal their late
    # writes (heartbeats, the commit) meet a newer token. (Cutting the broker link too would
    # make Celery terminate the tasks at once: worker_cancel_long_running_tasks_on_...)
    cluster.machines["cutoff"].partition([5432])
    time.sleep(5.0)
    cluster.machines["cutoff"].heal()

    jobs = _wait_all(cluster, ids, timeout=240)
    assert {j["state"] for j in jobs.values()} == {"succeeded"}, cluster.node_logs()
    with psycopg.connect(cluster.db_url) as conn:
        ends = dict(conn.execute(
            "SELECT job_id, count(*) FROM events WHERE type IN "
            "('job.succeeded', 'job.failed', 'job.cancelled') GROUP BY job_id").fetchall())
    assert {job_id: ends.get(job_id) for job_id in ids} == dict.fromkeys(ids, 1)
    for job_id in cut:  # the cut-off machine's jobs ran again, and only one attempt counted
        assert jobs[job_id]["attempts"] >= 2
        assert jobs[job_id]["result"] == {"attempt": jobs[job_id]["attempts"]}

"""Scale-out dispatch latency: queued -> running through Celery, beside the embedded engine.

Run: ``python bench/bench_celery.py [--runs 3] [--jobs 200] [--brokers redis,amqp]``.
An idle ``conveyor worker`` Celery node (2 prefork processes) on a fresh PostgreSQL database;
jobs are committed one at a time (30 ms apart) by a store whose dispatcher publishes to the
broker, as ``conveyor serve`` does; latency is ``started_at - created_at`` (the commit to the
child's claim). The embedded row is ``bench_engine.latency("postgres")`` in the same run.
End-to-end W-noop through the HTTP API: ``python bench/run.py --targets
conveyor,conveyor-celery,celery --workloads W-noop``.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from bench.bench_engine import _add, _database, _drop, fmt, latency, pct
from conveyor.celery_app import make_app
from conveyor.dispatch.broker import BrokerDispatcher
from conveyor.settings import Settings
from conveyor.storage import BlockingStorage, LocalStorage
from conveyor.store import Store
from conveyor.store.tables import jobs

RESULTS = Path(__file__).parent / "results" / "celery.md"
BROKERS = {"redis": "redis://127.0.0.1:6379/14", "amqp": "amqp://guest:guest@127.0.0.1:5672//"}


def celery_latency(broker_url: str, n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, name = _database("postgres", folder)
        proc = None
        store = None
        try:
            settings = Settings(data_dir=folder / "api", database_url=url, broker_url=broker_url,
                                storage_url=f"file://{folder / 'files'}", shared_filesystem=True)
            dispatcher = BrokerDispatcher(settings, make_app(settings))
            store = Store(url, run_dir=folder / "run", dispatcher=dispatcher)
            dispatcher.bind(store.dispatching)
            store.migrate()
            storage = BlockingStorage(LocalStorage(folder / "files"))
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
            env.update(CONVEYOR_DATA_DIR=str(folder / "node"), CONVEYOR_DATABASE_URL=url,
                       CONVEYOR_BROKER_URL=broker_url, CONVEYOR_LOG_LEVEL="WARNING",
                       CONVEYOR_STORAGE_URL=f"file://{folder / 'files'}",
                       CONVEYOR_SHARED_FILESYSTEM="true")
            proc = subprocess.Popen([sys.executable, "-m", "conveyor", "worker",
                                     "--concurrency", "2"], env=env, start_new_session=True)
            _add(store, storage, 1)  # warm-up: wait until the node runs jobs
            deadline = time.monotonic() + 60
            while store.jobs.count_by_state().get("succeeded", 0) < 1:
                assert time.monotonic() < deadline, "the Celery node did not start"
                time.sleep(0.05)
            time.sleep(1.0)
            for _ in range(n):
                _add(store, storage, 1)
                time.sleep(0.03)
            deadline = time.monotonic() + 120
            while store.jobs.count_by_state().get("succeeded", 0) < n + 1:
                assert time.monotonic() < deadline, "jobs did not finish"
                time.sleep(0.05)
            with store.db.reader.connect() as conn:
                rows = conn.execute(select(jobs.c.started_at - jobs.c.created_at)
                                    .order_by(jobs.c.created_at)).scalars()
                return [float(v) * 1000 for v in rows][1:]
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            if store is not None:
                store.close()
            _drop(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--brokers", default="redis,amqp")
    args = parser.parse_args()
    rows: list[tuple[str, list[float], list[float]]] = []
    engines = [("embedded (PostgreSQL NOTIFY)", lambda: latency("postgres", args.jobs))]
    for broker in args.brokers.split(","):
        url = BROKERS[broker]
        engines.append((f"Celery, {broker}", lambda url=url: celery_latency(url, args.jobs)))
    for label, measure in engines:
        p50s, p99s = [], []
        for _ in range(args.runs):
            values = measure()
            p50s.append(pct(values, 50))
            p99s.append(pct(values, 99))
        rows.append((label, p50s, p99s))
    lines = [
        "# Scale-out dispatch latency (queued -> running, idle)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared), Python {platform.python_version()}; median "
        f"(min..max) of {args.runs} runs of {args.jobs} jobs; 2 worker processes.",
        "",
        "| engine | dispatch p50 ms | dispatch p99 ms | goal |",
        "|---|---:|---:|---|",
    ]
    for label, p50s, p99s in rows:
        goal = ""
        if label.startswith("Celery"):
            goal = "p50 <= 20 ms: " + ("met" if statistics.median(p50s) <= 20 else "**MISS**")
        lines.append(f"| {label} | {fmt(p50s, 1)} | {fmt(p99s, 1)} | {goal} |")
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

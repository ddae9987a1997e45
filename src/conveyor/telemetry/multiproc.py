"""prometheus_client's multiprocess mode: one directory of per-process files, summed at scrape.

The embedded workers are separate processes (spawned by the supervisor). Each process writes its
counters and histograms to memory-mapped files named after its pid in ``PROMETHEUS_MULTIPROC_DIR``;
``/metrics`` sums them, so a worker's observations count in the server's exposition even after it
exited. This module imports nothing of prometheus_client at import time: the variable has to be
set before the library is first imported, in every process.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")


def metrics_dir(run_dir: Path) -> Path:
    """Where the per-process metric files of a data dir live."""
    return run_dir / "metrics"


def prepare(run_dir: Path, *, wipe: bool) -> Path:
    """Point prometheus_client (of this process and of its children) at ``run_dir/metrics``.

    ``wipe`` removes the files of processes that are gone (a server start): their counts
    belonged to an earlier run. Files of live processes stay, so a ``conveyor worker`` sharing
    the data dir keeps its counts when a server starts next to it.
    """
    path = metrics_dir(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    if wipe:
        for entry in path.glob("*.db"):
            match = _PID.search(entry.name)
            if match is None or not _alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
    os.environ[ENV] = str(path)
    return path


def enabled() -> bool:
    """Whether this process writes its metrics to a multiprocess directory."""
    path = os.environ.get(ENV)
    return bool(path) and Path(str(path)).is_dir()


def mark_dead(pid: int | None) -> None:
    """Bookkeeping for a reaped worker (drops its live-gauge files; counters are kept)."""
    if pid is None or not enabled():
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        # This process has written nothing yet: a file with its pid is an earlier process's.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

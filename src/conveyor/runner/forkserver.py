"""Imported by the supervisor's fork server only (its preload), never by other code.

The fork server imports the worker's code once, so that each worker it forks starts at once.
It ignores SIGTERM: ``systemctl stop`` or ``kill -TERM -PGID`` signals every process of the
group, and the fork server's death would SIGKILL its workers (their parent-death signal)
before they finish the job in hand. It still exits as soon as the supervisor is gone.

What the imports made lives as long as the workers, so it is frozen before any fork: a
worker's full collections skip it, and the pages that hold it stay shared with the fork server
instead of being copied into every worker when a collection touches them.
"""

from __future__ import annotations

import gc
import signal

import conveyor.runner.worker  # noqa: F401  (the point: imported before any fork)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
gc.collect()
gc.freeze()

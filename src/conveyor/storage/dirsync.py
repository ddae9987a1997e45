"""Shared directory fsyncs: one ``fsync`` of a directory makes every rename done before it
durable, so concurrent uploads landing in one directory share it.

A thread that needs its rename durable takes a ticket; an fsync that *starts* after the ticket
was taken covers it. While one fsync of the directory runs, the threads that arrive wait, and
the next fsync (run by one of them) covers them all: with N uploads in flight, a directory is
fsynced about twice per round instead of N times.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Dir:
    cond: threading.Condition = field(default_factory=threading.Condition)
    taken: int = 0  # tickets handed out
    covered: int = 0  # every ticket up to this one is durable
    running: bool = False


class DirSync:
    """Coalesces fsyncs per directory across the threads of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[Path, _Dir] = {}
        #: fsyncs run (a plain counter, for tests and benchmarks)
        self.fsyncs = 0

    def sync(self, path: Path) -> None:
        """Return once an fsync of ``path`` that began after this call has succeeded."""
        with self._lock:
            state = self._dirs.setdefault(path, _Dir())
        with state.cond:
            state.taken += 1
            ticket = state.taken
            while state.covered < ticket:
                if state.running:
                    state.cond.wait()
                    continue
                state.running = True
                upto = state.taken  # every rename behind these tickets happened before now
                state.cond.release()
                try:
                    self.fsyncs += 1
                    fsync_dir(path)
                finally:
                    state.cond.acquire()
                    state.running = False
                    state.cond.notify_all()
                # Reached only when the fsync succeeded (a failure raises to its own caller;
                # the waiters it covered run an fsync of their own).
                state.covered = max(state.covered, upto)
            if state.covered == state.taken and not state.running:
                # Nobody waits: forget the directory (one per job's artifacts would pile up).
                # A caller still holding this state object stays correct: its fsync starts
                # after its ticket either way.
                with self._lock:
                    if self._dirs.get(path) is state:
                        del self._dirs[path]

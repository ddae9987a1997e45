"""Cross-process wake-ups, so idle workers and event tailers don't poll.

PostgreSQL: LISTEN/NOTIFY (works across machines). SQLite (one machine): every listener binds a
Unix datagram socket in ``run_dir/<channel>/``; a notifier sends one byte to each. A listener
whose process died leaves a socket nobody reads: sending to it fails with ECONNREFUSED and the
file is removed.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import uuid
from pathlib import Path
from typing import Any, Protocol

JOBS = "jobs"
EVENTS = "events"


class Listener(Protocol):
    def fileno(self) -> int: ...

    def wait(self, timeout: float) -> bool:
        """Block until a notification or ``timeout``; True if notified. Drains pending ones."""
        ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


class SocketListener:
    def __init__(self, run_dir: Path, channel: str) -> None:
        folder = run_dir / channel
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                self.sock.recv(64)

    def wait(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if ready:
            self.drain()
        return bool(ready)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class SocketNotifier:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()

    def notify(self, channel: str) -> None:
        folder = self.run_dir / channel
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return
        for name in names:
            path = folder / name
            try:
                self.sock.sendto(b"!", str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            except (BlockingIOError, OSError):
                # A full buffer means the listener already has a wake-up pending.
                pass


class PgListener:
    def __init__(self, url: str, channel: str) -> None:
        """``url``: a SQLAlchemy or libpq PostgreSQL URL."""
        import psycopg

        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        self.conn: Any = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(f"LISTEN conveyor_{channel}")

    def fileno(self) -> int:
        return int(self.conn.fileno())

    def drain(self) -> None:
        # psycopg reads pending notifications when asked with a zero timeout.
        for _ in self.conn.notifies(timeout=0):
            pass

    def wait(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.conn.fileno()], [], [], max(timeout, 0))
        if not ready:
            return False
        got = False
        for _ in self.conn.notifies(timeout=0):
            got = True
        return got or bool(ready)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

"""Several "machines" on one box: each one a process tree in its own network, PID and UTS
namespace (``ip netns exec M unshare --pid --uts --fork --kill-child --mount-proc``), with its
own host name and scratch directory, reaching PostgreSQL and the broker only through ``socat``
bridges over Unix sockets (loopback addresses only).

SIGKILL of the namespace's PID 1 loses the machine and everything in it; stopping its bridges
is a network partition, starting them again heals it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil

from tests.conftest import need_service


def need_namespaces() -> None:
    if os.geteuid() != 0 or not all(shutil.which(c) for c in ("ip", "unshare", "socat")):
        need_service("root, ip, unshare and socat", "the multi-machine tests use namespaces")


class Machine:
    """A network namespace whose loopback ``ports`` lead to the host's, over bridges."""

    def __init__(self, name: str, root: Path, ports: list[int]) -> None:
        need_namespaces()
        self.name = name
        self.ports = ports
        self.netns = f"cv{uuid.uuid4().hex[:10]}"
        self.sockets = root / f"{name}-bridges"
        self.sockets.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"],
                       check=True)
        self.bridges: dict[int, subprocess.Popen[bytes]] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.heal()

    def _sock(self, port: int) -> Path:
        return self.sockets / f"{port}.sock"

    def heal(self) -> None:
        """Start the host side of the bridges that are down (a process group each)."""
        for port in self.ports:
            if port in self.bridges and self.bridges[port].poll() is None:
                continue
            self.bridges[port] = subprocess.Popen(
                ["socat", f"UNIX-LISTEN:{self._sock(port)},fork,unlink-early",
                 f"TCP:127.0.0.1:{port}"],
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not all(self._sock(p).exists() for p in self.ports):
            assert time.monotonic() < deadline, "bridges did not start"
            time.sleep(0.02)

    def partition(self, ports: list[int] | None = None) -> None:
        """Cut the machine off (from ``ports`` only, if given): every bridged connection
        drops, new ones fail."""
        for port in self.ports if ports is None else ports:
            bridge = self.bridges.pop(port, None)
            if bridge is not None and bridge.poll() is None:
                os.killpg(bridge.pid, signal.SIGKILL)
                bridge.wait(10)
            with contextlib.suppress(FileNotFoundError):
                self._sock(port).unlink()

    def run(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` as the machine's process tree (PID 1 is a shell that waits)."""
        inner = " ".join(
            f"socat TCP-LISTEN:{p},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{self._sock(p)} &"
            for p in self.ports)
        script = f"hostname {self.name}; {inner} sleep 0.2; {shlex.join(argv)}"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "unshare", "--pid", "--uts", "--fork",
                 "--kill-child", "--mount-proc", "sh", "-c", script],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def lose(self) -> None:
        """SIGKILL the namespace's PID 1: the kernel kills every process in it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        self.lose()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.partition()
        subprocess.run(["ip", "netns", "del", self.netns], check=False)

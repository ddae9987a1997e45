"""The S3 stand-in of the tests: moto's server mode, plus a gate that can take it "down".

- :class:`Moto` runs ``python -m moto.server`` on a free loopback port (objects live in its
  memory: keep them small). Parts may be as small as 64 KiB there (``S3_UPLOAD_PART_MIN_SIZE``),
  so multipart uploads happen with small test files (``CONVEYOR_S3_PART_BYTES``).
- :class:`Gate` is a TCP relay in front of moto: ``down()`` refuses new connections and cuts
  the open ones (an S3 outage), ``up()`` lets them through again; moto keeps its state. With
  ``rate`` it throttles every connection (a slow endpoint).
- Tests inspect the bucket directly with boto3, never through conveyor.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

BUCKET = "conveyor-test"
PART = 64 * 1024
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The session's stand-in (set by the ``moto`` fixture), for :class:`tests.conftest.Server`.
RUNNING: list[Moto] = []


class Moto:
    def __init__(self, log_dir: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Moto:
        env = {**os.environ, **CREDENTIALS, "S3_UPLOAD_PART_MIN_SIZE": str(PART)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(Exception):
                self.client().create_bucket(Bucket=BUCKET)
                return self
            time.sleep(0.2)
        raise RuntimeError("moto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def env(self, prefix: str | None = None, endpoint: str | None = None) -> dict[str, str]:
        """Environment of a conveyor using its own fresh prefix of the test bucket."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint or self.endpoint,
                "CONVEYOR_STORAGE_URL": f"s3://{BUCKET}/{prefix or uuid.uuid4().hex[:12]}",
                "CONVEYOR_S3_PART_BYTES": str(PART)}


def bucket_prefix(env: dict[str, str]) -> str | None:
    url = env.get("CONVEYOR_STORAGE_URL", "")
    return url.removeprefix(f"s3://{BUCKET}/") if url.startswith("s3://") else None


def s3_keys(moto: Moto, prefix: str, under: str = "") -> dict[str, bytes]:
    """Objects under ``prefix/under`` (keys without the prefix) and their bytes."""
    client = moto.client()
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=f"{prefix}/{under}"):
        for obj in page.get("Contents", []):
            try:
                body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            except client.exceptions.NoSuchKey:
                continue  # removed (by a sweep the test waits for) between the list and the read
            found[obj["Key"].removeprefix(f"{prefix}/")] = body
    return found


def s3_uploads(moto: Moto, prefix: str) -> list[str]:
    """Keys of the multipart uploads not completed nor aborted under ``prefix``."""
    listed = moto.client().list_multipart_uploads(Bucket=BUCKET, Prefix=f"{prefix}/")
    return [u["Key"] for u in listed.get("Uploads", [])]


class Gate:
    """A TCP relay to ``target_port`` that can refuse and cut connections (an outage)."""

    def __init__(self, target_port: int, rate: float | None = None) -> None:
        self.target = target_port
        #: Bytes per second each connection may carry (None: as fast as it goes).
        self.rate = rate
        self.carried = 0  # bytes relayed, both ways
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> Gate:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
                self.carried += len(data)
                if self.rate:  # a slow endpoint
                    time.sleep(len(data) / self.rate)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

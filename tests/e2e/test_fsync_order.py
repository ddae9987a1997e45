"""202 means durable, checked at the system calls of a real server (issue 19).

A SIGKILL cannot show a missing fsync (the page cache survives it), so this test traces a real
``conveyor serve`` with ``strace`` and checks the order of the calls that make an upload
durable, all before the 202 goes out: fsync of the temp file's bytes, rename to
``files/inputs/<id>``, fsync of the ``inputs`` directory, then the SQLite WAL sync of the job
row's commit.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import base_env, free_port, need_service

_CALL = re.compile(r"^\d+\s+(?:<\.\.\. )?(\w+)\((.*)$")
_PATH = re.compile(r"^\d+<([^>]*)>")  # strace -y: "7</full/path>"
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _strace() -> str:
    found = shutil.which("strace")
    if found is None:
        need_service("strace", "not installed (apt-get install strace)")
    probe = subprocess.run([str(found), "-f", "-o", "/dev/null", "true"], capture_output=True)
    if probe.returncode != 0:
        need_service("strace", f"cannot trace here: {probe.stderr.decode(errors='replace')}")
    return str(found)


def _calls(trace: str) -> list[tuple[str, str]]:
    """(syscall, arguments) in the order the calls were entered, resumptions skipped."""
    out = []
    for line in trace.splitlines():
        match = _CALL.match(line)
        if match and "resumed>" not in line:
            out.append((match.group(1), match.group(2)))
    return out


def _first(calls: list[tuple[str, str]], after: int, what: str, test: object) -> int:
    for i in range(after + 1, len(calls)):
        if test(*calls[i]):  # type: ignore[operator]
            return i
    context = "\n".join(f"{n}({a[:150]}" for n, a in calls[max(0, after - 5):])
    raise AssertionError(f"no {what} after call #{after}; calls from there:\n{context}")


def _fsync_of(args: str) -> str:
    match = _PATH.match(args)
    return match.group(1) if match else ""


def _is_202(name: str, args: str) -> bool:
    return name in ("sendto", "write", "writev") and "HTTP/1.1 202" in args


def test_input_fsync_rename_dirsync_commit_then_202(tmp_path: Path) -> None:
    strace = _strace()
    data_dir = tmp_path / "data"
    trace_file = tmp_path / "trace.txt"
    port = free_port()
    calls = "fsync,fdatasync,rename,renameat,renameat2,sendto,write,writev"
    proc = subprocess.Popen(
        [strace, "-f", "-y", "-s", "40", "-e", f"trace={calls}", "-o", str(trace_file),
         sys.executable, "-m", "conveyor", "serve", "--port", str(port), "--no-workers"],
        env=base_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/jobs?pipeline=noop",
                          content=b"durable bytes", timeout=30)
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        # Stop the server (not strace), so that strace ends by itself and writes everything.
        for child in psutil.Process(proc.pid).children():
            child.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            subprocess.run(["kill", "-KILL", f"-{proc.pid}"], check=False)
            proc.wait(10)

    files = data_dir / "files"
    calls_seen = _calls(trace_file.read_text(errors="replace"))
    target = str(files / "inputs" / job_id)
    rename = _first(calls_seen, -1, f"rename to {target}", lambda name, args: (
        name.startswith("rename") and _QUOTED.findall(args)[-1:] == [target]))
    temp = _QUOTED.findall(calls_seen[rename][1])[0]
    assert temp.startswith(str(files / "tmp") + "/"), temp
    # The bytes: the last sync of the temp file before the rename.
    syncs = [i for i, (name, args) in enumerate(calls_seen[:rename])
             if name in ("fsync", "fdatasync") and _fsync_of(args) == temp]
    assert syncs, f"the temp file {temp} was renamed without an fsync of its bytes"
    dir_sync = _first(calls_seen, rename, "fsync of the inputs directory", lambda name, args: (
        name == "fsync" and _fsync_of(args) == str(files / "inputs")))
    wal = str(data_dir / "conveyor.db-wal")
    commit = _first(calls_seen, dir_sync, "WAL sync (the job's commit)", lambda name, args: (
        name in ("fsync", "fdatasync") and _fsync_of(args) == wal))
    # The 202 goes out after all of them, and was not sent earlier.
    first_202 = _first(calls_seen, -1, "the 202 response", _is_202)
    assert first_202 > commit > dir_sync > rename > syncs[-1]

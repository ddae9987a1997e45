"""Plug-ins from the working directory (issue 11, item 7), with the installed ``conveyor`` command.

``CONVEYOR_PROCESSORS=myprocs`` with ``myprocs.py`` in the current directory works as it does
for uvicorn's app argument, in the API process and in the worker processes; a missing module
is one ``error:`` line and exit status 2, not an import traceback. The console script is used
on purpose: ``python -m`` would put the working directory on the path by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import base_env, free_port, need_service

MYPROCS = '''
from conveyor.processors import Context, processor


@processor("shout", description="Upper-case a text file", accepts=["text/*"])
def shout(ctx: Context) -> dict[str, str]:
    return {"text": ctx.input_path.read_text().upper()}
'''


def _command() -> Path:
    script = Path(sys.executable).with_name("conveyor")
    if not script.is_file():
        need_service("the conveyor command", f"{script} is missing (pip install -e .)")
    return script


def test_a_plugin_module_in_the_working_directory_is_found(tmp_path: Path) -> None:
    (tmp_path / "myprocs.py").write_text(MYPROCS)
    port = free_port()
    env = base_env(tmp_path / "data", CONVEYOR_PROCESSORS="myprocs", CONVEYOR_WORKERS="1")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(_command()), "serve", "--port", str(port)], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        names = {p["name"] for p in httpx.get(url + "/v1/pipelines").json()}
        assert "shout" in names
        job = httpx.post(url + "/v1/jobs", files={"file": ("a.txt", b"hello")},
                         data={"pipeline": "shout"}).json()
        deadline = time.monotonic() + 30
        while job["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
            job = httpx.get(f"{url}/v1/jobs/{job['id']}").json()
        assert job["state"] == "succeeded", job  # the worker process found it too
        assert job["result"] == {"text": "HELLO"}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_missing_plugin_module_is_one_clear_line(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", CONVEYOR_PROCESSORS="nosuchprocs")
    for args in (["serve", "--port", str(free_port())], ["worker", "--burst"]):
        done = subprocess.run([str(_command()), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: cannot load the processors 'nosuchprocs'"), lines
        assert "No module named 'nosuchprocs'" in lines[0]
        assert "Traceback" not in done.stderr + done.stdout

"""The client commands (`conveyor submit`, `jobs ...`, `pipelines`) as real subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.cli_client import parse_options
from tests.conftest import Server, free_port, module_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "cli")


def conveyor(*args: str, env: dict[str, str] | None = None,
             timeout: float = 90) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True, text=True, timeout=timeout,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_jpeg(path: Path) -> Path:
    Image.linear_gradient("L").resize((600, 400)).convert("RGB").save(path, "JPEG")
    return path


def test_parse_options_merges_json_and_pairs() -> None:
    assert parse_options(None, None) is None
    assert parse_options('{"a": 1, "b": 2}', ["b=3", "sizes=[256]", "name=cat", "q=80",
                                              "flag=true", "s=x=y"]) == {
        "a": 1, "b": 3, "sizes": [256], "name": "cat", "q": 80, "flag": True, "s": "x=y"}
    for bad in (("[1]", None), ("{", None), (None, ["novalue"]), (None, ["=1"])):
        with pytest.raises(typer.BadParameter):
            parse_options(*bad)


def test_submit_wait_out_downloads_the_artifacts(live: Server, tmp_path: Path) -> None:
    src = make_jpeg(tmp_path / "photo.jpg")
    out = tmp_path / "results"
    run = conveyor("submit", str(src), "--pipeline", "image", "--option", "sizes=[256]",
                   "--url", live.url, "--wait", "--out", str(out))
    assert run.returncode == 0, run.stderr
    (job_id,) = run.stdout.split()
    job = httpx.get(f"{live.url}/v1/jobs/{job_id}", timeout=10).json()
    assert job["state"] == "succeeded" and job["options"]["sizes"] == [256]
    assert job["input"]["sha256"] == sha256(src)
    saved = out / job_id / "w256.webp"
    assert saved.is_file()
    (art,) = [a for a in job["artifacts"] if a["name"] == "w256.webp"]
    assert sha256(saved) == art["sha256"]
    assert {p.name for p in (out / job_id).iterdir()} == {a["name"] for a in job["artifacts"]}

    listed = conveyor("jobs", "list", "--json", "--url", live.url)
    assert listed.returncode == 0, listed.stderr
    assert job_id in [j["id"] for j in json.loads(listed.stdout)["items"]]
    table = conveyor("jobs", "list", "--pipeline", "image", env={"CONVEYOR_URL": live.url})
    assert table.returncode == 0 and job_id in table.stdout and "succeeded" in table.stdout

    shown = conveyor("jobs", "show", job_id, "--url", live.url)
    assert shown.returncode == 0, shown.stderr
    assert job_id in shown.stdout and "succeeded" in shown.stdout and "w256.webp" in shown.stdout
    as_json = conveyor("jobs", "show", job_id, "--json", "--url", live.url)
    assert json.loads(as_json.stdout)["artifacts"] == job["artifacts"]


def test_submit_many_without_wait_prints_ids(live: Server, tmp_path: Path) -> None:
    files = []
    for i in range(2):
        files.append(tmp_path / f"t{i}.txt")
        files[-1].write_text(f"text {i}\n")
    run = conveyor("submit", *map(str, files), "--pipeline", "probe",
                   "--options", '{"x": 1}', "--option", "x=2", "--url", live.url)
    # probe takes no "x": the options are refused, per file, with the server's code.
    assert run.returncode == 1
    assert run.stderr.count("error bad_options") == 2, run.stderr
    ok = conveyor("submit", *map(str, files), "--pipeline", "probe", "--priority", "5",
                  "--url", live.url)
    assert ok.returncode == 0, ok.stderr
    ids = ok.stdout.split()
    assert len(ids) == 2 and len(set(ids)) == 2
    for job_id in ids:
        assert live.wait_state(job_id)["priority"] == 5


def test_pipelines_json_lists_image(live: Server) -> None:
    run = conveyor("pipelines", "--json", "--url", live.url)
    assert run.returncode == 0, run.stderr
    names = {p["name"] for p in json.loads(run.stdout)}
    assert {"image", "probe", "sleep"} <= names
    table = conveyor("pipelines", "--url", live.url)
    assert table.returncode == 0 and "image" in table.stdout


def test_failed_job_exits_non_zero_with_its_code(live: Server, tmp_path: Path) -> None:
    src = tmp_path / "refused.txt"
    src.write_text("no\n")
    run = conveyor("submit", str(src), "--pipeline", "fail", "--wait", "--url", live.url)
    assert run.returncode != 0
    assert "bad_input" in run.stderr and "refused on purpose" in run.stderr
    assert len(run.stdout.split()) == 1  # the id is still printed


def test_unknown_pipeline_is_a_client_error(live: Server, tmp_path: Path) -> None:
    src = tmp_path / "x.txt"
    src.write_text("x\n")
    run = conveyor("submit", str(src), "--pipeline", "nope", "--url", live.url)
    assert run.returncode == 1
    assert "error unknown_pipeline:" in run.stderr
    missing = conveyor("jobs", "show", "01J0000000000000000000NONE", "--url", live.url)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error not_found: ")


def test_cancel_retry_delete(live: Server, tmp_path: Path) -> None:
    src = tmp_path / "z.txt"
    src.write_text("z\n")
    run = conveyor("submit", str(src), "--pipeline", "sleep", "--option", "seconds=30",
                   "--option", "steps=300",
                   "--url", live.url)
    job_id = run.stdout.strip()
    cancel = conveyor("jobs", "cancel", job_id, "--url", live.url)
    assert cancel.returncode == 0, cancel.stderr
    assert live.wait_state(job_id)["state"] == "cancelled"
    again = conveyor("jobs", "cancel", job_id, "--url", live.url)
    assert again.returncode == 1 and "error conflict:" in again.stderr
    retry = conveyor("jobs", "retry", job_id, "--url", live.url)
    assert retry.returncode == 0 and job_id in retry.stdout
    conveyor("jobs", "cancel", job_id, "--url", live.url)
    live.wait_state(job_id)
    delete = conveyor("jobs", "delete", job_id, "--url", live.url)
    assert delete.returncode == 0 and "deleted" in delete.stdout
    gone = conveyor("jobs", "show", job_id, "--url", live.url)
    assert gone.returncode == 1 and "error gone:" in gone.stderr


@pytest.mark.parametrize(("url", "args", "code"), [
    ("http://127.0.0.1:{port}", ["submit", "{file}", "--wait"], "unreachable"),
    ("http://127.0.0.1:{port}", ["pipelines"], "unreachable"),
    ("not a url", ["jobs", "list"], "bad_url"),
])
def test_bad_url_is_a_clear_error(tmp_path: Path, url: str, args: list[str], code: str) -> None:
    src = tmp_path / "x.txt"
    src.write_text("x\n")
    url = url.format(port=free_port())
    run = conveyor(*[a.format(file=src) for a in args], "--url", url)
    assert run.returncode == 1, run
    assert run.stderr.startswith(f"error {code}: "), run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("args", [
    ["submit"], ["jobs"], ["jobs", "list"], ["jobs", "show"], ["jobs", "cancel"],
    ["jobs", "retry"], ["jobs", "delete"], ["pipelines"],
])
def test_every_command_has_help(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "--url" in result.output or args == ["jobs"]

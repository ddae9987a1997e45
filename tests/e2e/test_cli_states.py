"""The CLI prints what happened (issue 11, item 10): the state after a cancel or retry, each job's
final state and error with ``submit --wait``, the pipeline ``auto`` routed to, and no ``<bool>``
after plain flags in the help. Real ``conveyor`` subprocesses against a real server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from tests.conftest import Server, module_server

from .test_cli import conveyor, make_jpeg


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "cli-states")


def test_cancel_and_retry_print_the_state_after_the_change(live: Server, tmp_path: Path) -> None:
    src = tmp_path / "slow.txt"
    src.write_text("slow\n")
    sub = conveyor("submit", str(src), "--pipeline", "sleep", "--options",
                   '{"seconds": 60, "steps": 600}', "--url", live.url)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip()
    live.wait_state(job_id, ("running",))
    cancel = conveyor("jobs", "cancel", job_id, "--url", live.url)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout.split() == [job_id, "cancelled"], cancel.stdout
    retry = conveyor("jobs", "retry", job_id, "--url", live.url)
    assert retry.returncode == 0, retry.stderr
    (shown_id, state) = retry.stdout.split()
    assert shown_id == job_id and state in ("queued", "running"), retry.stdout
    conveyor("jobs", "cancel", job_id, "--url", live.url)
    assert live.wait_state(job_id)["state"] == "cancelled"


def test_submit_wait_prints_final_states_errors_and_saved_files(
    live: Server, tmp_path: Path
) -> None:
    good = make_jpeg(tmp_path / "photo.jpg")
    out = tmp_path / "results"
    run = conveyor("submit", str(good), "--option", 'image={"sizes": [64]}', "--wait",
                   "--out", str(out), "--url", live.url)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    assert re.search(rf"^{job_id} succeeded auto→image ", run.stderr, re.M), run.stderr
    assert f"saved {out / job_id / 'w64.webp'}" in run.stderr, run.stderr

    bad = tmp_path / "refused.txt"
    bad.write_text("no\n")
    failed = conveyor("submit", str(bad), str(good), "--pipeline", "fail", "--wait",
                      "--url", live.url)
    assert failed.returncode == 1
    ids = failed.stdout.split()
    assert len(ids) == 2
    for job_id in ids:
        assert re.search(rf"^{job_id} failed fail ", failed.stderr, re.M), failed.stderr
    assert failed.stderr.count("error bad_input:") == 2, failed.stderr


def test_jobs_list_shows_where_auto_routed(live: Server, tmp_path: Path) -> None:
    src = make_jpeg(tmp_path / "photo.jpg")
    run = conveyor("submit", str(src), "--wait", "--url", live.url)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    listed = conveyor("jobs", "list", "--url", live.url)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if job_id in line]
    assert "auto→image" in row, listed.stdout


@pytest.mark.parametrize("args", [
    [], ["serve"], ["worker"], ["submit"], ["jobs", "list"], ["jobs", "show"],
    ["jobs", "cancel"], ["jobs", "retry"], ["jobs", "delete"], ["pipelines"],
])
def test_help_shows_no_type_after_plain_flags(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output, result.output

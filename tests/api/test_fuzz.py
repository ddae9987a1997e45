"""The HTTP contract under a fuzzer: schemathesis against a real ``conveyor serve``.

Every check (``--checks all``), a fixed seed and a bounded number of examples, in all phases:
examples, coverage, fuzzing and stateful (the OpenAPI links of :mod:`conveyor.api.links` chain
create → get → cancel/retry → delete). The SSE routes stream until the client leaves, so the
fuzzer reads at most one event from them or stops after 2 s of silence (per-operation settings
in ``schemathesis.toml``); their behaviour is tested directly below too. What the OpenAPI
document cannot state is in ``schemathesis.toml`` and ``fuzz_hooks.py``, each with its reason.

The defects the fuzzer found have their own regression tests at the end of this module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, module_server, need_module

HERE = Path(__file__).resolve().parent
SEED = 20261130
#: Per operation and phase; the SSE routes take fewer (schemathesis.toml).
MAX_EXAMPLES = 15

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Open on purpose (CONVEYOR_AUTH=none): a key the fuzzer makes with POST /v1/keys must not
    # close the server to the rest of the run. Authentication has its own tests (tests/auth).
    yield from module_server(tmp_path_factory, "fuzz", CONVEYOR_MAX_UPLOAD_BYTES=str(1 << 20),
                             CONVEYOR_AUTH="none")


def _schemathesis() -> list[str]:
    need_module("schemathesis", "the contract fuzz test (pip install -e '.[dev]')")
    return [sys.executable, "-m", "schemathesis.cli"]


@pytest.mark.timeout(300)  # about 40 s alone on two cores; room for a loaded machine
def test_the_contract_holds_under_schemathesis(fuzzed: Server, tmp_path: Path) -> None:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [
        *_schemathesis(), "--config-file", str(HERE / "schemathesis.toml"),
        "run", f"{fuzzed.url}/openapi.json",
        "--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "10",
        "--workers", "2", "--no-color", "--report", "junit", "--report-dir", str(tmp_path),
    ]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=280, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found failures:\n{output[-20000:]}\n{fuzzed.log()}"
    # The run really exercised the API: every operation, and stateful scenarios through links.
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", output)
    assert selected and selected[1] == selected[2] and int(selected[1]) >= 17, output
    scenarios = re.search(r"Scenarios:\s+(\d+)", output)
    assert scenarios and int(scenarios[1]) > 0, output
    links = re.search(r"API Links:\s+(\d+) covered", output)
    assert links and int(links[1]) > 0, output


def test_sse_routes_stream_and_end(fuzzed: Server) -> None:
    """What the fuzzer only samples: a job's stream ends after its terminal event."""
    job = httpx.post(f"{fuzzed.url}/v1/jobs?pipeline=noop&filename=a.txt", content=b"x").json()
    fuzzed.wait_state(job["id"])
    with httpx.stream("GET", f"{fuzzed.url}/v1/jobs/{job['id']}/events", timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = b"".join(resp.iter_bytes())  # ends by itself: the job is finished
    assert b"succeeded" in body
    with httpx.stream("GET", f"{fuzzed.url}/v1/events", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert next(resp.iter_bytes()).startswith(b"retry:")


# Regression tests for what the fuzzer found (see the report in CHANGELOG.md).


def _problem(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code


@pytest.mark.parametrize("name", ["priority", "max_attempts", "timeout_s"])
def test_an_empty_number_is_refused_not_ignored(fuzzed: Server, name: str) -> None:
    raw = httpx.post(f"{fuzzed.url}/v1/jobs?pipeline=noop&filename=a&{name}=", content=b"x")
    _problem(raw, 422, "bad_parameter")
    form = httpx.post(f"{fuzzed.url}/v1/jobs", files={"file": ("a", b"x")},
                      data={"pipeline": "noop", name: ""})
    _problem(form, 422, "bad_parameter")


def test_an_empty_webhook_url_is_refused_not_ignored(fuzzed: Server) -> None:
    raw = httpx.post(f"{fuzzed.url}/v1/jobs?pipeline=noop&filename=a&webhook_url=", content=b"x")
    _problem(raw, 422, "bad_webhook_url")
    form = httpx.post(f"{fuzzed.url}/v1/jobs", files={"file": ("a", b"x")},
                      data={"pipeline": "noop", "webhook_url": " "})
    _problem(form, 422, "bad_webhook_url")


def test_a_bad_request_with_a_gone_idempotency_key_is_about_itself(fuzzed: Server) -> None:
    """Parameters are checked before the key: a bad request is a 422, not the key's 410."""
    headers = {"Idempotency-Key": "fuzz-gone-1"}
    first = httpx.post(f"{fuzzed.url}/v1/jobs?pipeline=noop&filename=a", content=b"x",
                       headers=headers)
    fuzzed.wait_state(first.json()["id"])
    assert httpx.delete(f"{fuzzed.url}/v1/jobs/{first.json()['id']}").status_code == 204
    raw = httpx.post(f"{fuzzed.url}/v1/jobs?pipeline=noop&filename=a&priority=1001",
                     content=b"x", headers=headers)
    _problem(raw, 422, "bad_parameter")
    form = httpx.post(f"{fuzzed.url}/v1/jobs", files={"file": ("a", b"x")},
                      data={"pipeline": "noop", "priority": "1001"}, headers=headers)
    _problem(form, 422, "bad_parameter")
    both = httpx.post(f"{fuzzed.url}/v1/jobs?priority=1", files={"file": ("a", b"x")},
                      headers=headers)
    _problem(both, 422, "bad_parameter")
    valid = httpx.post(f"{fuzzed.url}/v1/jobs", files={"file": ("a", b"x")},
                       data={"pipeline": "noop"}, headers=headers)
    _problem(valid, 410, "gone")


def test_openapi_declares_artifact_types_links_and_webhook_form(fuzzed: Server) -> None:
    doc = httpx.get(f"{fuzzed.url}/openapi.json").json()
    artifact = doc["paths"]["/v1/jobs/{job_id}/artifacts/{name}"]["get"]["responses"]["200"]
    assert list(artifact["content"]) == ["*/*"]  # served with the artifact's own type
    created = doc["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]
    ops = {op["operationId"]: (method, path) for path, item in doc["paths"].items()
           for method, op in item.items()}
    targets = {name: ops[link["operationId"]] for name, link in created.items()}
    assert targets["GetJob"] == ("get", "/v1/jobs/{job_id}")
    assert targets["CancelJob"] == ("post", "/v1/jobs/{job_id}/cancel")
    assert targets["DeleteJob"] == ("delete", "/v1/jobs/{job_id}")
    assert created["GetJob"]["parameters"] == {"job_id": "$response.body#/id"}
    form = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["webhook_url"]["pattern"] == "^https?://"

"""NaN and infinities, which JSON has no numbers for, never reach a client as ``NaN``: a
strict parser (a browser's ``JSON.parse``) refuses the whole document. They are null in the
job, its events and its webhook; a table's profile names them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from conveyor.store.database import dumps
from tests.conftest import Server
from tests.webhooks.receiver import Receiver


def _strict(text: str | bytes) -> Any:
    def refuse(word: str) -> None:
        raise AssertionError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_dumps_writes_null_for_nan_and_infinities() -> None:
    value = {"a": float("nan"), "b": [float("inf"), 1.5, (-float("inf"),)], "c": {"d": 2}}
    assert dumps(value) == '{"a":null,"b":[null,1.5,[null]],"c":{"d":2}}'
    assert dumps({"plain": 1.5}) == '{"plain":1.5}'


def test_a_result_with_nan_reaches_every_client_as_json(
        server_factory: Callable[..., Server]) -> None:
    hook = Receiver()
    srv = server_factory(CONVEYOR_WEBHOOK_ALLOW_PRIVATE="127.0.0.0/8")
    try:
        r = httpx.post(f"{srv.url}/v1/jobs", files={"file": ("x.txt", b"x")}, timeout=30,
                       data={"pipeline": "nonfinite", "webhook_url": hook.url})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert srv.wait_state(job_id)["state"] == "succeeded"
        expected = {"nan": None, "inf": [None, None], "ok": 1.5}
        job = _strict(httpx.get(f"{srv.url}/v1/jobs/{job_id}", timeout=10).text)
        assert job["result"] == expected
        events = httpx.get(f"{srv.url}/v1/jobs/{job_id}/events", timeout=10).text
        data = [_strict(line[len("data: "):]) for line in events.splitlines()
                if line.startswith("data: ")]
        progress = [d["data"] for d in data if d["type"] == "job.progress"]
        assert {"fraction": 0.0, "message": "not a number"} in progress
        assert [d["data"]["result"] for d in data if d["type"] == "job.succeeded"] == [expected]
        _headers, body = hook.for_job(job_id)
        assert _strict(body)["data"]["result"] == expected
    finally:
        hook.close()


def test_a_table_profile_names_nan_and_infinities(
        server_factory: Callable[..., Server], tmp_path: Path) -> None:
    srv = server_factory(CONVEYOR_WORKERS="1")
    r = httpx.post(f"{srv.url}/v1/jobs", data={"pipeline": "table"}, timeout=30,
                   files={"file": ("n.csv", b"x,y\n1.5,a\nnan,b\ninf,c\n-inf,d\n", "text/csv")})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert srv.wait_state(job_id)["state"] == "succeeded"
    raw = httpx.get(f"{srv.url}/v1/jobs/{job_id}/artifacts/profile.json", timeout=10).text
    x = next(c for c in _strict(raw)["columns"] if c["name"] == "x")
    assert x["type"] == "DOUBLE" and x["mean"] is None
    assert {v["value"] for v in x["top_values"]} == {1.5, "NaN", "Infinity", "-Infinity"}

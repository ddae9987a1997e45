"""What tenants share nothing of: idempotency keys, the global event stream, child jobs."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile

import httpx

from tests.auth.conftest import Keyed


def test_idempotency_keys_are_per_tenant(keyed: Keyed) -> None:
    def post(role: str, data: bytes) -> httpx.Response:
        return httpx.post(f"{keyed.url}/v1/jobs", files={"file": ("f.bin", data)},
                          data={"pipeline": "echo"}, timeout=30,
                          headers={**keyed.h(role), "Idempotency-Key": "same-key-1"})

    a1 = post("rw", b"a's file")
    b1 = post("b", b"b's different file")
    assert a1.status_code == 202 and b1.status_code == 202, (a1.text, b1.text)
    assert a1.json()["id"] != b1.json()["id"]
    # Each tenant's key replays its own job, and only its own.
    a2 = post("rw", b"a's file")
    b2 = post("b", b"b's different file")
    assert (a2.status_code, a2.json()["id"]) == (200, a1.json()["id"])
    assert (b2.status_code, b2.json()["id"]) == (200, b1.json()["id"])
    # The same key with another file is refused within the tenant, as before.
    a3 = post("rw", b"something else")
    assert a3.status_code == 422 and a3.json()["code"] == "idempotency_key_reused"


def _collect(url: str, headers: dict[str, str], into: list[dict[str, object]],
             ready: threading.Event, stop: threading.Event) -> None:
    with httpx.stream("GET", url, headers=headers, timeout=60) as resp:
        assert resp.status_code == 200
        ready.set()
        for line in resp.iter_lines():
            if line.startswith("data: "):
                into.append(json.loads(line[6:]))
            if stop.is_set():
                return


def test_the_global_stream_carries_only_the_callers_tenant(keyed: Keyed) -> None:
    # (key, ?tenant=): each tenant's own stream, and an admin's of tenant b and of every tenant.
    streams = {"rw": ("rw", None), "b": ("b", None), "admin_b": ("admin", "b"),
               "admin_all": ("admin", "*")}
    seen: dict[str, list[dict[str, object]]] = {name: [] for name in streams}
    stop = threading.Event()
    threads = []
    for name, (role, tenant) in streams.items():
        ready = threading.Event()
        query = f"?tenant={tenant}" if tenant else ""
        t = threading.Thread(target=_collect, daemon=True, args=(
            f"{keyed.url}/v1/events{query}", keyed.h(role), seen[name], ready, stop))
        t.start()
        assert ready.wait(30)
        threads.append(t)
    a_job = keyed.submit("rw", "echo", b"a live")
    b_job = keyed.submit("b", "echo", b"b live")
    keyed.wait("rw", a_job)
    keyed.wait("b", b_job)

    def ended(name: str, job_id: str) -> bool:
        return any(e["job_id"] == job_id and e["type"] == "job.succeeded" for e in seen[name])

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
            ended("rw", a_job) and ended("b", b_job) and ended("admin_b", b_job)
            and ended("admin_all", a_job) and ended("admin_all", b_job)):
        time.sleep(0.05)
    stop.set()
    assert {e["job_id"] for e in seen["rw"]} >= {a_job}
    assert b_job not in {e["job_id"] for e in seen["rw"]}
    assert {e["job_id"] for e in seen["b"]} >= {b_job}
    assert a_job not in {e["job_id"] for e in seen["b"]}
    assert {e["job_id"] for e in seen["admin_b"]} >= {b_job}
    assert a_job not in {e["job_id"] for e in seen["admin_b"]}
    assert {e["job_id"] for e in seen["admin_all"]} >= {a_job, b_job}
    # Only an admin key may name another tenant.
    refused = httpx.get(f"{keyed.url}/v1/events", params={"tenant": "a"},
                        headers=keyed.h("b"), timeout=30)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    # Replayed from the start, too, each sees only its own; the admin's `*`, everyone's.
    text = _replay(keyed, "b")
    assert b_job.encode() in text and a_job.encode() not in text
    text = _replay(keyed, "admin", tenant="*")
    assert b_job.encode() in text and a_job.encode() in text


def _replay(keyed: Keyed, role: str, **params: str) -> bytes:
    """What ``GET /v1/events?after=0`` sends ``role`` in its first 1.5 s or so."""
    with httpx.stream("GET", f"{keyed.url}/v1/events", params={"after": 0, **params},
                      headers=keyed.h(role), timeout=30) as resp:
        text = b""
        end = time.monotonic() + 1.5
        for chunk in resp.iter_raw():
            text += chunk
            if time.monotonic() > end:
                break
    return text


def test_child_jobs_belong_to_the_parents_tenant(keyed: Keyed) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("one.txt", "one\n")
        zf.writestr("two.csv", "a,b\n1,2\n")
    parent = keyed.submit("b", "archive", buf.getvalue())
    assert keyed.wait("b", parent)["state"] == "succeeded"
    children = httpx.get(f"{keyed.url}/v1/jobs", params={"parent_id": parent},
                         headers=keyed.h("b")).json()["items"]
    assert len(children) == 2
    for child in children:
        assert httpx.get(f"{keyed.url}/v1/jobs/{child['id']}",
                         headers=keyed.h("b")).status_code == 200
        assert httpx.get(f"{keyed.url}/v1/jobs/{child['id']}",
                         headers=keyed.h("rw")).status_code == 404
    as_a = httpx.get(f"{keyed.url}/v1/jobs", params={"parent_id": parent},
                     headers=keyed.h("rw")).json()["items"]
    assert as_a == []

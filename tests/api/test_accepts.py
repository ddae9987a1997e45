"""What a pipeline accepts (issue 11, items 8 and 9): a plug-in's ``accepts`` is enforced at run
time (``unsupported_format``, not retried), built-ins still take what they should, and ``auto``
routes a plain-text CSV by its declared type or its extension.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from conveyor.processors.base import accepts_type
from conveyor.processors.sniff import sniff
from tests.conftest import Server, module_server

#: One ragged row: the sniffer's CSV test fails on it, so its bytes look like plain text.
RAGGED_CSV = b"name,city,zip\nAna,Lyon,69001\nBo,Nice\nCy,Metz,57000\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "accepts")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "JPEG")
    return out.getvalue()


def _submit(srv: Server, name: str, data: bytes, pipeline: str,
            content_type: str = "application/octet-stream") -> dict[str, object]:
    resp = httpx.post(f"{srv.url}/v1/jobs", files={"file": (name, data, content_type)},
                      data={"pipeline": pipeline}, timeout=30)
    assert resp.status_code == 202, resp.text
    return srv.wait_state(resp.json()["id"])


def test_a_plugin_refuses_a_type_it_does_not_accept(srv: Server) -> None:
    job = _submit(srv, "photo.jpg", _jpeg(), "words")
    assert job["state"] == "failed", job
    error = job["error"]
    assert isinstance(error, dict)
    assert error["code"] == "unsupported_format" and error["retryable"] is False, error
    assert "image/jpeg" in error["message"] and "text/*" in error["message"]
    assert job["attempts"] == 1  # failed fast: never retried


def test_a_plugin_takes_what_it_accepts(srv: Server) -> None:
    job = _submit(srv, "note.txt", b"three small words", "words")
    assert job["state"] == "succeeded", job
    assert job["result"] == {"words": 3}


@pytest.mark.parametrize("pipeline", ["auto", "probe"])
def test_builtins_accepting_anything_still_take_a_jpeg(srv: Server, pipeline: str) -> None:
    job = _submit(srv, "photo.jpg", _jpeg(), pipeline)
    assert job["state"] == "succeeded", job


def test_pipelines_list_what_they_accept(srv: Server) -> None:
    listed = {p["name"]: p["accepts"] for p in httpx.get(f"{srv.url}/v1/pipelines").json()}
    assert listed["words"] == ["text/*"]
    assert listed["auto"] == ["*/*"] and listed["probe"] == ["*/*"]
    assert "text/csv" in listed["table"] and "text/plain" in listed["table"]


def test_auto_routes_a_ragged_csv_by_its_declared_type(srv: Server) -> None:
    assert sniff(RAGGED_CSV) == "text/plain"  # the bytes alone do not say CSV
    job = _submit(srv, "people.csv", RAGGED_CSV, "auto", "text/csv")
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert isinstance(result, dict)
    assert result["routed_to"] == "table", result
    assert (result["rows"], result["rejected"]) == (2, 1), result


@pytest.mark.parametrize(("name", "declared", "routed"), [
    ("people.csv", "application/octet-stream", "table"),  # the extension says CSV
    ("people", "text/csv", "table"),                       # the declared type says CSV
    ("people.txt", "text/plain", "probe"),                 # nothing says CSV: plain text
])
def test_auto_uses_the_name_or_type_only_for_plain_text(
    srv: Server, name: str, declared: str, routed: str
) -> None:
    job = _submit(srv, name, RAGGED_CSV, "auto", declared)
    result = job["result"]
    assert isinstance(result, dict) and result["routed_to"] == routed, job


def test_a_declared_type_never_overrides_recognised_bytes() -> None:
    assert sniff(_jpeg(), "fake.csv", "text/csv") == "image/jpeg"
    assert sniff(b'{"a": 1}', "x.csv", "text/csv") == "application/json"


@pytest.mark.parametrize(("patterns", "media_type", "ok"), [
    (["text/*"], "text/plain", True),
    (["text/*"], "text/csv; charset=utf-8", True),
    (["text/*"], "image/jpeg", False),
    (["*/*"], "image/jpeg", True),
    (["application/pdf"], "application/PDF", True),
    (["application/pdf"], "application/pdfx", False),
    (["text/*"], "application/octet-stream", True),  # unknown: the processor decides
    (["image/png"], "application/x-empty", True),    # empty: the processor says empty_file
])
def test_accepts_type(patterns: list[str], media_type: str, ok: bool) -> None:
    assert accepts_type(patterns, media_type) is ok

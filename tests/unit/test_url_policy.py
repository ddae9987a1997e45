"""URL import's pure rules: redirects, remote statuses, guard refusals, names, the JSON body."""

from __future__ import annotations

import pytest

from conveyor.errors import BadParameter, InvalidOptions, MalformedBody, ProcessorError
from conveyor.ingest.url_policy import (
    filename_from_url,
    guard_error,
    media_type_of,
    redirect_target,
    status_error,
    too_many_redirects,
)
from conveyor.ingest.url_request import MAX_BODY_BYTES, parse_url_request
from conveyor.webhooks.ssrf import UnsafeUrl

BASE = "https://files.example.com/a/b/c.csv?x=1"


@pytest.mark.parametrize(("status", "location", "expected"), [
    (200, "/elsewhere", None),
    (304, "/elsewhere", None),
    (300, "/elsewhere", None),
    (301, "/d.csv", "https://files.example.com/d.csv"),
    (302, "d.csv", "https://files.example.com/a/b/d.csv"),
    (303, "../e", "https://files.example.com/a/e"),
    (307, "//cdn.example.net/x", "https://cdn.example.net/x"),
    (308, "http://10.0.0.1/meta", "http://10.0.0.1/meta"),  # the guard refuses it next
    (302, "?y=2", "https://files.example.com/a/b/c.csv?y=2"),
    (302, "/f#frag", "https://files.example.com/f"),
    (302, "  /g  ", "https://files.example.com/g"),
    (302, "file:///etc/passwd", "file:///etc/passwd"),  # likewise refused by the guard
])
def test_redirect_target(status: int, location: str, expected: str | None) -> None:
    assert redirect_target(BASE, status, location) == expected


@pytest.mark.parametrize("location", [None, "", "   "])
def test_a_redirect_without_location_is_a_final_url_status(location: str | None) -> None:
    with pytest.raises(ProcessorError) as err:
        redirect_target(BASE, 302, location)
    assert err.value.code == "url_status" and not err.value.retryable


@pytest.mark.parametrize(("hops", "limit", "refused"), [
    (0, 5, False), (4, 5, False), (5, 5, True), (0, 0, True), (19, 20, False),
])
def test_redirect_limit(hops: int, limit: int, refused: bool) -> None:
    error = too_many_redirects(hops, limit)
    assert (error is not None) == refused
    if error is not None:
        assert error.code == "url_status" and not error.retryable


@pytest.mark.parametrize(("status", "retryable"), [
    (200, None), (204, None), (206, None), (299, None),
    (400, False), (401, False), (403, False), (404, False), (410, False), (451, False),
    (408, True), (425, True), (429, True),
    (500, True), (502, True), (503, True), (504, True), (599, True),
    (100, False), (300, False), (304, False),
])
def test_status_error(status: int, retryable: bool | None) -> None:
    error = status_error(status)
    if retryable is None:
        assert error is None
    else:
        assert error is not None and error.code == "url_status"
        assert error.retryable is retryable
        assert str(status) in error.message


@pytest.mark.parametrize(("reason", "code", "retryable"), [
    ("resolve", "url_unreachable", True),
    ("address", "url_forbidden", False),
    ("scheme", "url_forbidden", False),
    ("userinfo", "url_forbidden", False),
    ("host", "url_forbidden", False),
    ("port", "url_forbidden", False),
    ("syntax", "url_forbidden", False),
])
def test_guard_error(reason: str, code: str, retryable: bool) -> None:
    error = guard_error(UnsafeUrl(reason, "why"))
    assert (error.code, error.retryable) == (code, retryable)


@pytest.mark.parametrize(("url", "name"), [
    ("https://x.example/a/report.pdf", "report.pdf"),
    ("https://x.example/a/report.pdf?download=1#p2", "report.pdf"),
    ("https://x.example/a/my%20file.csv", "my file.csv"),
    ("https://x.example/dir/", "dir"),
    ("https://x.example/", "upload"),
    ("https://x.example", "upload"),
    ("https://x.example/..%2F..%2Fetc%2Fpasswd", "passwd"),
    ("https://x.example/%E2%80%AEgpj.exe", "gpj.exe"),
])
def test_filename_from_url(url: str, name: str) -> None:
    assert filename_from_url(url) == name


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("text/CSV; charset=utf-8", "text/csv"),
    ("application/pdf", "application/pdf"), (" ; x=y", None),
])
def test_media_type_of(header: str | None, expected: str | None) -> None:
    assert media_type_of(header) == expected


def test_a_full_body_is_read() -> None:
    req = parse_url_request(
        b'{"url": " https://x.example/a.jpg ", "pipeline": "image", "options": {"sizes": [64]},'
        b' "priority": 7, "max_attempts": 2.0, "timeout_s": 1.5, "filename": "cat.jpg",'
        b' "webhook_url": "https://hooks.example/h"}')
    assert req.url == "https://x.example/a.jpg"
    assert req.filename == "cat.jpg"
    params = req.params
    assert (params.pipeline, params.options) == ("image", {"sizes": [64]})
    assert (params.priority, params.max_attempts, params.timeout_s) == (7, 2, 1.5)
    assert params.webhook_url == "https://hooks.example/h"


def test_defaults() -> None:
    req = parse_url_request(b'{"url": "https://x.example/dl?id=3", "options": null}')
    assert (req.params.pipeline, req.params.options, req.filename) == ("auto", None, "dl")


@pytest.mark.parametrize(("body", "error"), [
    (b"", MalformedBody),
    (b"{", MalformedBody),
    (b"[]", MalformedBody),
    (b'"https://x.example/"', MalformedBody),
    (b"\xff", MalformedBody),
    (b'{"url": "' + b"a" * MAX_BODY_BYTES + b'"}', MalformedBody),
    (b"{}", BadParameter),
    (b'{"url": null}', BadParameter),
    (b'{"url": ["https://x.example/"]}', BadParameter),
    (b'{"url": "https://x.example/", "extra": 1}', BadParameter),
    (b'{"url": "https://x.example/", "priority": true}', BadParameter),
    (b'{"url": "https://x.example/", "priority": "1"}', BadParameter),
    (b'{"url": "https://x.example/", "priority": 1.5}', BadParameter),
    (b'{"url": "https://x.example/", "timeout_s": 0}', BadParameter),
    (b'{"url": "https://x.example/", "timeout_s": NaN}', BadParameter),
    (b'{"url": "https://x.example/", "max_attempts": 1e400}', BadParameter),
    (b'{"url": "https://x.example/", "pipeline": 3}', BadParameter),
    (b'{"url": "https://x.example/", "webhook_url": ""}', BadParameter),
    (b'{"url": "https://x.example/", "options": []}', InvalidOptions),
    (b'{"url": "https://x.example/", "options": "{}"}', InvalidOptions),
    (b'{"url": "https://x.example/", "options": {"a": NaN}}', InvalidOptions),
    (b'{"url": "https://x.example/", "options": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}",
     InvalidOptions),
    (b"[" * 50_000, InvalidOptions),  # deep, under the size cap: refused before json.loads
])
def test_bad_bodies(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_url_request(body)


def test_the_url_is_only_shaped_here() -> None:
    # The SSRF guard is the route's job (it may resolve): any non-empty string passes here.
    assert parse_url_request(b'{"url": "ftp://x"}').url == "ftp://x"

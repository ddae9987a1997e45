"""The pure tus header rules (conveyor.uploads.protocol), table-driven."""

from __future__ import annotations

import base64
import hashlib

import pytest

from conveyor.errors import MalformedBody, TusError, TusVersion, UnsupportedMedia
from conveyor.uploads import protocol


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, {}),
        ("", {}),
        (f"filename {b64('a.jpg')}", {"filename": "a.jpg"}),
        (f"filename {b64('a b,c')}, is_confidential", {"filename": "a b,c",
                                                        "is_confidential": ""}),
        ("options " + b64('{"x": 1}') + ",pipeline " + b64("image"),
         {"options": '{"x": 1}', "pipeline": "image"}),
        (f"name {b64('ünï')}", {"name": "ünï"}),
    ],
)
def test_metadata_parses(header: str | None, expected: dict[str, str]) -> None:
    assert protocol.parse_metadata(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "filename not-base64!",
        f"filename {b64('a')},filename {b64('b')}",
        f"file name {b64('a')}",
        f"bad/key {b64('a')}",
        "filename " + base64.b64encode(b"\xff\xfe").decode(),  # not UTF-8
        "x " + "A" * (protocol.MAX_METADATA + 1),
    ],
)
def test_bad_metadata_is_refused(header: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        protocol.parse_metadata(header)
    assert caught.value.code == "bad_metadata"


def test_checksum_header() -> None:
    digest = hashlib.sha1(b"abc").digest()
    assert protocol.parse_checksum(None) is None
    assert protocol.parse_checksum(f"sha1 {base64.b64encode(digest).decode()}") == (
        "sha1", digest)
    with pytest.raises(TusError) as caught:
        protocol.parse_checksum("crc32 AAAA")
    assert caught.value.code == "bad_checksum_algorithm"
    for bad in ("sha1 !!!", "sha256 " + base64.b64encode(digest).decode()):
        with pytest.raises(TusError) as caught:
            protocol.parse_checksum(bad)
        assert caught.value.code == "bad_request"


@pytest.mark.parametrize("value", [None, "", "-1", "1.5", "abc", "9" * 20])
def test_integers(value: str | None) -> None:
    with pytest.raises(TusError):
        protocol.parse_int("Upload-Offset", value)


def test_version_and_type() -> None:
    protocol.check_version("1.0.0")
    for bad in (None, "0.2.2", "1.0"):
        with pytest.raises(TusVersion):
            protocol.check_version(bad)
    protocol.check_content_type("application/offset+octet-stream")
    with pytest.raises(UnsupportedMedia):
        protocol.check_content_type("application/octet-stream")


def test_http_date() -> None:
    assert protocol.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"

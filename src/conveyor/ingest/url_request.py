"""The JSON body of a URL import (``POST /v1/jobs``, ``Content-Type: application/json``): pure.

``{"url": "https://...", "pipeline": "image", "options": {...}, "webhook_url": ...,
"priority": 0, "max_attempts": 3, "timeout_s": 60, "filename": "cat.jpg"}``: the same
parameters as an upload, checked by the same rules (:func:`conveyor.ingest.params.parse_params`),
with ``options`` a JSON object rather than a JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from conveyor.errors import BadParameter, InvalidOptions, MalformedBody
from conveyor.ingest.params import (
    FIELDS,
    MAX_OPTIONS_BYTES,
    MAX_OPTIONS_DEPTH,
    JobParams,
    clean_filename,
    json_depth,
    parse_options,
    parse_params,
)
from conveyor.ingest.url_policy import filename_from_url

#: Largest JSON body taken: the options' own cap plus room for the other fields.
MAX_BODY_BYTES = MAX_OPTIONS_BYTES + 16 * 1024
#: Longest URL taken (browsers and servers rarely go past 8 KiB).
MAX_URL = 8192
_NUMBERS = ("priority", "max_attempts", "timeout_s")


@dataclass(frozen=True, slots=True)
class UrlRequest:
    url: str
    params: JobParams
    filename: str


def _text(name: str, value: Any) -> str:
    """A field as the text :func:`parse_params` checks (numbers as numbers, strings as-is)."""
    if name in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadParameter(f"{name} must be a number")
        if isinstance(value, float) and value.is_integer() and name != "timeout_s":
            return str(int(value))  # 3.0 is the integer 3 in JSON
        return repr(value)
    if not isinstance(value, str):
        raise BadParameter(f"{name} must be a string")
    return value


def parse_url_request(body: bytes) -> UrlRequest:
    """Check a URL import's body; raise ``MalformedBody`` (400) or ``BadParameter`` (422).

    The URL itself is checked here only for shape; the SSRF guard is the caller's (it may
    resolve names).
    """
    if len(body) > MAX_BODY_BYTES:
        raise MalformedBody(f"the JSON body is larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("the JSON body is not UTF-8") from None
    # Checked before json.loads, which recurses once per level (a RecursionError is a 500).
    if json_depth(text) > MAX_OPTIONS_DEPTH + 1:
        raise InvalidOptions(f"options are nested deeper than {MAX_OPTIONS_DEPTH} levels")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedBody("the JSON body must be an object")
    unknown = set(data) - {"url", *FIELDS}
    if unknown:
        raise BadParameter(f"unknown parameters: {', '.join(sorted(unknown))}")
    url = data.get("url")
    if not isinstance(url, str) or not url.strip():
        raise BadParameter("url is required: an http or https URL")
    url = url.strip()
    if len(url) > MAX_URL:
        raise BadParameter(f"url is longer than {MAX_URL} characters")
    fields: dict[str, str] = {}
    for name in FIELDS:
        value = data.get(name)
        if value is None or name == "options":
            continue
        fields[name] = _text(name, value)
    params = parse_params(fields)
    options = data.get("options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidOptions("options must be a JSON object")
        # The same size, depth and number rules as an upload's options text.
        params.options = parse_options(json.dumps(options))
    given = fields.get("filename")
    filename = clean_filename(given) if given and given.strip() else filename_from_url(url)
    return UrlRequest(url=url, params=params, filename=filename)

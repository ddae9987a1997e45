"""The OpenAPI description of ``POST /v1/jobs``'s upload forms and URL import (built from the
params rules).

FastAPI cannot infer it: the route reads the body as a stream, so the multipart schema, its
ranges and the raw body's query parameters are written here, from the same bounds and field
names that :mod:`conveyor.ingest.params` enforces.
"""

from __future__ import annotations

from typing import Any

from conveyor.ingest.params import BOUNDS, FIELDS
from conveyor.ingest.url_request import MAX_URL

_PARAM_DOC = {
    "pipeline": ("string", "the pipeline (default `auto`: routed by the sniffed type)"),
    "options": ("string", "the pipeline's options: a JSON object"),
    "webhook_url": ("string", "POSTed to on the job's terminal event"),
    "priority": ("integer", "higher runs first"),
    "max_attempts": ("integer", "attempts before the job fails"),
    "timeout_s": ("number", "seconds an attempt may run"),
    "filename": ("string", "the file's name (raw body only; multipart names the part)"),
    "reuse": ("boolean", "`true`: when this tenant already has a succeeded, live job with the "
              "same input (sha256), pipeline, options and processor version, the new job is "
              "created succeeded at once with that result and those artifacts"),
}


def _param_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _PARAM_DOC[name][0], "description": _PARAM_DOC[name][1]}
    if name in BOUNDS:
        schema["minimum"], schema["maximum"] = BOUNDS[name]
    if name == "webhook_url":
        # Only absolute http(s) URLs to an allowed host are accepted (422 bad_webhook_url).
        schema.update({"format": "uri", "pattern": "^https?://"})
    return schema


def _url_import_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "url": {"type": "string", "format": "uri", "pattern": "^https?://",
                "maxLength": MAX_URL, "description": "where the worker fetches the input"},
    }
    for name in FIELDS:
        schema = _param_schema(name)
        if name == "options":
            schema = {"type": "object", "description": "the pipeline's options"}
        elif name == "filename":
            schema["description"] = "the input's name (default: the URL path's last segment)"
        properties[name] = schema
    return {"type": "object", "required": ["url"], "additionalProperties": False,
            "properties": properties}


_URL_IMPORT = _url_import_schema()

#: The upload's request body and raw-body query parameters, for ``openapi_extra``.
UPLOAD_DOC: dict[str, Any] = {
    # The raw-body form's parameters (a multipart upload sends them as parts instead).
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": _param_schema(name),
         "description": "raw body only: " + _PARAM_DOC[name][1]}
        for name in FIELDS
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **{n: _param_schema(n) for n in FIELDS if n != "filename"},
                    },
                },
                # Text parts sent before the file are checked as they arrive.
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            },
            "application/json": {
                "schema": _URL_IMPORT,
                "description": "A URL import (when the query string is empty): a worker "
                "fetches the input from `url` as the job's first step. A URL the SSRF guard "
                "refuses at once (scheme, credentials, a private address) is 422 "
                "url_forbidden. With a query string, a JSON body is a raw upload of a JSON "
                "file instead.",
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "Any non-multipart body is the file itself; parameters go in "
                "the query string. An empty body with no `filename` (query or "
                "Content-Disposition) is not a file: 422 no_file.",
            },
        },
    }
}

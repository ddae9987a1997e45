"""Pure checks of upload parameters and file names (no I/O)."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from conveyor.problems import Problem

MAX_FILENAME = 255
#: Bidirectional overrides and isolates: they make ``\u202Egpj.exe`` display as ``exe.jpg``.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def clean_filename(raw: str | bytes | None) -> str:
    """A safe display name: the last path component, printable, at most 255 characters.

    The name is only ever shown; storage keys are generated, never taken from the client.
    """
    if raw is None:
        return "upload"
    name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    name = name.replace("\\", "/").split("/")[-1]
    name = _BIDI.sub("", name)
    name = "".join(
        ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in '<>:"|?*'
    )
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME]
    return name or "upload"


@dataclass(slots=True)
class JobParams:
    pipeline: str = "auto"
    options: Any = None
    webhook_url: str | None = None
    priority: int = 0
    max_attempts: int | None = None
    timeout_s: float | None = None


_BOUNDS: dict[str, tuple[float, float]] = {
    "priority": (-1000, 1000),
    "max_attempts": (1, 100),
    "timeout_s": (0.001, 7 * 86400),
}


def parse_params(fields: dict[str, str]) -> JobParams:
    """Validate the text fields of an upload (form parts or query parameters)."""
    params = JobParams()
    unknown = set(fields) - {"pipeline", "options", "webhook_url", "priority", "max_attempts",
                             "timeout_s", "filename"}
    if unknown:
        raise Problem(422, "bad_parameter", f"unknown parameters: {', '.join(sorted(unknown))}")
    if "pipeline" in fields:
        params.pipeline = fields["pipeline"].strip() or "auto"
    if fields.get("options", "").strip():
        try:
            options = json.loads(fields["options"])
        except ValueError as exc:
            raise Problem(422, "bad_options", f"options are not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise Problem(422, "bad_options", "options must be a JSON object")
        params.options = options
    if fields.get("webhook_url", "").strip():
        params.webhook_url = fields["webhook_url"].strip()
    for name, (low, high) in _BOUNDS.items():
        raw = fields.get(name, "").strip()
        if not raw:
            continue
        try:
            value: float = int(raw) if name != "timeout_s" else float(raw)
        except ValueError:
            raise Problem(422, "bad_parameter", f"{name} must be a number") from None
        if not low <= value <= high:
            raise Problem(422, "bad_parameter", f"{name} must be between {low:g} and {high:g}")
        setattr(params, name, value)
    return params


def parse_content_disposition_filename(header: str | None) -> str | None:
    if not header:
        return None
    from python_multipart.multipart import parse_options_header

    _value, options = parse_options_header(header)
    raw = options.get(b"filename")
    return raw.decode("utf-8", "replace") if raw is not None else None

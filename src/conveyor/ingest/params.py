"""Pure checks of upload parameters and file names (no I/O)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from conveyor.errors import BadParameter, BadWebhookUrl, InvalidOptions

MAX_FILENAME = 255
#: ``options`` deeper or longer than this is refused (422 bad_options) before ``json.loads``:
#: the decoder recurses once per level and a deep document would be a RecursionError (a 500).
MAX_OPTIONS_DEPTH = 32
MAX_OPTIONS_BYTES = 64 * 1024
#: Every parameter an upload takes (form parts, or query parameters of a raw body).
FIELDS = ("pipeline", "options", "webhook_url", "priority", "max_attempts", "timeout_s",
          "filename", "reuse")
#: How ``reuse`` may be spelt (a form field, a query parameter, or a JSON boolean as text).
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
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
    #: Reuse the result of an earlier identical job of the same tenant (store/reuse.py).
    reuse: bool = False


#: Inclusive bounds of the numeric parameters (the OpenAPI document states the same).
BOUNDS: dict[str, tuple[float, float]] = {
    "priority": (-1000, 1000),
    "max_attempts": (1, 100),
    "timeout_s": (0.001, 7 * 86400),
}


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text, ignoring string contents.

    A linear scan with no recursion, so it can run on input that ``json.loads`` cannot.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _not_finite(token: str) -> Any:
    # NaN and Infinity are not JSON: they could be stored but never served back.
    raise ValueError(f"{token} is not allowed")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{token} is out of range")
    return value


def parse_options(raw: str) -> dict[str, Any]:
    """Decode ``options``: a JSON object, at most 64 KiB and 32 levels deep, finite numbers."""
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_OPTIONS_BYTES:
        raise InvalidOptions(f"options are larger than {MAX_OPTIONS_BYTES} bytes")
    if json_depth(raw) > MAX_OPTIONS_DEPTH:
        raise InvalidOptions(f"options are nested deeper than {MAX_OPTIONS_DEPTH} levels")
    try:
        options = json.loads(raw, parse_constant=_not_finite, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise InvalidOptions(f"options are not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise InvalidOptions("options must be a JSON object")
    return options


def parse_params(fields: dict[str, str]) -> JobParams:
    """Validate the text fields of an upload (form parts or query parameters).

    Also called with the fields received so far, as each multipart text part completes, so a
    bad part is refused before the file's bytes are read.
    """
    params = JobParams()
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise BadParameter(f"unknown parameters: {', '.join(sorted(unknown))}")
    if "pipeline" in fields:
        params.pipeline = fields["pipeline"].strip() or "auto"
    if fields.get("options", "").strip():
        params.options = parse_options(fields["options"])
    if "webhook_url" in fields:
        # Sent but empty is refused, not taken as "no webhook": the field is a URL.
        params.webhook_url = fields["webhook_url"].strip()
        if not params.webhook_url:
            raise BadWebhookUrl("webhook_url is empty")
    if "reuse" in fields:
        flag = _BOOLEANS.get(str(fields["reuse"]).strip().lower())
        if flag is None:
            raise BadParameter("reuse must be true or false")
        params.reuse = flag
    for name, (low, high) in BOUNDS.items():
        if name not in fields:
            continue
        # Sent but empty is refused, not taken as "unset": `priority=` is not a number.
        raw = fields[name].strip()
        if not raw:
            raise BadParameter(f"{name} must be a number, not empty")
        try:
            value: float = int(raw) if name != "timeout_s" else float(raw)
        except ValueError:
            raise BadParameter(f"{name} must be a number") from None
        if not low <= value <= high:
            raise BadParameter(f"{name} must be between {low:g} and {high:g}")
        setattr(params, name, value)
    return params


def parse_content_disposition_filename(header: str | None) -> str | None:
    if not header:
        return None
    from python_multipart.multipart import parse_options_header

    _value, options = parse_options_header(header)
    raw = options.get(b"filename")
    return raw.decode("utf-8", "replace") if raw is not None else None

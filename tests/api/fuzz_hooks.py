"""Schemathesis hook for tests/api/test_fuzz.py: keep the fuzzer's traffic on loopback.

A generated ``webhook_url`` that looks like an http(s) URL would make the server resolve its host
(a DNS query off this machine) and, if allowed, POST to it later. Such a URL is replaced by a
loopback literal, which the server's SSRF guard refuses at once (422 bad_webhook_url) with no
lookup and no connection; so is a URL import's ``url`` (422 url_forbidden). Any other value
(not http/https, empty, not a string) is left alone: the server refuses it on its form. Webhooks
and URL imports have their own tests (tests/webhooks, tests/api/test_url_import.py).

The admin routes that change a tenant (quotas, deletion) are fuzzed on another tenant than
``default``, the open server's own: a generated ``max_upload_bytes: 0`` on it would make every
later upload of the run a (correct) 413. Quotas have their own tests (tests/api/test_quotas.py).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import Case
from schemathesis.hooks import HookContext

#: Refused by the SSRF guard (a loopback address) without any DNS lookup.
LOOPBACK_HOOK = "http://127.0.0.1:9/hook"
#: Likewise for a URL import's ``url`` (422 url_forbidden: the fuzzed server allows no private
#: address), so no fetch ever leaves the machine.
LOOPBACK_IMPORT = "http://127.0.0.1:9/file"


def _tame(values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    for name, loopback in (("webhook_url", LOOPBACK_HOOK), ("url", LOOPBACK_IMPORT)):
        url = values.get(name)
        if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
            values = {**values, name: loopback}
    return values


#: The tenant the fuzzer's quota and deletion requests change instead of ``default``.
OTHER_TENANT = "fuzz-other"


@schemathesis.hook
def map_case(context: HookContext, case: Case) -> Case:
    """Replace http(s) webhook URLs of generated uploads, and keep tenant changes off the open
    server's own tenant; other operations are left alone."""
    operation = case.operation
    if (operation.method.upper() in ("PATCH", "DELETE")
            and operation.path == "/v1/tenants/{tenant_id}"
            and (case.path_parameters or {}).get("tenant_id") == "default"):
        case.path_parameters = {**(case.path_parameters or {}), "tenant_id": OTHER_TENANT}
    if operation.method.upper() == "POST" and operation.path == "/v1/jobs":
        # Assign only on a change: an assignment marks the component for revalidation.
        query, body = _tame(case.query), _tame(case.body)
        if query is not case.query:
            case.query = query
        if body is not case.body:
            case.body = body
    return case


# tus PATCH (and creation-with-upload) bodies are raw bytes under their own media type.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

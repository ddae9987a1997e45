"""OpenAPI links: how a created job's id feeds the job's other operations.

They document the workflow (create → get → cancel/retry → delete, the input's download) and
let a stateful fuzzer (schemathesis) chain real requests instead of guessing ids. Artifacts have
no link: a job has none until it succeeds, so a link from a fresh job could not resolve.
"""

from __future__ import annotations

from typing import Any

#: Operations that take the job's id as ``job_id``, by link name: (method, path).
_JOB_OPERATIONS = {
    "GetJob": ("get", "/v1/jobs/{job_id}"),
    "CancelJob": ("post", "/v1/jobs/{job_id}/cancel"),
    "RetryJob": ("post", "/v1/jobs/{job_id}/retry"),
    "DeleteJob": ("delete", "/v1/jobs/{job_id}"),
    "ListDeliveries": ("get", "/v1/jobs/{job_id}/deliveries"),
    "DownloadInput": ("get", "/v1/jobs/{job_id}/input"),
}
_JOB_ID = {"job_id": "$response.body#/id"}
#: Responses whose body is a job (``JobOut``): the links start from each.
_JOB_RESPONSES = (
    ("post", "/v1/jobs", ("200", "202")),
    ("get", "/v1/jobs/{job_id}", ("200",)),
    ("post", "/v1/jobs/{job_id}/cancel", ("200", "202")),
    ("post", "/v1/jobs/{job_id}/retry", ("202",)),
)


def _operation_id(schema: dict[str, Any], method: str, path: str) -> str | None:
    operation = schema.get("paths", {}).get(path, {}).get(method)
    return operation.get("operationId") if isinstance(operation, dict) else None


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the links from every job-returning response to the job's operations."""
    links: dict[str, Any] = {}
    for name, (method, path) in _JOB_OPERATIONS.items():
        target = _operation_id(schema, method, path)
        if target is not None:
            links[name] = {"operationId": target, "parameters": dict(_JOB_ID)}
    for method, path, statuses in _JOB_RESPONSES:
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if not isinstance(operation, dict):
            continue
        for status in statuses:
            response = operation.get("responses", {}).get(status)
            if response is not None:
                response["links"] = dict(links)
    return schema

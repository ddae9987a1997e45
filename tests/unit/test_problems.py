"""Domain errors map to HTTP once: the table in conveyor.problems, checked per class."""

from __future__ import annotations

import pytest

from conveyor import errors
from conveyor.api.events import MAX_EVENT_ID, start_after
from conveyor.problems import CODES, code_of, status_of
from conveyor.processors.registry import BadOptions, UnknownPipeline


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.JobNotFound("x"), 404, "not_found"),
        (errors.JobGone("x"), 410, "gone"),
        (errors.JobConflict("x"), 409, "conflict"),
        (errors.UploadInFlight("x"), 409, "conflict"),
        (errors.IdempotencyKeyReused("x"), 422, "idempotency_key_reused"),
        (errors.BadEventId("x"), 400, "bad_event_id"),
        (errors.MalformedBody("x"), 400, "malformed_body"),
        (errors.MalformedBody("x", code="too_many_files"), 400, "too_many_files"),
        (errors.MalformedBody("x", code="too_many_fields"), 400, "too_many_fields"),
        (errors.MalformedBody("x", code="field_too_large"), 400, "field_too_large"),
        (errors.UploadAborted("x"), 400, "bad_request"),
        (errors.TooLarge("x"), 413, "too_large"),
        (errors.NoFile("x"), 422, "no_file"),
        (errors.BadParameter("x"), 422, "bad_parameter"),
        (errors.InvalidOptions("x"), 422, "bad_options"),
        (errors.BadWebhookUrl("x"), 422, "bad_webhook_url"),
        (errors.InsufficientStorage("x"), 507, "insufficient_storage"),
        (UnknownPipeline("x"), 422, "unknown_pipeline"),
        (BadOptions("x"), 422, "bad_options"),
        (errors.LeaseLost("x"), 500, "internal_error"),  # never an answer: a bug if it is
        (errors.ProcessorError("bad_input", "x"), 500, "internal_error"),
        (ValueError("x"), 500, "internal_error"),
    ],
)
def test_every_domain_error_has_one_status_and_code(exc: Exception, status: int,
                                                    code: str) -> None:
    assert (status_of(exc), code_of(exc)) == (status, code)
    assert code in CODES


@pytest.mark.parametrize(
    ("header", "after", "start"),
    [(None, None, None), ("5", None, 5), (" 7 ", 3, 7), ("x", 3, 3), ("x", None, None),
     ("\u00b2", 4, 4), (None, 0, 0), (str(MAX_EVENT_ID), None, MAX_EVENT_ID),
     ("0" * 5000 + "12", None, 12)],
)
def test_start_after(header: str | None, after: int | None, start: int | None) -> None:
    assert start_after(header, after) == start


@pytest.mark.parametrize(("header", "after"), [(str(2**63), None), (None, 2**63),
                                               ("9" * 100, 1), (None, -1),
                                               ("9" * 5000, None)])  # past int()'s 4,300
def test_start_after_out_of_range(header: str | None, after: int | None) -> None:
    with pytest.raises(errors.BadEventId):
        start_after(header, after)

"""Standard Webhooks signing and verification, against the spec's published test vector."""

from __future__ import annotations

import base64
import json

import pytest

from conveyor.errors import ConveyorError
from conveyor.webhooks import signing
from conveyor.webhooks.signing import (
    BoundedIdSet,
    Verifier,
    WebhookVerificationError,
    generate_secret,
    headers,
    sign,
    verify,
)

# standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py::test_sign_function
# (the same vector appears in the other reference libraries' tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# Same file, test_invalid_signature_raises_error: the last base64 character changed.
VECTOR_BAD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="

NOW = VECTOR_TS


def vector_headers(**overrides: str) -> dict[str, str]:
    result = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    result.update(overrides)
    return result


def test_sign_reproduces_the_spec_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_whsec_prefix_is_optional() -> None:
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert sign(bare, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_headers_carries_the_three_standard_headers() -> None:
    assert headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == vector_headers()


def test_verify_accepts_the_spec_vector() -> None:
    verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=NOW)


def test_verify_matches_header_names_case_insensitively() -> None:
    mixed = {"Webhook-Id": VECTOR_ID, "WEBHOOK-TIMESTAMP": str(VECTOR_TS)}
    mixed["Webhook-Signature"] = VECTOR_SIGNATURE
    verify(VECTOR_SECRET, mixed, VECTOR_BODY, now=NOW)


def test_generated_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert first != second
    body = b'{"event": "job.succeeded"}'
    verify(second, headers(second, "msg_1", NOW, body), body, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(first, headers(second, "msg_1", NOW, body), body, now=NOW)


def test_the_error_is_a_conveyor_error() -> None:
    assert issubclass(WebhookVerificationError, ConveyorError)


@pytest.mark.parametrize("index", [0, 1, len(VECTOR_BODY) - 1])
def test_a_flipped_body_byte_is_refused(index: int) -> None:
    body = bytearray(VECTOR_BODY)
    body[index] ^= 0x01
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(VECTOR_SECRET, vector_headers(), bytes(body), now=NOW)


def test_a_reserialised_body_is_refused() -> None:
    reserialised = json.dumps(json.loads(VECTOR_BODY), separators=(",", ":")).encode()
    assert reserialised != VECTOR_BODY
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(VECTOR_SECRET, vector_headers(), reserialised, now=NOW)


def test_a_changed_signature_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(
            VECTOR_SECRET,
            vector_headers(**{"webhook-signature": VECTOR_BAD_SIGNATURE}),
            VECTOR_BODY,
            now=NOW,
        )


def test_a_timestamp_301_s_old_is_refused_and_300_s_is_not() -> None:
    verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TS + 300)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TS + 301)


def test_a_timestamp_an_hour_in_the_future_is_refused() -> None:
    verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TS - 300)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TS - 3600)


def test_the_tolerance_is_configurable() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, tolerance=10, now=VECTOR_TS + 11)


def test_a_re_signed_fresh_timestamp_cannot_reuse_the_old_signature() -> None:
    # An attacker replaying the body with a current timestamp but the old signature.
    stale = vector_headers(**{"webhook-timestamp": str(VECTOR_TS + 1000)})
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(VECTOR_SECRET, stale, VECTOR_BODY, now=VECTOR_TS + 1000)


@pytest.mark.parametrize("timestamp", ["hello", "1614265330.0", "+1614265330", "-1", "1e9", "١٢"])
def test_a_timestamp_that_is_not_plain_digits_is_refused(timestamp: str) -> None:
    with pytest.raises(WebhookVerificationError, match="invalid webhook-timestamp"):
        verify(
            VECTOR_SECRET,
            vector_headers(**{"webhook-timestamp": timestamp}),
            VECTOR_BODY,
            now=NOW,
        )


def test_two_signatures_one_valid_is_accepted_during_rotation() -> None:
    old_secret = generate_secret()
    rotated = " ".join([sign(old_secret, VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIGNATURE])
    verify(VECTOR_SECRET, vector_headers(**{"webhook-signature": rotated}), VECTOR_BODY, now=NOW)
    verify(old_secret, vector_headers(**{"webhook-signature": rotated}), VECTOR_BODY, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(
            generate_secret(),
            vector_headers(**{"webhook-signature": rotated}),
            VECTOR_BODY,
            now=NOW,
        )


def test_other_versions_and_malformed_entries_are_ignored() -> None:
    digest = VECTOR_SIGNATURE.removeprefix("v1,")
    noise = f"v2,{digest} v1a,{digest} garbage v1,!!notbase64!! v1,"
    verify(
        VECTOR_SECRET,
        vector_headers(**{"webhook-signature": f"{noise} {VECTOR_SIGNATURE}"}),
        VECTOR_BODY,
        now=NOW,
    )
    # The right digest under another version label does not count.
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(
            VECTOR_SECRET,
            vector_headers(**{"webhook-signature": f"v2,{digest}"}),
            VECTOR_BODY,
            now=NOW,
        )


@pytest.mark.parametrize(
    "signature",
    [
        # Truncated (31 bytes) and extended (33 bytes) versions of the right digest.
        "v1," + base64.b64encode(base64.b64decode(VECTOR_SIGNATURE[3:])[:-1]).decode(),
        "v1," + base64.b64encode(base64.b64decode(VECTOR_SIGNATURE[3:]) + b"\0").decode(),
        "v1,",
        "v1,AAAA",
    ],
)
def test_a_signature_of_the_wrong_length_is_refused(signature: str) -> None:
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(
            VECTOR_SECRET,
            vector_headers(**{"webhook-signature": signature}),
            VECTOR_BODY,
            now=NOW,
        )


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(missing: str) -> None:
    incomplete = vector_headers()
    del incomplete[missing]
    with pytest.raises(WebhookVerificationError, match=f"missing header.*{missing}"):
        verify(VECTOR_SECRET, incomplete, VECTOR_BODY, now=NOW)


def test_an_empty_header_counts_as_missing() -> None:
    with pytest.raises(WebhookVerificationError, match=r"missing header.*webhook-id"):
        verify(VECTOR_SECRET, vector_headers(**{"webhook-id": ""}), VECTOR_BODY, now=NOW)


def test_a_replayed_id_is_refused_when_seen_ids_are_tracked() -> None:
    seen: set[str] = set()
    verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=NOW, seen_ids=seen)
    assert seen == {VECTOR_ID}
    with pytest.raises(WebhookVerificationError, match="replayed"):
        verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=NOW, seen_ids=seen)
    # Without tracking, the same message verifies again (at-least-once redelivery).
    verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=NOW)


def test_a_forged_message_does_not_poison_the_seen_ids() -> None:
    seen: set[str] = set()
    with pytest.raises(WebhookVerificationError):
        verify(VECTOR_SECRET, vector_headers(), b"{}", now=NOW, seen_ids=seen)
    assert seen == set()
    verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=NOW, seen_ids=seen)


def test_the_id_is_part_of_the_signed_content() -> None:
    other_id = vector_headers(**{"webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(VECTOR_SECRET, other_id, VECTOR_BODY, now=NOW)


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg 1", "msg\t1"])
def test_sign_refuses_ids_that_would_make_the_signed_content_ambiguous(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        sign(VECTOR_SECRET, msg_id, VECTOR_TS, VECTOR_BODY)


def test_a_dotted_id_cannot_move_the_timestamp_boundary() -> None:
    # Signed content "msg.1614265330.{...}" read back as id "msg.1614265330" would need the
    # timestamp to come from the body, which is not digits: nothing verifies.
    signed = sign(VECTOR_SECRET, "msg", VECTOR_TS, VECTOR_BODY)
    shifted = {
        "webhook-id": f"msg.{VECTOR_TS}",
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": signed,
    }
    with pytest.raises(WebhookVerificationError):
        verify(VECTOR_SECRET, shifted, VECTOR_BODY, now=NOW)


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not base64!", "whsec_####"])
def test_a_malformed_secret_is_a_value_error(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        sign(secret, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    with pytest.raises(ValueError, match="webhook secret"):
        Verifier(secret)


def test_verifier_refuses_replays_and_forgets_beyond_its_bound() -> None:
    verifier = Verifier(VECTOR_SECRET, max_seen=2)
    verifier.verify(vector_headers(), VECTOR_BODY, now=NOW)
    with pytest.raises(WebhookVerificationError, match="replayed"):
        verifier.verify(vector_headers(), VECTOR_BODY, now=NOW)

    for msg_id in ("msg_2", "msg_3"):
        verifier.verify(headers(VECTOR_SECRET, msg_id, NOW, VECTOR_BODY), VECTOR_BODY, now=NOW)
    # The first id was evicted by the two newer ones, so the cache no longer catches it.
    verifier.verify(vector_headers(), VECTOR_BODY, now=NOW)
    with pytest.raises(WebhookVerificationError, match="replayed"):
        verifier.verify(headers(VECTOR_SECRET, "msg_3", NOW, VECTOR_BODY), VECTOR_BODY, now=NOW)


def test_verifier_applies_its_tolerance() -> None:
    verifier = Verifier(VECTOR_SECRET, tolerance=5)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(vector_headers(), VECTOR_BODY, now=NOW + 6)
    verifier.verify(vector_headers(), VECTOR_BODY, now=NOW + 5)


def test_bounded_id_set_keeps_the_newest_entries() -> None:
    ids = BoundedIdSet(3)
    for item in "abcd":
        ids.add(item)
    assert list(ids) == ["b", "c", "d"]
    ids.add("b")  # re-adding refreshes it
    ids.add("e")
    assert list(ids) == ["d", "b", "e"]
    ids.discard("b")
    assert "b" not in ids and len(ids) == 2
    with pytest.raises(ValueError):
        BoundedIdSet(0)


def test_module_exports_the_header_names() -> None:
    assert (signing.ID_HEADER, signing.TIMESTAMP_HEADER, signing.SIGNATURE_HEADER) == (
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    )

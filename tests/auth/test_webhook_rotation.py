"""Webhooks are signed with the job's tenant's secret; during a rotation with both secrets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.webhooks.signing import (
    SIGNATURE_HEADER,
    WebhookVerificationError,
    generate_secret,
    verify,
)
from tests.auth.conftest import Keyed, keyed_server
from tests.webhooks.receiver import Receiver

SERVER_SECRET = generate_secret()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    yield from keyed_server(tmp_path_factory, "hooked", CONVEYOR_WEBHOOK_SECRET=SERVER_SECRET,
                            CONVEYOR_WEBHOOK_ALLOW_PRIVATE="127.0.0.0/8")


def _verifies(secret: str, delivery: tuple[dict[str, str], bytes]) -> bool:
    try:
        verify(secret, delivery[0], delivery[1])
    except WebhookVerificationError:
        return False
    return True


def _job(keyed: Keyed, role: str, receiver: Receiver) -> tuple[dict[str, str], bytes]:
    job_id = keyed.submit(role, "echo", b"hook", webhook_url=f"http://127.0.0.1:"
                          f"{receiver.port}/hook")
    return receiver.for_job(job_id)


def test_rotation_signs_with_both_secrets_then_only_the_new(hooked: Keyed,
                                                            receiver: Receiver) -> None:
    before = _job(hooked, "rw", receiver)
    assert _verifies(SERVER_SECRET, before)
    assert len(before[0][SIGNATURE_HEADER].split()) == 1

    url = f"{hooked.url}/v1/tenants/a/webhook-secret/rotate"
    first = httpx.post(url, headers=hooked.h("admin"))
    assert first.status_code == 200, first.text
    new = first.json()["webhook_secret"]
    assert new.startswith("whsec_") and first.json()["previous_valid_until"]
    during = _job(hooked, "rw", receiver)
    signatures = during[0][SIGNATURE_HEADER].split()
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    # A receiver still on the old secret and one already on the new one both accept it.
    assert _verifies(SERVER_SECRET, during) and _verifies(new, during)
    assert not _verifies(generate_secret(), during)

    # Tenant b has no secret of its own: the server-wide one alone.
    other = _job(hooked, "b", receiver)
    assert len(other[0][SIGNATURE_HEADER].split()) == 1 and _verifies(SERVER_SECRET, other)
    assert not _verifies(new, other)

    # Rotated again: the first rotation's secret and the new one; the server's is done.
    newer = httpx.post(url, headers=hooked.h("admin")).json()["webhook_secret"]
    after = _job(hooked, "rw", receiver)
    assert _verifies(newer, after) and _verifies(new, after)
    assert not _verifies(SERVER_SECRET, after)
    shown = httpx.get(f"{hooked.url}/v1/tenants/a", headers=hooked.h("admin")).json()
    assert shown["webhook_secret"] == "own" and newer not in str(shown)


def test_the_previous_secret_stops_signing_at_the_end_of_the_overlap(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    tmp_path.mkdir(exist_ok=True)
    store = Store(settings.db_url, run_dir=settings.run_dir)
    try:
        store.migrate()
        store.tenants.create("t")
        old = store.tenants.rotate_webhook_secret("t", 60, "whsec_" + "A" * 44)
        new = store.tenants.rotate_webhook_secret("t", 60)
        from conveyor.store import NewJob

        store.jobs.create(NewJob(id="01JOB", pipeline="noop", options={}, input_key="k",
                                 input_filename="f", input_size=1, input_sha256="0" * 64,
                                 media_type="text/plain", tenant_id="t"))
        now = time.time()
        assert store.tenants.secrets_for_job("01JOB", now) == [new, old]
        assert store.tenants.secrets_for_job("01JOB", now + 61) == [new]
        assert store.tenants.secrets_for_job("01NONE", now) == []
    finally:
        store.close()

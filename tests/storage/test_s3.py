"""What only the S3 backend does: presigned URLs, sha256 on download, outages, the budget."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.errors import StorageUnavailable as DomainUnavailable
from conveyor.storage import NotFound, StorageError, StorageUnavailable, input_key
from conveyor.storage.s3 import S3Storage
from conveyor.storage.s3_upload import reservation
from tests import objects


def _storage(moto: objects.Moto, monkeypatch: pytest.MonkeyPatch, endpoint: str | None = None,
             bucket: str = objects.BUCKET, **kwargs: int) -> S3Storage:
    env = moto.env(endpoint=endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    url = env["CONVEYOR_STORAGE_URL"].replace(objects.BUCKET, bucket)
    return S3Storage(url, part_bytes=objects.PART, max_upload_bytes=100 * 1024**2, **kwargs)


@pytest.fixture
def gate(moto: objects.Moto) -> Iterator[objects.Gate]:
    relay = objects.Gate(moto.port).up()
    yield relay
    relay.down()


def test_presigned_url_reads_the_object(moto: objects.Moto,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _storage(moto, monkeypatch)

    async def go() -> str:
        await storage.put_bytes(input_key("P"), b"presigned bytes")
        return await storage.presign(input_key("P"), 60)

    url = asyncio.run(go())
    assert "X-Amz-Signature=" in url
    assert httpx.get(url).content == b"presigned bytes"


def test_download_is_checked_against_its_sha256(moto: objects.Moto, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _storage(moto, monkeypatch)
    asyncio.run(storage.put_bytes(input_key("H"), b"the input"))
    good = hashlib.sha256(b"the input").hexdigest()
    asyncio.run(storage.get_to_file(input_key("H"), tmp_path / "ok", good))
    assert (tmp_path / "ok").read_bytes() == b"the input"
    with pytest.raises(StorageError, match="sha256"):
        asyncio.run(storage.get_to_file(input_key("H"), tmp_path / "bad", "0" * 64))
    assert not (tmp_path / "bad").exists()  # nothing half-checked is left for a processor


def test_missing_bucket_fails_ping_with_one_line(moto: objects.Moto,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _storage(moto, monkeypatch, bucket=f"nope-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StorageUnavailable) as err:
        asyncio.run(storage.ping())
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)


def test_outage_is_storage_unavailable_within_seconds(
        moto: objects.Moto, gate: objects.Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _storage(moto, monkeypatch, endpoint=gate.endpoint)
    asyncio.run(storage.ping())
    gate.down()
    started = time.monotonic()
    for call in (storage.ping, lambda: storage.stat(input_key("x")),
                 lambda: storage.put_bytes(input_key("x"), b"1")):
        with pytest.raises(StorageUnavailable) as err:
            asyncio.run(call())
        assert isinstance(err.value, DomainUnavailable)  # 503 storage_unavailable at the API
        assert "127.0.0.1" not in str(err.value)  # the client sees no endpoint
    assert time.monotonic() - started < 60


def test_outage_mid_upload_then_abort_leaves_nothing(
        moto: objects.Moto, gate: objects.Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _storage(moto, monkeypatch, endpoint=gate.endpoint)
    prefix = storage.loc.prefix

    async def go() -> None:
        writer = await storage.open_writer(input_key("M"))
        await writer.write(b"x" * (3 * objects.PART))
        await asyncio.sleep(0.3)
        assert objects.s3_uploads(moto, prefix) != []
        gate.down()
        with pytest.raises(StorageUnavailable):
            for _ in range(200):
                await writer.write(b"y" * objects.PART)
        gate.up()
        await writer.abort()

    asyncio.run(go())
    assert objects.s3_uploads(moto, prefix) == []
    assert objects.s3_keys(moto, prefix) == {}


def test_outage_then_complete_fails_fast(
        moto: objects.Moto, gate: objects.Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    # A body that ends right after the outage: complete() must fail, not wait on a dead upload.
    storage = _storage(moto, monkeypatch, endpoint=gate.endpoint)

    async def go() -> None:
        writer = await storage.open_writer(input_key("C"))
        await writer.write(b"x" * (2 * objects.PART))
        await asyncio.sleep(0.3)
        gate.down()
        await asyncio.sleep(2)  # obstore's upload fails meanwhile; the queue stays full
        with contextlib.suppress(StorageUnavailable):
            await writer.write(b"y" * (2 * 1024 * 1024))
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(writer.complete(), 30)
        gate.up()
        await writer.abort()

    asyncio.run(go())
    assert objects.s3_uploads(moto, storage.loc.prefix) == []


def test_budget_holds_back_a_second_multipart_upload(
        moto: objects.Moto, monkeypatch: pytest.MonkeyPatch) -> None:
    one = reservation(objects.PART)
    storage = _storage(moto, monkeypatch, buffer_bytes=one)

    async def go() -> None:
        first = await storage.open_writer(input_key("B1"))
        second = await storage.open_writer(input_key("B2"))
        await first.write(b"1" * (2 * objects.PART))
        assert storage.budget.free == 0
        blocked = asyncio.ensure_future(second.write(b"2" * (2 * objects.PART)))
        await asyncio.sleep(0.5)
        assert not blocked.done()  # back-pressure: the second upload waits for buffer space
        await first.complete()
        await asyncio.wait_for(blocked, 10)
        await second.complete()
        assert storage.budget.free == one

    asyncio.run(go())


def test_compose_copies_inside_s3_when_it_can(moto: objects.Moto, gate: objects.Gate,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The objects one after another under a new key: copied inside S3 (almost no byte
    through this process) when each but the last is at least a part, else streamed through;
    a missing source is NotFound, and nothing is left half-made."""
    storage = _storage(moto, monkeypatch, endpoint=gate.endpoint)
    blobs = [bytes([i]) * n for i, n in enumerate((objects.PART, objects.PART + 5, 1000))]
    whole = b"".join(blobs)

    async def go() -> None:
        for i, blob in enumerate(blobs):
            await storage.put_bytes(f"uploads/U/{i}", blob)
        sources = [(f"uploads/U/{i}", len(b)) for i, b in enumerate(blobs)]

        before = gate.carried
        await storage.compose(sources, input_key("C1"))
        assert gate.carried - before < len(whole) // 4  # copied inside S3
        assert await _read_all(storage, input_key("C1")) == whole

        before = gate.carried
        await storage.compose(sources[::-1], input_key("C2"))  # a small one first: streamed
        assert gate.carried - before > 2 * len(whole)
        assert await _read_all(storage, input_key("C2")) == b"".join(blobs[::-1])

        await storage.compose([sources[2]], input_key("C3"))  # one object: a plain copy
        assert await _read_all(storage, input_key("C3")) == blobs[2]
        await storage.compose([], input_key("C4"))
        assert await _read_all(storage, input_key("C4")) == b""

        with pytest.raises(NotFound):
            await storage.compose([sources[0], ("uploads/U/missing", objects.PART)],
                                  input_key("C5"))
        assert await storage.stat(input_key("C5")) is None

    asyncio.run(go())
    assert objects.s3_uploads(moto, storage.loc.prefix) == []


async def _read_all(storage: S3Storage, key: str) -> bytes:
    stream = await storage.read(key)
    return b"".join([chunk async for chunk in stream])

"""The local backend on a full disk (a real, small tmpfs): InsufficientStorage, nothing left."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from conveyor.errors import InsufficientStorage
from conveyor.storage import LocalStorage, artifact_key, input_key
from conveyor.storage.local import WRITE_BUFFER
from tests.conftest import MiB, Mount, fill


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_write_that_fills_the_disk_raises_and_abort_leaves_nothing(tmpfs: Mount) -> None:
    root = tmpfs("files", 4)
    storage = LocalStorage(root)

    async def main() -> None:
        assert (await storage.free_bytes() or 0) > 3 * MiB
        writer = await storage.open_writer(input_key("01J0000000000000000000000A"))
        with pytest.raises(InsufficientStorage):
            for _ in range(8 * MiB // WRITE_BUFFER):
                await writer.write(b"\1" * WRITE_BUFFER)
            await writer.complete()
        await writer.abort()

    asyncio.run(main())
    assert _files(root) == []  # no temp file, nothing under the key
    assert (asyncio.run(storage.free_bytes()) or 0) > 3 * MiB


def test_completing_and_storing_on_a_full_disk_raise_and_keep_nothing(
    tmpfs: Mount, tmp_path: Path
) -> None:
    root = tmpfs("files", 4)
    storage = LocalStorage(root)
    other = tmp_path / "work.bin"  # another filesystem: put_from_file must copy
    other.write_bytes(os.urandom(MiB))

    async def main() -> None:
        writer = await storage.open_writer(input_key("01J0000000000000000000000B"))
        await writer.write(b"\2" * 1000)  # buffered: the disk is met at complete()
        filler = fill(root)
        with pytest.raises(InsufficientStorage):
            await writer.complete()
        with pytest.raises(InsufficientStorage):
            await storage.put_from_file(other, artifact_key("01J0000000000000000000000B",
                                                            "t" * 32, "big.bin"))
        filler.unlink()

    asyncio.run(main())
    assert _files(root) == []

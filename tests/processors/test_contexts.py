"""The worker's RunContext and conveyor.testing's LocalContext follow the same rules: artifact
names, the registry ``auto`` routes through, and the limits from the settings."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ProcessorError
from conveyor.processors import (
    BadArtifactName,
    Context,
    ProcessorLimits,
    Registry,
    build_registry,
    check_artifact_name,
    define,
    processor,
)
from conveyor.processors.base import InputInfo
from conveyor.processors.builtin import BUILTINS, builtin_registry
from conveyor.processors.names import is_artifact_name
from conveyor.runner.context import AttemptState, RunContext
from conveyor.settings import Settings
from conveyor.store import Store
from conveyor.testing import LocalContext, run_processor

GOOD = ["a.txt", "w256.webp", "data.parquet", "_x", "A-1_b.c", "x" * 200, "9"]
BAD = ["my file.txt", "../escape", "a/b", "a\\b", ".hidden", "-dash", "", ".", "..", "x" * 201,
       "nul\x00", "new\nline", "a.txt\n", "caf\u00e9.txt"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store(f"sqlite:///{tmp_path / 'c.db'}", run_dir=tmp_path / "run")
    st.migrate()
    yield st
    st.close()


def _contexts(tmp_path: Path, store: Store, registry: Registry,
              limits: ProcessorLimits | None = None) -> list[Context]:
    src = tmp_path / "in.txt"
    src.write_text("hello")
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    options = registry.processors["auto"].validate_options({})
    local = LocalContext(src, options=options, work_dir=work, artifact_dir=tmp_path / "art",
                         registry=registry, limits=limits)
    run = RunContext(
        store=store, registry=registry, job_id="job", token="token", attempt=1,
        input=InputInfo("in.txt", 5, "0" * 64, "text/plain", None),
        options=options, work_dir=tmp_path / "runwork",
        state=AttemptState(tmp_path / "runwork", lambda path: shutil.copyfile(src, path)),
        limits=limits,
    )
    return [local, run]


@pytest.mark.parametrize("name", GOOD + BAD)
def test_both_contexts_agree_on_artifact_names(name: str, tmp_path: Path, store: Store) -> None:
    valid = is_artifact_name(name)
    assert valid == (name in GOOD)
    for ctx in _contexts(tmp_path, store, build_registry()):
        source = tmp_path / "src.bin"
        source.write_bytes(b"x")
        if valid:
            with ctx.artifact(name, "text/plain") as fh:
                fh.write(b"y")
            ctx.artifact_from_path(name, "text/plain", source)
            continue
        # Refused at the call, before any writer is entered, as a final ProcessorError.
        with pytest.raises(BadArtifactName) as err:
            ctx.artifact(name, "text/plain")
        assert err.value.code == "bad_artifact_name" and err.value.retryable is False
        with pytest.raises(ProcessorError):
            ctx.artifact_from_path(name, "text/plain", source)
        assert source.exists()  # nothing was moved


def test_check_artifact_name_returns_the_name_or_raises_a_value_error_too() -> None:
    assert check_artifact_name("ok.txt") == "ok.txt"
    with pytest.raises(ValueError):
        check_artifact_name("not ok.txt")


def test_auto_routes_through_the_registry_of_its_context(tmp_path: Path, store: Store) -> None:
    custom = Registry()
    calls: list[str] = []

    @processor("probe", registry=custom)
    def fake_probe(ctx: Context) -> dict[str, Any]:
        calls.append(type(ctx).__name__)
        return {"fake": True}

    custom.add(next(p for p in BUILTINS if p.name == "auto"))
    assert "probe" in build_registry().processors  # the global one has the real probe
    for ctx in _contexts(tmp_path, store, custom):
        result = custom.processors["auto"](ctx)
        assert result == {"routed_to": "probe", "fake": True}
    assert calls == ["LocalContext", "RunContext"]
    # An image routes to "image" only when the context's registry has it: here it does not.
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    out = run_processor("auto", png, registry=custom, out_dir=tmp_path / "o")
    assert out.result["routed_to"] == "probe"


def test_builtins_are_listed_in_one_place_and_registered_nowhere_on_import() -> None:
    names = {p.name for p in BUILTINS}
    assert {"noop", "probe", "image", "pdf", "table", "archive", "auto"} <= names
    fresh = builtin_registry()
    assert set(fresh.processors) == names
    assert fresh is not build_registry() and builtin_registry() is not fresh
    # define() makes a processor without registering it anywhere
    before = set(build_registry().processors)
    proc = define("unregistered-thing")(lambda ctx: None)
    assert proc.name == "unregistered-thing"
    assert set(build_registry().processors) == before


def test_limits_reach_processors_through_the_context(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "p.png"
    Image.new("RGB", (60, 50)).save(src)
    tight = ProcessorLimits(max_image_pixels=2999)
    with pytest.raises(ProcessorError) as err:
        run_processor("image", src, {"sizes": [10]}, out_dir=tmp_path / "a", limits=tight)
    assert err.value.code == "decompression_bomb"
    ok = run_processor("image", src, {"sizes": [10]}, out_dir=tmp_path / "b",
                       limits=ProcessorLimits(max_image_pixels=3000))
    assert ok.result["width"] == 60


def test_limits_come_from_settings_with_the_same_env_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_MAX_IMAGE_PIXELS", "1234")
    monkeypatch.setenv("CONVEYOR_ARCHIVE_MAX_ENTRIES", "7")
    monkeypatch.setenv("CONVEYOR_ARCHIVE_MAX_BYTES", "")  # blank: the default, as before
    monkeypatch.setenv("CONVEYOR_ARCHIVE_MAX_RATIO", "12.5")
    monkeypatch.setenv("CONVEYOR_LOG_LEVEL", "warning")
    settings = Settings()
    assert ProcessorLimits.from_settings(settings) == ProcessorLimits(
        max_image_pixels=1234, archive_max_entries=7, archive_max_bytes=2 * 1024**3,
        archive_max_ratio=12.5)
    assert settings.log_level == "WARNING"
    monkeypatch.setenv("CONVEYOR_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError):
        Settings()

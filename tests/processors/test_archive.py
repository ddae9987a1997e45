from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from conveyor.errors import ProcessorError
from conveyor.processors import build_registry
from conveyor.processors.archive_members import (
    check_member,
    find_overlap,
    safe_parts,
    zip_declared_entries,
    zip_member_kind,
)
from conveyor.testing import LocalContext

from .conftest import Run, make_zip


@pytest.mark.parametrize(
    ("name", "kind", "code"),
    [
        ("a.txt", "file", None),
        ("dir/sub/a.txt", "file", None),
        ("./a.txt", "file", None),
        ("dir/", "dir", None),
        ("a..b.txt", "file", None),
        ("../x", "file", "unsafe_path"),
        ("a/../../x", "file", "unsafe_path"),
        ("a/..", "file", "unsafe_path"),
        ("/abs/x", "file", "unsafe_path"),
        ("\\abs\\x", "file", "unsafe_path"),
        ("..\\x", "file", "unsafe_path"),
        ("a\\..\\..\\x", "file", "unsafe_path"),
        ("C:\\x", "file", "unsafe_path"),
        ("c:x", "file", "unsafe_path"),
        ("a\x00b", "file", "unsafe_path"),
        ("", "file", "unsafe_path"),
        ("link", "symlink", "unsafe_member"),
        ("hard", "hardlink", "unsafe_member"),
        ("dev", "device", "unsafe_member"),
        ("fifo", "fifo", "unsafe_member"),
        ("sock", "other", "unsafe_member"),
    ],
)
def test_check_member(name: str, kind: str, code: str | None) -> None:
    refusal = check_member(name, kind)  # type: ignore[arg-type]
    assert (refusal.code if refusal else None) == code


def test_safe_parts() -> None:
    assert safe_parts("./a//b\\c.txt") == ("a", "b", "c.txt")


@pytest.mark.parametrize(
    ("spans", "cd_start", "overlap"),
    [
        ([(0, 40, "a"), (40, 40, "b")], 80, False),
        ([(40, 40, "b"), (0, 40, "a")], 80, False),
        ([(0, 40, "a"), (0, 40, "b")], 80, True),
        ([(0, 50, "a"), (40, 40, "b")], 90, True),
        ([(0, 40, "a")], 30, True),
        ([], 0, False),
    ],
)
def test_find_overlap(spans: list[tuple[int, int, str]], cd_start: int, overlap: bool) -> None:
    assert (find_overlap(spans, cd_start) is not None) == overlap


def test_zip_member_kind_reads_unix_modes() -> None:
    info = zipfile.ZipInfo("l")
    info.create_system = 3
    info.external_attr = (0o120777) << 16
    assert zip_member_kind(info) == "symlink"
    info.external_attr = (0o100644) << 16
    assert zip_member_kind(info) == "file"
    assert zip_member_kind(zipfile.ZipInfo("d/")) == "dir"


def test_zip_declared_entries(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", {f"f{i}": b"x" for i in range(7)})
    assert zip_declared_entries(src) == 7
    (tmp_path / "no.zip").write_bytes(b"not a zip")
    assert zip_declared_entries(tmp_path / "no.zip") is None


def test_zip_extracts_files_as_children(run: Run, tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", {"a.txt": b"hello", "d/": b"", "d/b.csv": b"x,y\n1,2\n"})
    out = run("archive", src)
    res = out.result
    assert res["format"] == "zip" and res["files"] == 2 and res["directories"] == 1
    assert [c.filename for c in out.children] == ["a.txt", "d/b.csv"]
    assert all(c.pipeline == "auto" for c in out.children)
    assert out.children[0].options == {"archive_depth": 1, "archive": {"max_depth": 3}}
    assert out.children[0].path.read_bytes() == b"hello"
    entries = {e["name"]: e for e in res["entries"]}
    assert entries["d/b.csv"]["size"] == 8
    assert entries["a.txt"]["child_id"] == out.children[0].id
    assert res["total_bytes"] == 13


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_variants(run: Run, tmp_path: Path, mode: str) -> None:
    src = tmp_path / f"a.tar.{mode[2:] or 'plain'}"
    with tarfile.open(src, mode) as tf:
        for name, data in {"x/one.txt": b"1", "two.txt": b"22"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o4755  # setuid bit: written as a plain 0600 file anyway
            tf.addfile(info, io.BytesIO(data))
    out = run("archive", src)
    assert out.result["format"] == "tar"
    assert sorted(c.filename for c in out.children) == ["two.txt", "x/one.txt"]
    assert all(os.stat(c.path).st_mode & 0o7777 == 0o600 for c in out.children)


def test_listing_only(run: Run, tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", {"a.txt": b"hello", "b.txt": b"!"})
    out = run("archive", src, {"extract": False})
    assert out.children == []
    assert out.result["entries"] == [
        {"name": "a.txt", "size": 5, "child_id": None},
        {"name": "b.txt", "size": 1, "child_id": None},
    ]


def test_encrypted_and_duplicate_members_are_skipped(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "a.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr("locked.txt", b"????")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("ok.txt", b"second")
    # zipfile cannot write encrypted entries: set the encryption bit in the central directory.
    data = bytearray(src.read_bytes())
    cd = data.index(b"PK\x01\x02")
    while data[cd + 46 : cd + 56] != b"locked.txt":
        cd = data.index(b"PK\x01\x02", cd + 4)
    data[cd + 8] |= 0x1
    src.write_bytes(bytes(data))
    out = run("archive", src)
    assert [c.filename for c in out.children] == ["ok.txt"]
    assert out.children[0].path.read_bytes() == b"fine"
    assert {(s["name"], s["reason"]) for s in out.result["skipped"]} == {
        ("locked.txt", "encrypted"), ("ok.txt", "duplicate name")
    }


def test_total_bytes_cap_counts_inflated_bytes(run: Run, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_zip(tmp_path / "a.zip", {"a.bin": os.urandom(300_000), "b.bin": os.urandom(300_000)})
    monkeypatch.setenv("CONVEYOR_ARCHIVE_MAX_BYTES", "500000")
    with pytest.raises(ProcessorError) as err:
        run("archive", src)
    assert err.value.code == "too_large"


def test_entry_cap(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_zip(tmp_path / "a.zip", {f"{i}.txt": b"x" for i in range(11)})
    monkeypatch.setenv("CONVEYOR_ARCHIVE_MAX_ENTRIES", "10")
    with pytest.raises(ProcessorError) as err:
        run("archive", src)
    assert err.value.code == "too_many_entries"


def test_depth_limit(run: Run, tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", {"a.txt": b"x"})
    assert run("archive", src, {"depth": 2}).result["depth"] == 2
    with pytest.raises(ProcessorError) as err:
        run("archive", src, {"depth": 3})
    assert err.value.code == "nesting_too_deep"


def test_corrupt_zip(run: Run, tmp_path: Path) -> None:
    good = make_zip(tmp_path / "g.zip", {"a.txt": b"hello" * 1000})
    data = bytearray(good.read_bytes())
    data[40:60] = b"\xff" * 20  # smash the deflate stream
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(ProcessorError) as err:
        run("archive", bad)
    assert err.value.code == "corrupt_file"


def test_gzip_that_is_not_a_tar(run: Run, tmp_path: Path) -> None:
    import gzip

    src = tmp_path / "x.gz"
    src.write_bytes(gzip.compress(b"just text, no tar headers" * 30))
    with pytest.raises(ProcessorError) as err:
        run("archive", src)
    assert err.value.code == "unsupported_format"


def test_extraction_stays_inside_work_dir(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", {"a/b/c.txt": b"1", "./d.txt": b"2", "e\\f.txt": b"3"})
    sandbox = tmp_path / "sandbox"
    work = sandbox / "work"
    work.mkdir(parents=True)
    reg = build_registry()
    ctx = LocalContext(
        src, options=reg.processors["archive"].validate_options({}), work_dir=work,
        artifact_dir=tmp_path / "artifacts", children_dir=tmp_path / "children", registry=reg,
    )
    reg.processors["archive"](ctx)
    # Nothing but the work dir appeared next to it, and everything extracted was inside it.
    assert [p.name for p in sandbox.iterdir()] == ["work"]
    assert sorted(c.filename for c in ctx.children) == ["./d.txt", "a/b/c.txt", "e\\f.txt"]
    extracted = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_dir())
    assert extracted == ["extracted", "extracted/a", "extracted/a/b", "extracted/e"]

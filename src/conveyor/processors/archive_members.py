"""The archive processor's pure checks: is a member safe to extract, what kind is it, do zip
entries overlap, how many entries does a zip declare. No extraction happens here.
"""

from __future__ import annotations

import itertools
import re
import stat
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MemberKind = Literal["file", "dir", "symlink", "hardlink", "device", "fifo", "other"]

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    reason: str


def check_member(name: str, kind: MemberKind) -> Refusal | None:
    """Why a member must not be extracted (``unsafe_path`` / ``unsafe_member``), or None."""
    if not name or "\x00" in name:
        return Refusal("unsafe_path", f"bad member name {name!r}")
    if name.startswith(("/", "\\")):
        return Refusal("unsafe_path", f"absolute member path {name!r}")
    if _DRIVE.match(name):
        return Refusal("unsafe_path", f"drive-letter member path {name!r}")
    # Backslashes are separators on Windows and in many zip writers: split on both.
    if any(part == ".." for part in re.split(r"[/\\]", name)):
        return Refusal("unsafe_path", f"member path escapes the archive: {name!r}")
    if kind in ("symlink", "hardlink", "device", "fifo", "other"):
        return Refusal("unsafe_member", f"{kind} member {name!r} is not extracted")
    return None


def safe_parts(name: str) -> tuple[str, ...]:
    """The path components of a checked member name, without empty and ``.`` parts."""
    return tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))


def zip_member_kind(info: zipfile.ZipInfo) -> MemberKind:
    """What a zip entry is, from its name and (Unix) mode bits."""
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # made on Unix: mode bits are meaningful
        if stat.S_ISLNK(mode):
            return "symlink"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return "device"
        if stat.S_ISFIFO(mode):
            return "fifo"
        if stat.S_ISSOCK(mode):
            return "other"
        if stat.S_ISDIR(mode):
            return "dir"
    return "dir" if info.filename.endswith("/") else "file"


def tar_member_kind(member: tarfile.TarInfo) -> MemberKind:
    """What a tar member is."""
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return "other"


def zip_declared_entries(path: Path) -> int | None:
    """The entry count from the end-of-central-directory record (zip64 aware), or None.

    Read before ``ZipFile`` parses the central directory, which would build one Python object
    per entry: a 10 GiB upload can declare hundreds of millions of them.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        start = max(0, size - (65535 + 22))
        fh.seek(start)
        tail = fh.read()
        i = tail.rfind(b"PK\x05\x06")
        if i < 0 or len(tail) - i < 22:
            return None
        (total,) = struct.unpack("<H", tail[i + 10 : i + 12])
        if total != 0xFFFF or i < 20 or tail[i - 20 : i - 16] != b"PK\x06\x07":
            return int(total)
        (offset,) = struct.unpack("<Q", tail[i - 12 : i - 4])
        fh.seek(offset)
        record = fh.read(56)
        if len(record) < 40 or record[:4] != b"PK\x06\x06":
            return None
        (total64,) = struct.unpack("<Q", record[32:40])
        return int(total64)


def find_overlap(spans: list[tuple[int, int, str]], central_dir_start: int) -> str | None:
    """The name of an entry whose data overlaps the next one, or None (pure).

    ``spans`` are ``(local header offset, minimum length, name)``; the minimum length is the
    fixed header, the name and the compressed data (extra fields ignored, so no false alarm).
    """
    ordered = sorted(spans)
    for (off, length, name), (next_off, _, next_name) in itertools.pairwise(ordered):
        if off == next_off or off + length > next_off:
            return f"{name!r} overlaps {next_name!r}"
    if ordered:
        off, length, name = ordered[-1]
        if off + length > central_dir_start:
            return f"{name!r} overlaps the central directory"
    return None

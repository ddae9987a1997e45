"""The ``Range`` request header (RFC 9110 section 14), pure: a header and a size in, a range out.

One range only. A header that is not a well-formed single ``bytes`` range (``bytes=abc``,
``bytes=5-2``, ``items=0-1``, several ranges) is **ignored**, and the whole file is sent with
200, as RFC 9110 allows ("a server MAY ignore the Range header field"). A well-formed range
that starts past the end of the file (or an empty suffix, ``bytes=-0``) is unsatisfiable: 416.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


#: A position past any file (files are far below 10**18 bytes): what a longer number of
#: digits stands for, without converting it (``int()`` refuses over 4,300 digits).
_FAR = 10**18


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < 19 else _FAR


class RangeNotSatisfiable(Exception):
    """The range is well formed but selects no byte of the file."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to send, or None for the whole file; raises :class:`RangeNotSatisfiable`."""
    if header is None:
        return None
    match = _SINGLE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start = _position(first)
        if last and _position(last) < start:
            return None  # invalid range-spec: ignored, not refused
        if start >= size:
            raise RangeNotSatisfiable(f"the file has {size} bytes")
        end = min(_position(last) + 1, size) if last else size
        return ByteRange(start, end)
    if not last:
        return None  # "bytes=-" is not a range
    suffix = _position(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable(f"the file has {size} bytes")
    return ByteRange(max(0, size - suffix), size)

"""Byte storage behind one small protocol; ``local`` is the embedded default."""

from conveyor.storage.base import BadKey, Storage, TempObject, artifact_key, check_key, input_key
from conveyor.storage.local import LocalStorage, put_file

__all__ = [
    "BadKey",
    "LocalStorage",
    "Storage",
    "TempObject",
    "artifact_key",
    "check_key",
    "input_key",
    "put_file",
]

"""Pipeline versions (what ``reuse`` matches on), from the processors' declared versions."""

from __future__ import annotations

from conveyor.processors import Context
from conveyor.processors.registry import Registry, processor


def _noop(ctx: Context) -> None:
    return None


def test_pipeline_versions_follow_their_processors() -> None:
    reg = Registry()
    processor("a", registry=reg)(_noop)
    processor("b", registry=reg, version="2.1")(_noop)
    processor("auto", registry=reg)(_noop)
    reg.add_pipeline("ab", ["a", "b"])
    assert reg.version("a") == "1"  # the default
    assert reg.version("b") == "2.1"
    assert reg.version("ab") == "a=1,b=2.1"
    # ``auto`` may route to any processor: a new version of any of them changes it.
    before = reg.version("auto")
    assert before == "a=1,auto=1,b=2.1"
    processor("b", registry=reg, version="3")(_noop)
    assert reg.version("auto") != before and reg.version("ab") == "a=1,b=3"
    assert {p["name"]: p["version"] for p in reg.describe()}["ab"] == "a=1,b=3"

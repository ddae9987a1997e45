"""The pure upload-parameter checks, table-tested (no server)."""

from __future__ import annotations

import pytest

from conveyor.errors import BadParameter, InvalidOptions
from conveyor.ingest.params import (
    MAX_OPTIONS_BYTES,
    MAX_OPTIONS_DEPTH,
    json_depth,
    parse_options,
    parse_params,
)


@pytest.mark.parametrize(
    ("text", "depth"),
    [("1", 0), ("{}", 1), ('{"a": [1, {"b": []}]}', 4), ('"[[[["', 0), ('["\\"[[", [2]]', 2),
     ("[" * 100, 100), ('{"a": "\\\\", "b": [[]]}', 3)],
)
def test_json_depth(text: str, depth: int) -> None:
    assert json_depth(text) == depth


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,  # would be a RecursionError in json.loads
        "[" * (MAX_OPTIONS_DEPTH + 1) + "]" * (MAX_OPTIONS_DEPTH + 1),
        '{"a": "' + "x" * MAX_OPTIONS_BYTES + '"}',
        '{"x": NaN}', '{"x": -Infinity}', '{"x": 1e400}', '{"x": ' + "9" * 5000 + "}",
        "[1, 2]", '"text"', "{not json", "",
    ],
)
def test_options_refused(text: str) -> None:
    with pytest.raises(InvalidOptions) as info:
        parse_options(text)
    assert info.value.code == "bad_options"


@pytest.mark.parametrize(
    "text",
    ["{}", '{"sizes": [256, 1024]}', '{"a": ' * MAX_OPTIONS_DEPTH + "1" +
     "}" * MAX_OPTIONS_DEPTH, '{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}'],
)
def test_options_accepted(text: str) -> None:
    assert isinstance(parse_options(text), dict)


@pytest.mark.parametrize(
    ("fields", "error", "code"),
    [
        ({"priority": "1001"}, BadParameter, "bad_parameter"),
        ({"priority": "x"}, BadParameter, "bad_parameter"),
        ({"max_attempts": "0"}, BadParameter, "bad_parameter"),
        ({"timeout_s": "nan"}, BadParameter, "bad_parameter"),
        ({"timeout_s": "inf"}, BadParameter, "bad_parameter"),
        ({"colour": "red"}, BadParameter, "bad_parameter"),
        ({"options": "[" * 40}, InvalidOptions, "bad_options"),
    ],
)
def test_parse_params_refuses(fields: dict[str, str], error: type[Exception], code: str) -> None:
    with pytest.raises(error) as info:
        parse_params(fields)
    assert getattr(info.value, "code", None) == code


def test_parse_params_reads_every_field() -> None:
    params = parse_params({"pipeline": " image ", "options": '{"sizes": [1]}', "priority": "-3",
                           "max_attempts": "2", "timeout_s": "1.5",
                           "webhook_url": " https://x/ ", "filename": "a"})
    assert (params.pipeline, params.options, params.priority, params.max_attempts,
            params.timeout_s, params.webhook_url) == ("image", {"sizes": [1]}, -3, 2, 1.5,
                                                      "https://x/")


@pytest.mark.parametrize(
    ("raw", "reuse"),
    [("true", True), ("TRUE", True), (" 1 ", True), ("false", False), ("0", False)],
)
def test_reuse_is_a_boolean(raw: str, reuse: bool) -> None:
    assert parse_params({"reuse": raw}).reuse is reuse
    assert parse_params({}).reuse is False


@pytest.mark.parametrize("raw", ["", "yes", "2", "maybe"])
def test_reuse_refuses_anything_else(raw: str) -> None:
    with pytest.raises(BadParameter):
        parse_params({"reuse": raw})

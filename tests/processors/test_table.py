from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest

from conveyor.errors import ProcessorError
from conveyor.processors.csv_repair import frame
from conveyor.processors.table_text import Dialect, detect_encoding, sniff_dialect

from .conftest import MESSY_CSV, Run, xlsx


def rows_of(path: Path) -> list[tuple[object, ...]]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()


def test_messy_csv_keeps_every_good_row_and_counts_the_ragged_one(run: Run,
                                                                   tmp_path: Path) -> None:
    src = tmp_path / "messy.csv"
    src.write_bytes(MESSY_CSV)
    out = run("table", src)
    assert out.result["rows"] == 3 and out.result["rejected"] == 1
    assert out.result["dialect"] == {
        "delimiter": ";", "quote": '"', "escape": '"', "header": True, "decimal_separator": ","
    }
    assert out.result["schema"] == [
        {"name": "name", "type": "VARCHAR"}, {"name": "price", "type": "DOUBLE"},
        {"name": "qty", "type": "BIGINT"}, {"name": "note", "type": "VARCHAR"},
    ]
    assert rows_of(out.artifacts["data.parquet"]) == [
        ("Apple", 1.5, 3, "fresh\r\nand red"), ("Pear", 2.25, 4, "ok"), ("Plum", 0.75, 10, "fine")
    ]
    with open(out.artifacts["rejects.csv"], newline="") as fh:
        rejects = list(csv.DictReader(fh))
    assert len(rejects) == 1
    assert rejects[0]["original_line"] == "Kiwi;3,10;2;x;extra"
    assert "TOO MANY COLUMNS" in rejects[0]["error"] and rejects[0]["line"] == "5"


def test_latin1_csv_survives(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "l.csv"
    src.write_bytes("name,city\nJosé,Zürich\nRenée,Köln\n".encode("latin-1"))
    out = run("table", src)
    assert out.result["encoding"] in ("cp1252", "latin-1")
    assert rows_of(out.artifacts["data.parquet"]) == [("José", "Zürich"), ("Renée", "Köln")]


def test_utf16_tsv(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "u.tsv"
    src.write_bytes("a\tb\n1\tñ\n2\tß\n".encode("utf-16"))
    out = run("table", src, media_type="text/tab-separated-values")
    assert out.result["encoding"] == "utf-16"
    assert rows_of(out.artifacts["data.parquet"]) == [(1, "ñ"), (2, "ß")]


def test_profile(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "p.csv"
    lines = ["id,color,score"] + [
        f"{i},{['red', 'blue', 'red', ''][i % 4]},{'' if i == 7 else i * 1.5}" for i in range(20)
    ]
    src.write_text("\n".join(lines) + "\n")
    out = run("table", src)
    profile = json.loads(out.artifacts["profile.json"].read_text())
    assert profile["rows"] == 20
    cols = {c["name"]: c for c in profile["columns"]}
    assert cols["id"]["type"] == "BIGINT" and cols["id"]["nulls"] == 0
    assert cols["id"]["min"] == "0" and cols["id"]["max"] == "19"
    assert cols["id"]["mean"] == pytest.approx(9.5)
    assert cols["color"]["nulls"] == 5
    assert cols["color"]["top_values"][0] == {"value": "red", "count": 10}
    assert cols["color"]["mean"] is None
    assert cols["score"]["nulls"] == 1
    assert 1 <= cols["color"]["approx_distinct"] <= 3


def test_late_unexpected_value_does_not_reject_rows(run: Run, tmp_path: Path) -> None:
    # 30k integers then "n/a": past DuckDB's type-sniffing sample. The row must not be lost.
    src = tmp_path / "late.csv"
    src.write_text("n\n" + "".join(f"{i}\n" for i in range(30_000)) + "n/a\n")
    out = run("table", src)
    assert out.result["rows"] == 30_001 and out.result["rejected"] == 0
    assert out.result["schema"] == [{"name": "n", "type": "VARCHAR"}]


@pytest.mark.parametrize(
    ("name", "body", "media"),
    [
        ("a.json", b'[{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]', "application/json"),
        ("a.ndjson", b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n', "application/x-ndjson"),
    ],
)
def test_json_and_ndjson(run: Run, tmp_path: Path, name: str, body: bytes, media: str) -> None:
    src = tmp_path / name
    src.write_bytes(body)
    out = run("table", src, media_type=media)
    assert out.result["rows"] == 2 and out.result["columns"] == 2
    assert rows_of(out.artifacts["data.parquet"]) == [(1, "x"), (2, "y")]


def test_parquet_in_zstd_out(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    duckdb.sql(f"COPY (SELECT range AS i FROM range(100)) TO '{src}' (FORMAT parquet)")
    out = run("table", src)
    assert out.result["format"] == "parquet" and out.result["rows"] == 100
    codecs = duckdb.sql(
        f"SELECT DISTINCT compression FROM parquet_metadata('{out.artifacts['data.parquet']}')"
    ).fetchall()
    assert codecs == [("ZSTD",)]


def test_xlsx(run: Run, tmp_path: Path) -> None:
    src = xlsx(tmp_path / "book.xlsx", [["name", "n"], ["a", 1], ["b", 2.5]])
    out = run("table", src)
    assert out.result["format"] == "xlsx" and out.result["sheets"] == ["data"]
    assert out.result["rows"] == 2
    assert rows_of(out.artifacts["data.parquet"]) == [("a", 1.0), ("b", 2.5)]


def test_not_a_table(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(ProcessorError) as err:
        run("table", src)
    assert err.value.code == "unsupported_format"


def test_broken_json_is_bad_table(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "b.json"
    src.write_bytes(b'[{"a": 1}, {"a": ')
    with pytest.raises(ProcessorError) as err:
        run("table", src, media_type="application/json")
    assert err.value.code == "bad_table"


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("a,b,c\n1,2,3\n4,5,6\n", Dialect(",", '"', '"', True, ".")),
        ("a;b\n1,5;2\n3,25;4\n", Dialect(";", '"', '"', True, ",")),
        ("a;b\n1.5;2\n3.25;4\n", Dialect(";", '"', '"', True, ".")),
        ("x\ty\n1\t2\n3\t4\n", Dialect("\t", '"', '"', True, ".")),
        ("1|2|3\n4|5|6\n7|8|9\n", Dialect("|", '"', '"', False, ".")),
    ],
)
def test_sniff_dialect(sample: str, expected: Dialect) -> None:
    assert sniff_dialect(sample) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"plain ascii\n", "utf-8"),
        ("héllo\n".encode(), "utf-8"),
        (b"\xef\xbb\xbfbom\n", "utf-8-sig"),
        ("wide\n".encode("utf-16"), "utf-16"),
        ("café\n".encode("latin-1"), "cp1252"),
        (b"caf\xe9 \x81\n", "latin-1"),  # 0x81 is undefined in cp1252
    ],
)
def test_detect_encoding(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(data)
    assert detect_encoding(path) == expected


def test_header_option_overrides_detection(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "nh.csv"
    src.write_text("alpha,beta\ngamma,delta\n")
    assert run("table", src).result["rows"] == 1
    out = run("table", src, {"header": False})
    assert out.result["rows"] == 2 and out.result["dialect"]["header"] is False


def test_an_unclosed_quote_rejects_one_line_and_keeps_the_rest(run: Run, tmp_path: Path) -> None:
    lines = ["id,name,amount"] + [f"{i},name{i},{i * 1.5}" for i in range(1000)]
    lines[500] = '499,"unclosed name,748.5'  # line 501 of the file
    lines[800] = "799,name799,1198.5,surplus"  # a ragged row later on: rejected by DuckDB
    src = tmp_path / "bad.csv"
    src.write_text("\n".join(lines) + "\n")
    out = run("table", src)
    assert out.result["rows"] == 998 and out.result["rejected"] == 2
    ids = [row[0] for row in rows_of(out.artifacts["data.parquet"])]
    assert 499 not in ids and 799 not in ids and len(set(ids)) == 998
    with open(out.artifacts["rejects.csv"], newline="") as fh:
        rejects = list(csv.DictReader(fh))
    assert [(r["line"], r["original_line"]) for r in rejects] == [
        ("501", '499,"unclosed name,748.5'), ("801", "799,name799,1198.5,surplus")]
    assert rejects[0]["error"] == "unclosed quote"


@pytest.mark.parametrize(("lines", "kept", "rejected"), [
    (['a,b', '1,"x', 'y",2', '3,4'], [[1], [2, 3], [4]], []),  # a quoted newline is one record
    (['a,b', '1,"x', '3,4'], [[1], [3]], [2]),  # never closed: only its first line goes
    (['a,"""q""",c', '"', '5,6'], [[1], [3]], [2]),  # doubled quotes balance
])
def test_framing_rules(lines: list[str], kept: list[list[int]], rejected: list[int]) -> None:
    groups = list(frame(enumerate(lines, start=1), '"', '"'))
    assert [[n for n, _ in g] for ok, g in groups if ok] == kept
    assert [g[0][0] for ok, g in groups if not ok] == rejected


def test_table_errors_shown_to_users_are_one_short_line(run: Run, tmp_path: Path) -> None:
    src = tmp_path / "broken.json"
    src.write_bytes(b'{"a": 1}\n{"a": ')
    with pytest.raises(ProcessorError) as err:
        run("table", src, {"format": "ndjson"})
    assert err.value.code == "bad_table"
    assert "\n" not in err.value.message and str(tmp_path) not in err.value.message
    assert "SELECT" not in err.value.message and len(err.value.message) <= 330


def test_latin1_byte_past_the_encoding_sample(run: Run, tmp_path: Path) -> None:
    """UTF-8 is judged on the first MiB; a latin-1 byte after it still makes the file latin-1."""
    import duckdb

    from conveyor.processors.table_text import ENCODING_SAMPLE_BYTES

    src = tmp_path / "late.csv"
    rows = ENCODING_SAMPLE_BYTES // 22 + 10  # 22 bytes a line: the accent lands past 1 MiB
    with open(src, "wb") as fh:
        fh.write(b"id,city\n")
        for i in range(rows):
            fh.write(b"%08d,Paris%07d\n" % (i, i))
        fh.write("99999999,Besançon\n".encode("latin-1"))
    assert src.stat().st_size > ENCODING_SAMPLE_BYTES
    out = run("table", src)
    assert out.result["encoding"] == "cp1252"
    assert out.result["rows"] == rows + 1 and out.result["rejected"] == 0
    assert "rejects.csv" not in out.artifacts
    last = duckdb.sql(
        f"SELECT city FROM read_parquet('{out.artifacts['data.parquet']}') WHERE id = 99999999"
    ).fetchall()
    assert last == [("Besançon",)]

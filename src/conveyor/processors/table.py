"""The ``table`` processor: CSV/TSV, JSON/NDJSON, XLSX or Parquet -> Parquet + a column profile.

DuckDB does the reading, writing and profiling; fastexcel reads XLSX and hands DuckDB an Arrow
stream. DuckDB's own CSV sniffer is never trusted alone: on a messy file (BOM, ``;``, decimal
commas, embedded newline, ragged last row) it silently returned one row of five. So the encoding
and the dialect are detected first (:mod:`conveyor.processors.table_text`, pure) and passed
explicitly, with ``store_rejects`` so that every line DuckDB cannot read is counted and
written to ``rejects.csv``: rows are never dropped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.errors import ProcessorError, short_message
from conveyor.processors.base import Context, define
from conveyor.processors.csv_repair import repair
from conveyor.processors.table_text import (
    ENCODING_SAMPLE_BYTES,
    Dialect,
    detect_encoding,
    read_sample,
    sniff_dialect,
    transcode_to_utf8,
)

if TYPE_CHECKING:
    import duckdb

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_KINDS = {
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/vnd.apache.parquet": "parquet",
    XLSX_TYPE: "xlsx",
}
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "csv", ".json": "json",
             ".ndjson": "ndjson", ".jsonl": "ndjson", ".parquet": "parquet", ".xlsx": "xlsx"}
_UTF8 = ("utf-8", "utf-8-sig")
#: DuckDB's error type for a line that is not UTF-8.
_BAD_ENCODING = "INVALID ENCODING"
#: Above this many distinct values, top values are not computed (they would all be count 1).
TOP_VALUES_MAX_DISTINCT = 100_000


class TableOptions(BaseModel):
    """Options of the ``table`` processor."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["auto", "csv", "tsv", "json", "ndjson", "xlsx", "parquet"] = "auto"
    sheet: str | int | None = Field(
        default=None, description="XLSX sheet name or 0-based index (default: the first)."
    )
    top_values: int = Field(default=5, ge=0, le=20)
    header: bool | None = Field(
        default=None, description="CSV: first line is a header (default: detected)."
    )
    all_varchar: bool = Field(
        default=False, description="Read every CSV column as text (no type inference)."
    )


def _kind(ctx: Context, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    kind = _KINDS.get(ctx.input.media_type)
    if kind is None:
        kind = _SUFFIXES.get(Path(ctx.input.filename).suffix.lower())
    if kind is None:
        raise ProcessorError(
            "unsupported_format", f"not a table: {ctx.input.media_type} ({ctx.input.filename})"
        )
    return kind


def _q(value: str) -> str:
    """A SQL string literal (paths here are ours, but quote them properly anyway)."""
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect(ctx: Context) -> duckdb.DuckDBPyConnection:
    import duckdb

    tmp = ctx.work_dir / "duckdb-tmp"
    tmp.mkdir(exist_ok=True)
    con = duckdb.connect(
        config={
            "threads": 2,  # 2-core workers; more threads only add contention
            "memory_limit": "512MB",
            "temp_directory": str(tmp),
            "autoinstall_known_extensions": False,  # offline machines; no surprise downloads
            "autoload_known_extensions": False,
        }
    )
    return con


@define(
    "table",
    options=TableOptions,
    description="Tables (CSV/TSV, JSON/NDJSON, XLSX, Parquet) to Parquet with a column profile",
    # Plain text too: a .txt or .csv file the sniffer calls text/plain is read by its name.
    accepts=[*_KINDS, "text/plain"],
)
def table(ctx: Context) -> dict[str, Any]:
    """Convert a table to ``data.parquet`` (zstd), profile it, and report rejected lines."""
    import duckdb

    opts: TableOptions = ctx.options
    if ctx.input_path.stat().st_size == 0:
        raise ProcessorError("empty_file", "the file is empty")
    kind = _kind(ctx, opts.format)
    out = ctx.work_dir / "data.parquet"
    con = _connect(ctx)
    info: dict[str, Any] = {"format": kind}
    rejects: list[tuple[int, str, str]] = []
    try:
        ctx.progress(0.05, f"reading {kind}")
        if kind in ("csv", "tsv"):
            rows, rejects = _read_csv(ctx, con, kind, opts, out, info)
        elif kind in ("json", "ndjson"):
            fmt = "newline_delimited" if kind == "ndjson" else "auto"
            rows = _copy(con, f"read_json({_q(str(ctx.input_path))}, format={_q(fmt)})", out)
        elif kind == "parquet":
            rows = _copy(con, f"read_parquet({_q(str(ctx.input_path))})", out)
        else:
            rows = _copy(con, _xlsx_source(ctx, con, opts, info), out)
        ctx.progress(0.6, "profiling")
        schema = [
            {"name": str(name), "type": str(typ)}
            for name, typ, *_ in con.execute(
                f"DESCRIBE SELECT * FROM read_parquet({_q(str(out))})"
            ).fetchall()
        ]
        if not schema:
            raise ProcessorError("bad_table", "no columns found")
        profile = _profile(con, out, schema, rows, opts.top_values)
    except duckdb.Error as exc:
        ctx.logger.warning("DuckDB refused the table: %s", exc)
        detail = short_message(str(exc))
        raise ProcessorError("bad_table", f"cannot read the table: {detail}") from None
    finally:
        con.close()
    with ctx.artifact("profile.json", "application/json") as fh:
        fh.write(json.dumps({"rows": rows, "columns": _named(profile)}, default=str, indent=1,
                            allow_nan=False).encode())
    if rejects:
        with ctx.artifact("rejects.csv", "text/csv") as fh:
            _write_rejects(fh, rejects)
    ctx.artifact_from_path("data.parquet", "application/vnd.apache.parquet", out)
    ctx.progress(1.0, "done")
    return {
        "rows": rows,
        "columns": len(schema),
        "schema": schema,
        "rejected": len(rejects),
        **info,
    }


def _read_csv(ctx: Context, con: duckdb.DuckDBPyConnection, kind: str, opts: TableOptions,
              out: Path, info: dict[str, Any]) -> tuple[int, list[tuple[int, str, str]]]:
    """Rows written and rejected lines. A line no reader can frame (an unclosed quote) is set
    apart first, so one bad line never fails the whole file."""
    import duckdb

    # UTF-8 is judged on a sample; DuckDB checks the rest and reports lines it cannot decode,
    # and only then is the whole file checked (and transcoded): one read in the usual case.
    encoding = detect_encoding(ctx.input_path, limit=ENCODING_SAMPLE_BYTES)
    try:
        rows, rejects = _read_csv_as(ctx, con, kind, opts, out, info, encoding)
    except duckdb.Error:
        full = detect_encoding(ctx.input_path) if encoding in _UTF8 else encoding
        if full in _UTF8 or full == encoding:
            raise
        _drop_rejects(con)
        return _read_csv_as(ctx, con, kind, opts, out, info, full)
    if encoding in _UTF8 and any(err.startswith(_BAD_ENCODING) for _, err, _ in rejects):
        full = detect_encoding(ctx.input_path)
        if full not in _UTF8:
            _drop_rejects(con)
            return _read_csv_as(ctx, con, kind, opts, out, info, full)
    return rows, rejects


def _drop_rejects(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS reject_errors")
    con.execute("DROP TABLE IF EXISTS reject_scans")


def _read_csv_as(ctx: Context, con: duckdb.DuckDBPyConnection, kind: str, opts: TableOptions,
                 out: Path, info: dict[str, Any], encoding: str,
                 ) -> tuple[int, list[tuple[int, str, str]]]:
    """:func:`_read_csv` once the encoding is known."""
    import duckdb

    args, extra, path, dialect = _csv_args(ctx, kind, opts, encoding)
    info.update(extra)
    try:
        return _copy_csv(con, args, out), _rejects(con)
    except duckdb.Error:
        repaired = repair(path, ctx.work_dir / "framed.csv", dialect.quote, dialect.escape)
        if not repaired.rejected:
            raise
    _drop_rejects(con)
    args[0] = _q(str(ctx.work_dir / "framed.csv"))
    rows = _copy_csv(con, args, out)
    original = repaired.line_numbers
    rejects = [(original[line - 1] if 0 < line <= len(original) else line, err, raw)
               for line, err, raw in _rejects(con)]
    return rows, sorted(rejects + repaired.rejected)


def _csv_args(
    ctx: Context, kind: str, opts: TableOptions, encoding: str
) -> tuple[list[str], dict[str, Any], Path, Dialect]:
    path = ctx.input_path
    if encoding not in ("utf-8", "utf-8-sig"):
        # DuckDB reads UTF-8 (it skips a UTF-8 BOM itself): transcode anything else once.
        path = ctx.work_dir / "utf8.csv"
        transcode_to_utf8(ctx.input_path, encoding, path)
    dialect = sniff_dialect(read_sample(path), "\t" if kind == "tsv" else ",")
    if opts.header is not None:
        dialect = replace(dialect, header=opts.header)
    args = [
        _q(str(path)),
        f"delim={_q(dialect.delimiter)}",
        f"quote={_q(dialect.quote)}",
        f"escape={_q(dialect.escape)}",
        f"header={'true' if dialect.header else 'false'}",
        "store_rejects=true",  # implies ignore_errors: bad lines go to reject_errors
        f"decimal_separator={_q(dialect.decimal_separator)}",
    ]
    if opts.all_varchar:
        args.append("all_varchar=true")
    return args, {"encoding": encoding, "dialect": asdict(dialect)}, path, dialect


def _copy_csv(con: duckdb.DuckDBPyConnection, args: list[str], out: Path) -> int:
    """COPY the CSV to Parquet; retry once with text columns where values failed to cast."""
    rows = _copy(con, f"read_csv({', '.join(args)})", out)
    cast_failures = [
        str(c[0])
        for c in con.execute(
            "SELECT DISTINCT column_name FROM reject_errors "
            "WHERE error_type = 'CAST' AND column_name IS NOT NULL"
        ).fetchall()
    ]
    if not cast_failures:
        return rows
    # A value the type sniffer did not foresee (e.g. "n/a" after 20k numbers) would reject its
    # whole row: read those columns as text instead, so only malformed lines are rejected.
    _drop_rejects(con)
    types = ", ".join(f"{_q(c)}: 'VARCHAR'" for c in cast_failures)
    return _copy(con, f"read_csv({', '.join([*args, f'types={{{types}}}'])})", out)


def _copy(con: duckdb.DuckDBPyConnection, source: str, out: Path) -> int:
    row = con.execute(
        f"COPY (SELECT * FROM {source}) TO {_q(str(out))} "
        # zstd level 1: a third less CPU than the default 3, files about 2 % larger.
        "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
    ).fetchone()
    return int(row[0]) if row else 0


def _rejects(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str, str]]:
    rows = con.execute(
        "SELECT line, string_agg(DISTINCT error_type || ': ' || error_message, '; '), "
        "any_value(csv_line) FROM reject_errors GROUP BY line ORDER BY line"
    ).fetchall()
    return [(int(line), str(err), str(raw or "").strip("\r\n")) for line, err, raw in rows]


def _write_rejects(fh: Any, rejects: list[tuple[int, str, str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["line", "error", "original_line"])
    writer.writerows(rejects)
    fh.write(text.getvalue().encode("utf-8"))


def _xlsx_source(
    ctx: Context, con: duckdb.DuckDBPyConnection, opts: TableOptions, info: dict[str, Any]
) -> str:
    import fastexcel

    try:
        reader = fastexcel.read_excel(str(ctx.input_path))
        sheets = list(reader.sheet_names)
        if not sheets:
            raise ProcessorError("bad_table", "the workbook has no sheets")
        sheet = reader.load_sheet(opts.sheet if opts.sheet is not None else 0)
    except ProcessorError:
        raise
    except Exception as exc:  # fastexcel raises its own exception tree
        if opts.sheet is not None and "not found" in str(exc).lower():
            raise ProcessorError("bad_table", f"no sheet {opts.sheet!r} in {sheets}") from None
        raise ProcessorError("corrupt_file", f"cannot read the workbook: {exc}") from None
    info.update(sheets=sheets, sheet=sheet.name)
    # fastexcel speaks the Arrow PyCapsule interface: no pyarrow needed in between.
    con.register("xlsx_sheet", sheet)
    return "xlsx_sheet"


def _profile(
    con: duckdb.DuckDBPyConnection,
    parquet: Path,
    schema: list[dict[str, str]],
    rows: int,
    top: int,
) -> list[dict[str, Any]]:
    import duckdb

    src = f"read_parquet({_q(str(parquet))})"
    bounds = [_bounds(con, src, col["name"]) for col in schema]
    spread = _spread(con, src, schema)
    out: list[dict[str, Any]] = []
    for col, (nulls, low, high), (distinct, mean) in zip(schema, bounds, spread, strict=True):
        entry: dict[str, Any] = {
            "name": col["name"],
            "type": col["type"],
            "nulls": nulls,
            "approx_distinct": distinct,
            "min": low,
            "max": high,
            "mean": mean,
        }
        # Mostly-unique columns (ids, amounts) have no telling top values: skip the GROUP BY.
        limit = min(TOP_VALUES_MAX_DISTINCT, max(rows // 2, 20))
        if top and rows and (distinct is None or distinct <= limit):
            name = _ident(col["name"])
            try:
                entry["top_values"] = [
                    {"value": v, "count": int(n)}
                    for v, n in con.execute(
                        f"SELECT {name}, count(*) AS n FROM {src} WHERE {name} IS NOT NULL "
                        f"GROUP BY {name} ORDER BY n DESC, {name} LIMIT {int(top)}"
                    ).fetchall()
                ]
            except duckdb.Error:  # e.g. a type that cannot be grouped or ordered
                entry["top_values"] = None
        else:
            entry["top_values"] = None
        out.append(entry)
    return out


def _bounds(con: duckdb.DuckDBPyConnection, src: str, name: str
            ) -> tuple[int | None, str | None, str | None]:
    """A column's null count, min and max. One query per column: DuckDB answers these from
    the Parquet file's statistics, without a scan, but only when every aggregate of the query
    can be (one column without statistics made a query over all of them scan them all)."""
    import duckdb

    c = _ident(name)
    try:
        row = con.execute(
            f"SELECT count(*) - count({c}), min({c})::VARCHAR, max({c})::VARCHAR FROM {src}"
        ).fetchone()
    except duckdb.Error:  # a type without min/max (e.g. a map): the null count only
        try:
            row = con.execute(f"SELECT count(*) - count({c}), NULL, NULL FROM {src}").fetchone()
        except duckdb.Error:
            return None, None, None
    if row is None:
        return None, None, None
    nulls, low, high = row
    return (int(nulls) if nulls is not None else None), low, high


def _spread(con: duckdb.DuckDBPyConnection, src: str, schema: list[dict[str, str]]
            ) -> list[tuple[int | None, float | None]]:
    """Each column's approximate distinct count and (numeric columns) mean: one scan."""
    import duckdb

    parts = []
    for col in schema:
        c = _ident(col["name"])
        mean = f"avg({c})" if _numeric(col["type"]) else "NULL"
        parts.append(f"approx_count_distinct({c}), {mean}")
    try:
        row = con.execute(f"SELECT {', '.join(parts)} FROM {src}").fetchone() or ()
    except duckdb.Error:  # a type that cannot be counted: no spread for any column
        row = ()
    if not row:
        return [(None, None)] * len(schema)
    return [(int(row[i]) if row[i] is not None else None, _float(row[i + 1]))
            for i in range(0, 2 * len(schema), 2)]


def _named(value: Any) -> Any:
    """``value`` with NaN and infinities (a DOUBLE column may hold them, as top values) as
    the strings ``NaN``, ``Infinity``, ``-Infinity``: JSON has no numbers for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _named(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_named(v) for v in value]
    return value


def _numeric(typ: str) -> bool:
    t = typ.upper()
    return any(k in t for k in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL", "NUMERIC")) and \
        not t.endswith("[]")


def _float(value: Any) -> float | None:
    """A finite float, else None (a mean over NaN or infinite values has no number)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None

"""Benchmark the built-in processors against the obvious way of doing the same job.

    python bench/bench_processors.py [--runs 3]

Inputs are generated into a temporary directory: a 12 MP photo-like JPEG, a 100-page text PDF
(reportlab) and a 500,000-row CSV. Each measurement runs in a fresh subprocess; the libraries
are imported before the clock starts, so only the work is timed. Pairs:

- image: conveyor ``image`` (3 webp renditions 2048/1024/256, q80) vs naive Pillow (open, full
  decode and resize from the original for each rendition, same output sizes and settings);
- pdf: conveyor ``pdf`` text (no previews) vs pypdf ``extract_text`` on every page;
- csv: conveyor ``table`` (CSV -> zstd Parquet + profile) vs pandas ``read_csv`` + ``to_parquet``.

Needs the ``bench`` extra (pandas, pyarrow, pypdf) and reportlab. Writes
``bench/results/processors.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (2048, 1024, 256)


# -- inputs -----------------------------------------------------------------------------------
def make_jpeg(path: Path) -> None:
    from PIL import Image

    w, h = 4000, 3000
    base = Image.linear_gradient("L").resize((w, h))
    noise = Image.effect_noise((w, h), 30)
    img = Image.merge("RGB", (base, noise, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    img.save(path, format="JPEG", quality=90)


def make_pdf(path: Path, pages: int = 100) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    rng = random.Random(1)
    words = "conveyor worker pipeline artifact upload process queue lease retry".split()
    c = canvas.Canvas(str(path), pagesize=A4)
    for p in range(pages):
        y = 800
        for _ in range(55):
            c.drawString(40, y, " ".join(rng.choice(words) for _ in range(12)) + f" {p}")
            y -= 14
        c.showPage()
    c.save()


def make_csv(path: Path, rows: int = 500_000) -> None:
    rng = random.Random(2)
    cats = ["red", "green", "blue", "amber", "violet"]
    with open(path, "w") as fh:
        fh.write("id,name,amount,category,day,flag\n")
        for i in range(rows):
            fh.write(
                f"{i},user{rng.randrange(50_000)},{rng.random() * 1000:.2f},"
                f"{rng.choice(cats)},2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d},"
                f"{'true' if i % 3 else 'false'}\n"
            )


# -- the timed tasks (run in a child process) ---------------------------------------------------
def task(name: str, src: Path, out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    if name == "image_conveyor":
        import PIL.Image  # noqa: F401

        from conveyor.testing import run_processor

        t = time.perf_counter()
        run_processor("image", src, {"sizes": list(SIZES)}, out_dir=out)
        return time.perf_counter() - t
    if name == "image_naive":
        from PIL import Image

        t = time.perf_counter()
        for size in SIZES:
            with Image.open(src) as im:
                im.load()
                h = round(im.height * size / im.width)
                im.resize((size, h), Image.Resampling.LANCZOS).save(
                    out / f"w{size}.webp", quality=80, method=4
                )
        return time.perf_counter() - t
    if name == "pdf_conveyor":
        import pypdfium2  # noqa: F401

        from conveyor.testing import run_processor

        t = time.perf_counter()
        run_processor("pdf", src, {"previews": 0}, out_dir=out)
        return time.perf_counter() - t
    if name == "pdf_pypdf":
        from pypdf import PdfReader

        t = time.perf_counter()
        reader = PdfReader(src)
        text = "\f".join(page.extract_text() for page in reader.pages)
        (out / "text.txt").write_text(text)
        return time.perf_counter() - t
    if name == "csv_conveyor":
        import duckdb  # noqa: F401

        from conveyor.testing import run_processor

        t = time.perf_counter()
        run_processor("table", src, out_dir=out)
        return time.perf_counter() - t
    if name == "csv_pandas":
        import pandas as pd
        import pyarrow  # noqa: F401

        t = time.perf_counter()
        pd.read_csv(src).to_parquet(out / "data.parquet", compression="zstd")
        return time.perf_counter() - t
    raise SystemExit(f"unknown task {name}")


def measure(name: str, src: Path, work: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        res = subprocess.run(
            [sys.executable, __file__, "--child", name, str(src), str(work / f"{name}-{i}")],
            capture_output=True, text=True, check=True,
        )
        times.append(float(res.stdout.strip().splitlines()[-1]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("TASK", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, src, out = args.child
        print(task(name, Path(src), Path(out)))
        return
    runs = max(3, args.runs)
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        work = Path(tmp)
        inputs = {"image": work / "photo.jpg", "pdf": work / "doc.pdf", "csv": work / "data.csv"}
        make_jpeg(inputs["image"])
        make_pdf(inputs["pdf"])
        make_csv(inputs["csv"])
        sizes = {k: p.stat().st_size for k, p in inputs.items()}
        pairs = [
            ("image", "12 MP JPEG -> 3 webp renditions", "image_conveyor", "image_naive",
             "naive Pillow", 4.0),
            ("pdf", "100-page PDF -> text", "pdf_conveyor", "pdf_pypdf", "pypdf", 5.0),
            ("csv", "500k-row CSV -> zstd Parquet", "csv_conveyor", "csv_pandas", "pandas", 3.0),
        ]
        rows = []
        for family, what, ours, theirs, label, target in pairs:
            a = measure(ours, inputs[family], work, runs)
            b = measure(theirs, inputs[family], work, runs)
            ratio = statistics.median(b) / statistics.median(a)
            rows.append((what, a, label, b, ratio, target))
    lines = [
        "# conveyor processors vs the obvious way",
        "",
        f"{runs} runs each, fresh subprocess per run, libraries imported before timing. "
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"inputs: JPEG {sizes['image'] / 1e6:.1f} MB, PDF {sizes['pdf'] / 1e6:.1f} MB, "
        f"CSV {sizes['csv'] / 1e6:.1f} MB.",
        "",
        "| task | conveyor median (min-max) s | baseline | baseline median (min-max) s "
        "| speed-up | target |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for what, a, label, b, ratio, target in rows:
        verdict = "met" if ratio >= target else "**missed**"
        lines.append(
            f"| {what} | {statistics.median(a):.3f} ({min(a):.3f}-{max(a):.3f}) | {label} | "
            f"{statistics.median(b):.3f} ({min(b):.3f}-{max(b):.3f}) | {ratio:.1f}x | "
            f">= {target:g}x ({verdict}) |"
        )
    lines.append("")
    lines.append("conveyor's table time includes the profile (profile.json) the baseline skips.")
    text = "\n".join(lines) + "\n"
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "processors.md").write_text(text)
    print(json.dumps({r[0]: round(r[4], 2) for r in rows}))


if __name__ == "__main__":
    main()

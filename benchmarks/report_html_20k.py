"""report.html of a 20,000-task run: time and peak memory of rendering it, beside json.dumps of
the same report.json (as the pipeline writes that: indent 2, held as bytes), measured in the same
run so that the ratios, not the absolute numbers, are what to read.

    .venv/bin/python -m benchmarks.report_html_20k [--tasks 20000] [--repeat 3]

Each step runs in a fresh interpreter, so its peak RSS is its own: it builds the synthetic report
(tests/unit/test_report_html.py), then measures the step's time (best of --repeat), its rise of
peak RSS over the report already in memory, and its peak of Python allocations (tracemalloc, in a
separate pass since tracing slows everything down). The HTML is streamed to a file as an upload
would stream it. Goal: the HTML in bounded memory (well under report.json's own serialisation)
and under 3 MB.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import run_child, table
from shared.report_html import iter_html
from tests.unit.test_report_html import JOB_FILE, synthetic_report


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _steps(report: dict, out: Path) -> dict[str, Callable[[], int]]:
    def as_json() -> int:
        data = json.dumps(report, indent=2, sort_keys=False).encode() + b"\n"  # shared.storage's _dump
        return len(data)

    def as_html() -> int:
        size = 0
        with out.open("wb") as f:
            for chunk in iter_html(report, JOB_FILE):
                data = chunk.encode()
                f.write(data)
                size += len(data)
        return size

    return {"json": as_json, "html": as_html}


def child(step: str, tasks: int, repeat: int) -> None:
    report = synthetic_report(tasks, nodes=50, slots=4, fail_every=100)
    with tempfile.TemporaryDirectory() as folder:
        run = _steps(report, Path(folder) / "report.html")[step]
        gc.collect()
        before = _peak_rss_mib()
        seconds = []
        for _ in range(repeat):
            start = time.perf_counter()
            size = run()
            seconds.append(time.perf_counter() - start)
        rss_rise = _peak_rss_mib() - before
        gc.collect()
        tracemalloc.start()
        run()
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(json.dumps({"step": step, "seconds": min(seconds), "bytes": size, "peak_rss_mib": _peak_rss_mib(),
                      "rss_rise_mib": rss_rise, "traced_peak_mib": traced / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--step", choices=["json", "html"], help="(internal) run one measured step")
    args = parser.parse_args()
    if args.step:
        child(args.step, args.tasks, args.repeat)
        return
    common = ["--tasks", str(args.tasks), "--repeat", str(args.repeat)]
    results = {step: run_child("benchmarks.report_html_20k", "--step", step, *common) for step in ("json", "html")}
    rows = [(f"{step}: {'json.dumps(report.json)' if step == 'json' else 'report.html, streamed'}",
             f"{r['seconds']:.3f}", f"{r['bytes'] / 2**20:.2f}", f"{r['rss_rise_mib']:.1f}",
             f"{r['traced_peak_mib']:.1f}", f"{r['peak_rss_mib']:.0f}") for step, r in results.items()]
    print(f"{args.tasks:,} tasks")
    print(table(rows, ("step", "seconds", "MiB out", "RSS rise MiB", "traced peak MiB", "process peak RSS MiB")))
    j, h = results["json"], results["html"]
    print(f"\nhtml / json: time {h['seconds'] / j['seconds']:.2f}x, traced peak memory "
          f"{h['traced_peak_mib'] / j['traced_peak_mib']:.2f}x, output size {h['bytes'] / j['bytes']:.2f}x")
    print(f"report.html: {h['bytes'] / 2**20:.2f} MiB ({'under' if h['bytes'] < 3 * 2**20 else 'OVER'} the 3 MiB goal)")


if __name__ == "__main__":
    main()

"""What bounds a run's size now that intake and finalize work in chunks: the report. Finalize
assembles report.json (one entry per task) in one invocation; this measures, for runs of growing
size, the time and the peak memory of assembling and serialising it, each size in a fresh
interpreter. The ratio to read is memory per task against a Flex Consumption instance's 2,048 MB:
it is what MAX_TASKS_PER_RUN's default (250,000) is chosen from.

    .venv/bin/python -m benchmarks.report_scale [--tasks 100000 250000 1000000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INSTANCE_MB = 2048  # Flex Consumption's default instance memory


def measure(n: int) -> dict:
    from shared.report import Merged, TaskOutcome, assemble
    from shared.runs import RunRecord, TaskCounts

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    tasks = [TaskOutcome(f"t{i:06d}", i, True, 0, 0, 0, 1.234, None, "2026-12-03T03:00:00.123Z",
                         "2026-12-03T03:00:01.357Z", f"tvmps_{i % 50:040d}") for i in range(n)]
    now = datetime.now(UTC)
    run = RunRecord(run_id="r-0123456789abcdef", state="merging", tasks=TaskCounts(total=n, succeeded=n),
                    created_at=now, submitted_at=now)
    made = assemble(run, tasks, stderr_tails={}, container_execution="host",
                    merged=Merged(output="results/r/output.jsonl", output_bytes=1), now=now)
    data = json.dumps(made, indent=2).encode()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"tasks": n, "report_mib": len(data) / 2**20, "rss_mib": (peak - base) / 1024,
            "seconds": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[100_000, 250_000, 1_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    print(f"{'tasks':>9} {'report.json':>12} {'peak RSS rise':>14} {'KiB/task':>9} {'of 2,048 MB':>12} {'time':>7}")
    for n in args.tasks:
        out = subprocess.run([sys.executable, "-m", "benchmarks.report_scale", "--one", str(n)], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        m = json.loads(out.stdout)
        print(f"{m['tasks']:>9,} {m['report_mib']:>9.0f} MiB {m['rss_mib']:>10.0f} MiB {m['rss_mib'] * 1024 / n:>9.2f} "
              f"{m['rss_mib'] / INSTANCE_MB:>11.0%} {m['seconds']:>6.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""50 runs against an account quota of 5 active jobs (issue 12): all succeed, never more than 5
active, admitted in arrival order.

    .venv/bin/python -m benchmarks.scale_quota_bench [--runs 50] [--quota 5] [--concurrency 8]
                                                     [--workers 8] [--quick]

The emulator starts with --quota-active-jobs `--quota`. The job files (2 inline items each, each
task `sleep --task-seconds` then the tiny copy, so that runs overlap; each run its own auto pool)
are dropped one after the other, each handed to its blob-triggered intake as it lands and the next
dropped when that intake returned, so arrival order is drop order. Meanwhile
`benchmarks.scale_host.Host` runs the monitor (which admits queued runs), the re-driven intakes and
finalize with `--workers` concurrent invocations. A sampler reads the emulator's count of active
jobs (GET /_emulator/quotas, `usage.activeJobs`) every 50 ms throughout.

Measured: the most active jobs sampled; the order in which runs started running (the `running`
lifecycle events, in publication order) against the drop order; how many runs Batch refused and
how often runs were admitted from the line; wall time until every run was over, set against the
same runs with no quota (the baseline: the same drops, a second emulator without quota, same run).

Correctness (exit 1 when any fails): all runs succeeded with their merged output right; the active
jobs never exceeded the quota; runs started in drop order; no poison.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request

from benchmarks.common import env_for, services, table
from benchmarks.scale_host import Host, exit_on_sigterm
from shared.runs import TERMINAL
from tests.pipeline.helpers import build_context, drop


def command(seconds: float) -> str:
    """The tiny copy, after a sleep: runs must last long enough to overlap, or no quota is ever met."""
    return f'sleep {seconds:g}; cat "$INPUT_PATH" > "$OUTPUT_PATH"'


class ActiveJobs(threading.Thread):
    """The emulator's active job count, sampled until stopped."""

    def __init__(self, emulator) -> None:
        super().__init__(daemon=True)
        self.url = f"{emulator.url}/_emulator/quotas"
        self.samples: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    self.samples.append(json.loads(r.read())["usage"]["activeJobs"])
            except OSError:
                pass
            self.halt.wait(0.05)


def scenario(quota: int | None, runs: int, task_seconds: float, concurrency: int, workers: int,
             deadline: float) -> dict:
    with services(max_concurrency=concurrency, quota_active_jobs=quota) as (azurite, emulator):
        ctx = build_context(env_for(azurite, emulator))
        sampler = ActiveJobs(emulator)
        sampler.start()
        run_ids: list[str] = []
        with Host(ctx, workers=workers) as host:
            t0 = time.monotonic()
            for i in range(runs):
                d = drop(ctx, f"quota-{i:03d}.json", {"command": command(task_seconds),
                                                        "input": {"items": [i, i + 1]}})
                run_ids.append(d.run_id)
                host.blob_dropped(d.container, d.name)
                host.wait_until(lambda name=d.name: any(x.key == name for x in host.of("intake")), 120,
                                every=0.02, what=f"intake of {d.name}")

            def all_over() -> bool:
                return all((r := ctx.runs.try_read(run_id)) is not None and r.state in TERMINAL for run_id in run_ids)
            host.wait_until(all_over, deadline, every=1.0, what="every run over")
            wall_s = time.monotonic() - t0
        sampler.halt.set()
        sampler.join(timeout=15)
        started = [run_id for kind, run_id, _ in ctx.events.events if kind == "running"]
        problems = []
        records = {r: ctx.runs.read(r) for r in run_ids}
        for i, run_id in enumerate(run_ids):
            run = records[run_id]
            if run.state != "succeeded":
                problems.append(f"{run_id}: {run.state} {run.error}")
                continue
            report = ctx.runs.read_report(run_id) or {}
            container, _, path = str(report.get("output", "")).partition("/")
            merged = ctx.blobs.get_blob_client(container, path).download_blob().readall()
            if [json.loads(x) for x in merged.splitlines()] != [i, i + 1]:
                problems.append(f"{run_id}: merged output {merged[:60]!r} is not [{i}, {i + 1}]")
        most = max(sampler.samples, default=0)
        if quota is not None and most > quota:
            problems.append(f"{most} jobs were active at once, quota {quota}")
        if started != run_ids:
            order = [run_ids.index(r) if r in run_ids else -1 for r in started]
            problems.append(f"started out of arrival order: {len(started)} started; the drop index of each run in "
                            f"the order they started: {order}")
        if host.poison:
            problems.append(f"poison: {host.poison[:5]}")
        return {"quota": quota, "wall_s": wall_s, "most_active": most, "samples": len(sampler.samples),
                "ever_queued": len({run_id for kind, run_id, _ in ctx.events.events if kind == "queued"}),
                "admissions": sum(r.admissions for r in records.values()),
                "started_in_order": started == run_ids, "problems": problems,
                "errors": len(host.errors()), "ticks": len(host.ticks)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--quota", type=int, default=5, help="the emulator's --quota-active-jobs")
    parser.add_argument("--task-seconds", type=float, default=3.0, help="each task sleeps this long, then copies")
    parser.add_argument("--concurrency", type=int, default=8, help="the emulator's --max-concurrency")
    parser.add_argument("--workers", type=int, default=8, help="concurrent invocations of the host")
    parser.add_argument("--deadline", type=float, default=1800.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 12 runs against a quota of 3")
    args = parser.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.runs, args.quota = 12, 3
    limited = scenario(args.quota, args.runs, args.task_seconds, args.concurrency, args.workers, args.deadline)
    free = scenario(None, args.runs, args.task_seconds, args.concurrency, args.workers, args.deadline)

    rows = [(f"quota {args.quota} active jobs", f"{limited['wall_s']:.1f}", f"{limited['wall_s'] / free['wall_s']:.2f}",
             limited["most_active"], limited["ever_queued"], limited["admissions"],
             "yes" if limited["started_in_order"] else "NO"),
            ("no quota (baseline)", f"{free['wall_s']:.1f}", "1.00", free["most_active"], free["ever_queued"],
             free["admissions"], "yes" if free["started_in_order"] else "NO")]
    print(f"{args.runs} runs of 2 tasks of {args.task_seconds:g} s, dropped one after the other; emulator "
          f"--max-concurrency {args.concurrency}, {args.workers} host workers")
    print(table(rows, ("", "every run over, s", "ratio", "most active jobs", "runs queued", "admission tries",
                       "started in arrival order")))
    print(f"active jobs sampled {limited['samples']:,} times; {limited['errors']} invocations raised and were retried")
    print(json.dumps({"benchmark": "scale_quota", "runs": args.runs, "quota": args.quota,
                      "limited": {k: v for k, v in limited.items() if k != "problems"},
                      "baseline": {k: v for k, v in free.items() if k != "problems"}}))
    problems = limited["problems"] + [p for p in free["problems"] if "arrival order" not in p]
    if problems:
        print(f"CORRECTNESS FAILED ({len(problems)}):\n  " + "\n  ".join(problems[:20]))
        return 1
    print(f"correct: all {args.runs} runs succeeded, at most {limited['most_active']} active (quota {args.quota}), "
          f"started in arrival order")
    return 0


if __name__ == "__main__":
    sys.exit(main())

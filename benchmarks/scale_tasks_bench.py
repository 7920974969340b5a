"""One run of 100,000 tasks end to end on the emulator, submitted in many chunks (issue 12).

    .venv/bin/python -m benchmarks.scale_tasks_bench [--tasks 100000] [--small 1000] [--budget 30]
                                                     [--concurrency 8] [--workers 8] [--quick]
                                                     [--finalize-budget S] [--submission-only]

Two runs, one after the other, each a JSONL blob of N records split one record per task, each task
a tiny copy (`cat "$INPUT_PATH" > "$OUTPUT_PATH"`), so finalize really verifies and merges N outputs:
first `--small` tasks, then `--tasks`. INTAKE_BUDGET_SECONDS=`--budget` forces the intake into many
invocations (a continuation message each). The steps run in process on `benchmarks.scale_host.Host`
(`--workers` concurrent invocations, the monitor ticking every second); the emulator runs
`--concurrency` tasks at once on the run's own auto pool, so tasks run while later chunks go in.

Measured, per run:
- intake time: the sum of the durations of the run's intake invocations (the blob-triggered
  `accept` and every `continue_submission`), i.e. the time intake workers spent on the run, without
  the hops through the queue between invocations (reported apart: wall time from drop to all submitted);
- baseline: a plain parallel upload of the same shard bytes (shared.split.iter_shards, the same
  SDK and UPLOAD_CONCURRENCY) to a fresh container, done right after the run's submission ended,
  while its tasks are still running, so that both compete with the same task execution for the two
  cores and Azurite (the tasks completed per second in each window are printed to show it);
  ratio = intake time / baseline time. Goal: <= 1.25. Intake sends its uploads as plain Put Blob
  requests through the SDK's pipeline (shared.blob_rest), cheaper than upload_blob; a second
  baseline uploads the shards with those same requests, and its ratio is printed too;
- the longest single intake invocation and the longest finalize invocation. Goal: <= budget + 10%
  (finalize is held to FINALIZE_BUDGET_SECONDS when the settings have it, else the intake budget);
- time to first task: from the drop (the blob trigger's accept call) until the emulator's task
  counts show a task running or completed (polled every 50 ms). Goal: about the same for both sizes.

`--submission-only` stops measuring the large run once it is submitted (intake, baseline, first
task), for sizes whose end to end takes longer than there is time for; `--finalize-budget` sets
FINALIZE_BUDGET_SECONDS so that finalize, too, runs in several invocations.

Correctness (exit 1 when any fails): each run succeeds, its report lists each task once and all
succeeded, the merged output is byte for byte the input, no invocation ended as poison.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.common import Timer, env_for, services, table
from benchmarks.scale_host import Host, exit_on_sigterm
from shared import blob_rest, split
from shared.runs import TERMINAL
from tests.pipeline.helpers import COPY, build_context, drop, put_data


def records(n: int) -> bytes:
    return b"".join(json.dumps({"id": i, "text": "lorem ipsum dolor sit amet"}).encode() + b"\n" for i in range(n))


def completed(ctx, run_id: str) -> int:
    try:
        return ctx.batch.get_job_task_counts(run_id).task_counts.completed
    except Exception:
        return 0


class FirstTask(threading.Thread):
    """Seconds from `t0` until Batch shows a task of the run running or completed."""

    def __init__(self, ctx, run_id: str, t0: float, deadline_s: float) -> None:
        super().__init__(daemon=True)
        self.ctx, self.run_id, self.t0, self.deadline_s = ctx, run_id, t0, deadline_s
        self.seconds: float | None = None

    def run(self) -> None:
        while time.monotonic() - self.t0 < self.deadline_s:
            try:
                counts = self.ctx.batch.get_job_task_counts(self.run_id).task_counts
                if counts.running + counts.completed > 0:
                    self.seconds = time.monotonic() - self.t0
                    return
            except Exception:
                pass  # no job yet
            time.sleep(0.05)


class SubmissionLog(logging.Handler):
    """shared.submit's line per intake invocation (its time before the first chunk, in chunks and
    past the budget), each with its time after the drop, while in a `with`."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.t0 = time.monotonic()
        self.lines: list[str] = []
        self._logger = logging.getLogger("shared.submit")

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{time.monotonic() - self.t0:.1f} s: {record.getMessage()}")

    def __enter__(self) -> SubmissionLog:
        self._level = self._logger.level
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def baseline_upload(ctx, data: bytes, container: str, requests: bool = False) -> float:
    """The SDK's upload_blob per shard; with `requests`, the plain Put Blob that intake itself sends
    (shared.blob_rest.put), so the ratio against it is intake's own work beyond the uploads."""
    shards = list(split.iter_shards("jsonl", [data], items_per_task=1))
    ctx.blobs.create_container(container)
    client = ctx.blobs.get_container_client(container)

    def upload(i: int) -> None:
        if requests:
            blob_rest.put(client, f"shards/{i:06d}.jsonl", shards[i])
        else:
            client.upload_blob(f"shards/{i:06d}.jsonl", shards[i], overwrite=True)
    with Timer() as t, ThreadPoolExecutor(ctx.settings.upload_concurrency) as pool:
        for start in range(0, len(shards), 10_000):  # map() holds a future and a result per item: 100,000 grew to GBs
            for _ in pool.map(upload, range(start, min(start + 10_000, len(shards)))):
                pass
    return t.seconds


def one_run(ctx, n: int, workers: int, deadline_s: float, label: str, to_end: bool = True) -> dict:
    data = records(n)
    blob = put_data(ctx, f"bench/{label}.jsonl", data)
    d = drop(ctx, f"{label}.json", {"command": COPY, "input": {"blob": blob}, "items_per_task": 1})
    problems: list[str] = []
    submission = SubmissionLog()
    with Host(ctx, workers=workers) as host, submission:
        t0 = submission.t0 = time.monotonic()
        first = FirstTask(ctx, d.run_id, t0, deadline_s)
        first.start()
        host.blob_dropped(d.container, d.name)

        def all_submitted() -> bool:
            run = ctx.runs.try_read(d.run_id)
            if run is not None and run.state in TERMINAL:
                raise RuntimeError(f"run {d.run_id} ended while submitting: {run.state} {run.error}")
            return run is not None and (run.submitted or 0) >= n and not run.submitting
        submitted_s = host.wait_until(all_submitted, deadline_s, every=0.5, what="all tasks submitted")
        done_at_submitted = completed(ctx, d.run_id)
        base_s = baseline_upload(ctx, data, f"baseline-{label}")
        done_after_base = completed(ctx, d.run_id)
        base_requests_s = baseline_upload(ctx, data, f"baseline-put-{label}", requests=True)

        def ended() -> bool:
            run = ctx.runs.try_read(d.run_id)
            return run is not None and run.state in TERMINAL
        if to_end:
            host.wait_until(ended, deadline_s, every=1.0, what=f"run {d.run_id} over")
        end_s = time.monotonic() - t0
        first.join(timeout=1)
    intake = host.of("intake", "continuation")
    errors = host.errors()
    if host.poison:
        problems.append(f"poison: {host.poison}")
    intake_sum = sum(i.seconds for i in intake)
    measured = {
        "tasks": n, "run_id": d.run_id, "problems": problems,
        "intake_invocations": len(intake), "intake_sum_s": intake_sum,
        "intake_longest_s": max((i.seconds for i in intake), default=0.0),
        "intake_longest5": [[i.kind, round(i.started - t0, 1), round(i.seconds, 1)]
                            for i in sorted(intake, key=lambda i: -i.seconds)[:5]],
        "submitted_wall_s": submitted_s, "baseline_s": base_s, "ratio": intake_sum / base_s,
        "baseline_requests_s": base_requests_s, "ratio_requests": intake_sum / base_requests_s,
        "tasks_per_s_during_intake": done_at_submitted / submitted_s,
        "tasks_per_s_during_baseline": (done_after_base - done_at_submitted) / base_s,
        "first_task_s": first.seconds, "submission_log": submission.lines,
        "errors": [f"{e.kind} {e.key}: {e.error}" for e in errors][:5], "error_count": len(errors),
        "ticks": len(host.ticks), "tick_max_s": max((t.seconds for t in host.ticks), default=0.0),
        "end_to_end_s": None, "finalize_invocations": None, "finalize_sum_s": None, "finalize_longest_s": None,
        "finalize_wall_s": None,
    }
    if not to_end:  # --submission-only: no end, no merge to check
        return measured
    run = ctx.runs.read(d.run_id)
    report = ctx.runs.read_report(d.run_id) or {}
    if run.state != "succeeded":
        problems.append(f"run {d.run_id} {run.state}: {run.error}")
    entries = report.get("entries", [])
    ids = [e["task_id"] for e in entries]
    if len(ids) != n or len(set(ids)) != n or any(e["outcome"] != "succeeded" for e in entries):
        problems.append(f"report lists {len(ids)} tasks ({len(set(ids))} distinct), {n} expected, all succeeded")
    container, _, path = str(report.get("output", "")).partition("/")
    merged = ctx.blobs.get_blob_client(container, path).download_blob().readall() if path else b""
    if hashlib.sha256(merged).digest() != hashlib.sha256(data).digest():
        problems.append(f"merged output ({len(merged)} bytes) is not the input ({len(data)} bytes)")
    finals = host.of("finalize")
    first_finalize = min((f.started for f in finals), default=t0) - t0
    return {**measured, "end_to_end_s": end_s, "finalize_invocations": len(finals),
            "finalize_sum_s": sum(f.seconds for f in finals),
            "finalize_longest_s": max((f.seconds for f in finals), default=0.0),
            "finalize_longest5": [[round(f.started - t0, 1), round(f.seconds, 1)]
                                  for f in sorted(finals, key=lambda f: -f.seconds)[:5]],
            "finalize_wall_s": end_s - first_finalize}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--budget", type=float, default=30.0, help="INTAKE_BUDGET_SECONDS")
    parser.add_argument("--concurrency", type=int, default=8, help="the emulator's --max-concurrency")
    parser.add_argument("--workers", type=int, default=8, help="concurrent invocations of the host")
    parser.add_argument("--deadline", type=float, default=3 * 3600.0, help="seconds per run before giving up")
    parser.add_argument("--finalize-budget", type=float, default=None, help="FINALIZE_BUDGET_SECONDS (default: the "
                        "setting's default)")
    parser.add_argument("--submission-only", action="store_true", help="measure the large run until it is "
                        "submitted (intake, baseline, first task), not to its end")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 and 200 tasks, budget 3 s")
    args = parser.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.tasks, args.small, args.budget = 2_000, 200, 3.0

    with services(max_concurrency=args.concurrency) as (azurite, emulator):
        env = {**env_for(azurite, emulator), "INTAKE_BUDGET_SECONDS": str(args.budget)}
        if args.finalize_budget is not None:
            env["FINALIZE_BUDGET_SECONDS"] = str(args.finalize_budget)
        ctx = build_context(env)
        finalize_budget = getattr(ctx.settings, "finalize_budget_seconds", None) or args.budget
        runs = [one_run(ctx, args.small, args.workers, args.deadline, f"run-{args.small}"),
                one_run(ctx, args.tasks, args.workers, args.deadline, f"run-{args.tasks}",
                        to_end=not args.submission_only)]

    budget_cap, finalize_cap = args.budget * 1.1, finalize_budget * 1.1
    fmt = lambda v: "-" if v is None else f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"  # noqa: E731
    rows = [
        ("intake invocations (accept + continuations)", *(fmt(r["intake_invocations"]) for r in runs)),
        ("intake time: sum of invocations, s", *(fmt(r["intake_sum_s"]) for r in runs)),
        ("  wall time from drop to all submitted, s", *(fmt(r["submitted_wall_s"]) for r in runs)),
        ("baseline: plain parallel upload of the shards, s", *(fmt(r["baseline_s"]) for r in runs)),
        ("ratio intake / baseline (goal <= 1.25)", *(f"{r['ratio']:.2f}" for r in runs)),
        ("baseline 2: the same Put Blob requests intake sends, s", *(fmt(r["baseline_requests_s"]) for r in runs)),
        ("ratio intake / baseline 2", *(f"{r['ratio_requests']:.2f}" for r in runs)),
        ("  tasks completed/s during intake | baseline",
         *(f"{r['tasks_per_s_during_intake']:.0f} | {r['tasks_per_s_during_baseline']:.0f}" for r in runs)),
        (f"longest intake invocation, s (goal <= {budget_cap:.1f})", *(f"{r['intake_longest_s']:.1f}" for r in runs)),
        ("time from drop to first task running, s", *(fmt(r["first_task_s"]) for r in runs)),
        ("finalize invocations", *(fmt(r["finalize_invocations"]) for r in runs)),
        (f"longest finalize invocation, s (goal <= {finalize_cap:.1f})", *(fmt(r["finalize_longest_s"]) for r in runs)),
        ("end to end (drop to final state), s", *(fmt(r["end_to_end_s"]) for r in runs)),
        ("invocations that raised (retried)", *(fmt(r["error_count"]) for r in runs)),
        ("monitor ticks | longest tick, s", *(f"{r['ticks']} | {r['tick_max_s']:.1f}" for r in runs)),
    ]
    longest = [f"{r['tasks']:,} tasks: " + ", ".join(f"{kind} at {at:.0f} s took {took:.1f} s"
                                                       for kind, at, took in r["intake_longest5"]) for r in runs]
    print(f"INTAKE_BUDGET_SECONDS={args.budget:g}, finalize budget {finalize_budget:g} s, emulator "
          f"--max-concurrency {args.concurrency}, {args.workers} host workers, UPLOAD_CONCURRENCY "
          f"{ctx.settings.upload_concurrency}")
    print(table(rows, ("", *(f"{r['tasks']:,} tasks" for r in runs))))
    print("longest intake invocations (start after the drop):\n  " + "\n  ".join(longest))
    print(f"intake's invocations of the {runs[-1]['tasks']:,}-task run, as logged (after the drop):\n  "
          + "\n  ".join(runs[-1]["submission_log"]))
    targets = {
        "intake within 1.25x of the upload": all(r["ratio"] <= 1.25 for r in runs),
        "longest intake invocation within budget + 10%": all(r["intake_longest_s"] <= budget_cap for r in runs),
        "longest finalize invocation within budget + 10%": all(r["finalize_longest_s"] <= finalize_cap for r in runs
                                                               if r["finalize_longest_s"] is not None),
    }
    for name, met in targets.items():
        print(f"target {'met' if met else 'MISSED'}: {name}")
    problems = [p for r in runs for p in r["problems"]]
    for r in runs:
        for e in r["errors"]:
            print(f"retried after an error ({r['tasks']:,} tasks): {e}")
    print(json.dumps({"benchmark": "scale_tasks", "budget_s": args.budget, "finalize_budget_s": finalize_budget,
                      "concurrency": args.concurrency, "workers": args.workers, "targets": targets,
                      "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                               for r in runs]}))
    if problems:
        print("CORRECTNESS FAILED:\n  " + "\n  ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

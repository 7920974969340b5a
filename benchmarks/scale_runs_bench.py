"""1,000 runs of 10 tasks dropped at once (issue 12): all succeed, none doubled, and what a monitor
tick costs with that many active runs.

    .venv/bin/python -m benchmarks.scale_runs_bench [--runs 1000] [--tasks 10] [--pool shared|auto]
                                                    [--concurrency 8] [--workers 8] [--quick]

All job files are uploaded to intake first (in parallel), then each one's blob-triggered intake is
handed to `benchmarks.scale_host.Host` at once (`--workers` concurrent invocations; the monitor
ticks every second on its own thread; finalize from its queue). Each job file has 10 inline items
and the tiny copy command. `--pool shared` (default): every run names one pool of 8 nodes made for
the benchmark, so the emulator's pool bookkeeping stays out of the measurement; `--pool auto`:
every run gets its own auto pool, as a job file without "pool" does.

Measured: the duration of every monitor tick (shared.watch.watch: TICK_PARALLELISM runs at once,
at most TICK_BUDGET) while runs were active, p50 / p95 / max, and the most runs a tick looked at;
intake and finalize invocations p50 / max; wall time from the first drop until every run was over.
There is no baseline for a tick: its duration is set against the tick budget and the 1 s schedule.

Correctness (exit 1 when any fails): every run succeeded; its report lists exactly `--tasks`
distinct tasks, all succeeded; its merged output holds its own items exactly once each, in order;
status.json says `--tasks` submitted; there are exactly `--runs` runs in results; no poison.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from azure.batch import models as bm

from benchmarks.common import env_for, services, table
from benchmarks.scale_host import Host, exit_on_sigterm, percentile
from shared.runs import TERMINAL
from shared.watch import TICK_BUDGET, TICK_PARALLELISM
from tests.pipeline.helpers import COPY, build_context, drop


def shared_pool(ctx, nodes: int) -> str:
    ctx.batch.create_pool(bm.BatchPoolCreateOptions(
        id="bench-shared", vm_size="standard_d2s_v3", target_dedicated_nodes=nodes,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    return "bench-shared"


def items_of(run: int, tasks: int) -> list[str]:
    return [f"run {run} item {k}" for k in range(tasks)]


def check_run(ctx, run_id: str, items: list[str]) -> str | None:
    """What is wrong with this run's result, or None."""
    run = ctx.runs.read(run_id)
    if run.state != "succeeded":
        return f"{run_id}: {run.state} {run.error}"
    if run.submitted != len(items):
        return f"{run_id}: status.json says {run.submitted} submitted, {len(items)} expected"
    report = ctx.runs.read_report(run_id) or {}
    ids = [e["task_id"] for e in report.get("entries", [])]
    if len(ids) != len(items) or len(set(ids)) != len(items) or \
            any(e["outcome"] != "succeeded" for e in report["entries"]):
        return f"{run_id}: report lists {len(ids)} tasks ({len(set(ids))} distinct), {len(items)} expected"
    container, _, path = str(report.get("output", "")).partition("/")
    merged = ctx.blobs.get_blob_client(container, path).download_blob().readall()
    got = [json.loads(line) for line in merged.splitlines()]
    if got != items:
        return f"{run_id}: merged output has {len(got)} lines, not its {len(items)} items once each in order"
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10, help="tasks (inline items) per run")
    parser.add_argument("--pool", choices=("shared", "auto"), default="shared")
    parser.add_argument("--concurrency", type=int, default=8, help="the emulator's --max-concurrency")
    parser.add_argument("--workers", type=int, default=8, help="concurrent invocations of the host")
    parser.add_argument("--deadline", type=float, default=3600.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 runs")
    args = parser.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.runs = 40

    with services(max_concurrency=args.concurrency) as (azurite, emulator):
        ctx = build_context(env_for(azurite, emulator))
        pool = {"id": shared_pool(ctx, args.concurrency)} if args.pool == "shared" else None

        def job(i: int) -> dict:
            spec = {"command": COPY, "input": {"items": items_of(i, args.tasks)}}
            return {**spec, "pool": pool} if pool else spec
        with ThreadPoolExecutor(16) as uploads:
            dropped = list(uploads.map(lambda i: drop(ctx, f"many-{i:04d}.json", job(i)), range(args.runs)))
        run_ids = [d.run_id for d in dropped]
        with Host(ctx, workers=args.workers) as host:
            t0 = time.monotonic()
            for d in dropped:
                host.blob_dropped(d.container, d.name)
            intake_s = time.monotonic() - t0

            def over() -> int:
                # the final-state events (no reads: polling 1,000 status files would load Azurite itself)
                return len({r for kind, r, _ in list(ctx.events.events) if kind in TERMINAL})
            try:
                host.wait_until(lambda: over() >= len(run_ids), args.deadline, every=2.0, what="every run over")
                finished = True
            except TimeoutError:
                finished = False
            wall_s = time.monotonic() - t0
            ended = over()
        if not finished:
            wrong = [f"only {ended:,} of {args.runs:,} runs were over after {args.deadline:.0f} s (--deadline)"]
        else:
            with ThreadPoolExecutor(16) as reads:
                wrong = [w for w in reads.map(lambda i: check_run(ctx, run_ids[i], items_of(i, args.tasks)),
                                              range(args.runs)) if w]
        in_results = {b.name.split("/")[0] for b in ctx.blobs.get_container_client(ctx.settings.results_container)
                      .list_blobs() if b.name.endswith("/status.json")}
        if finished and in_results != set(run_ids):
            wrong.append(f"results hold {len(in_results)} runs, {len(set(run_ids))} dropped")
        if host.poison:
            wrong.append(f"poison: {host.poison[:5]}")

    busy = [t for t in host.ticks if t.runs > 0]
    ticks = [t.seconds for t in busy]
    intakes = [i.seconds for i in host.of("intake", "intake_request", "continuation")]
    finals = [i.seconds for i in host.of("finalize")]
    rows = [
        ("monitor ticks with active runs", len(busy), "", ""),
        ("monitor tick, s (p50 | p95 | max)", f"{percentile(ticks, 50):.2f}", f"{percentile(ticks, 95):.2f}",
         f"{max(ticks, default=0):.2f}"),
        ("runs looked at per tick (p50 | p95 | max)", percentile([t.runs for t in busy], 50),
         percentile([t.runs for t in busy], 95), max((t.runs for t in busy), default=0)),
        ("intake invocation, s (p50 | p95 | max)", f"{percentile(intakes, 50):.2f}",
         f"{percentile(intakes, 95):.2f}", f"{max(intakes, default=0):.2f}"),
        ("finalize invocation, s (p50 | p95 | max)", f"{percentile(finals, 50):.2f}",
         f"{percentile(finals, 95):.2f}", f"{max(finals, default=0):.2f}"),
    ]
    print(f"{args.runs:,} runs x {args.tasks} tasks, pool {args.pool}, emulator --max-concurrency "
          f"{args.concurrency}, {args.workers} host workers; tick budget {TICK_BUDGET.total_seconds():g} s, "
          f"{TICK_PARALLELISM} runs at once")
    print(table(rows, ("", "p50", "p95", "max")))
    print(f"invocations: {len(intakes):,} intake (with continuations and re-drives), {len(finals):,} finalize "
          f"(a re-driven or duplicate request is one more)")
    print(f"all {args.runs:,} handed to intake in {intake_s:.1f} s; {ended:,} runs over after {wall_s:.1f} s; "
          f"{len(host.errors())} invocations raised and were retried; {len(host.tick_errors)} ticks raised")
    for e in host.errors()[:5]:
        print(f"  retried: {e.kind} {e.key}: {e.error}")
    print(json.dumps({"benchmark": "scale_runs", "runs": args.runs, "tasks": args.tasks, "pool": args.pool,
                      "ticks": len(busy), "tick_p50_s": round(percentile(ticks, 50), 3),
                      "tick_p95_s": round(percentile(ticks, 95), 3), "tick_max_s": round(max(ticks, default=0), 3),
                      "intake_p50_s": round(percentile(intakes, 50), 3),
                      "intake_max_s": round(max(intakes, default=0), 3),
                      "finalize_p50_s": round(percentile(finals, 50), 3),
                      "finalize_max_s": round(max(finals, default=0), 3), "intakes": len(intakes),
                      "finalizes": len(finals), "wall_s": round(wall_s, 1), "over": ended,
                      "errors": len(host.errors()), "problems": len(wrong)}))
    if wrong:
        print(f"CORRECTNESS FAILED ({len(wrong)}):\n  " + "\n  ".join(wrong[:20]))
        return 1
    print(f"correct: all {args.runs:,} runs succeeded, each with its {args.tasks} items once")
    return 0


if __name__ == "__main__":
    sys.exit(main())

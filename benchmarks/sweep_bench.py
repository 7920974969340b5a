"""A parameter sweep's task inputs: the JSONL shards of a 1,000,000-combination sweep (the most a sweep
may have), generated lazily from the `Sweep`, against the same items held as a list (how inline items
reach the same splitter), measured in the same run.

    .venv/bin/python -m benchmarks.sweep_bench [--items-per-task 10] [--rounds 3]

Each case runs in a fresh interpreter so that its peak RSS is its own, alternating for `rounds`
rounds; the fastest run of each is shown. Time includes building the
items (parsing the sweep, or listing the product). No services: intake's upload of the shards is the
same for both and is measured by benchmarks.intake_bench. Goals: time within 1.5x of the list's, peak
memory a small fraction of it.
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time

from benchmarks.common import run_child, table

# 4 x 1,000 x 2 x 125 (the last two a zip group of 125) = 1,000,000 combinations
SWEEP = {"alpha": [0.1, 0.2, 0.5, 0.7], "seed": {"range": [0, 1000]}, "model": ["a", "b"],
         "zip": {"x": {"range": [0, 125]}, "y": {"range": [0, 250, 2]}}}


def _listed() -> list[dict]:
    return [{"alpha": a, "seed": s, "model": m, "x": x, "y": 2 * x}
            for a, s, m, x in itertools.product([0.1, 0.2, 0.5, 0.7], range(1000), ["a", "b"], range(125))]


def step(case: str, per_task: int) -> dict:
    from shared import paramsweep, split

    started = time.perf_counter()
    items = paramsweep.parse(SWEEP, "input.sweep") if case == "sweep" else _listed()
    shards = total = 0
    for shard in split.iter_item_shards(items, items_per_task=per_task):
        shards += 1
        total += len(shard)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "items": len(items), "shards": shards, "bytes": total, "seconds": seconds,
            "peak_rss_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items-per-task", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step", choices=["sweep", "list"])
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, args.items_per_task)))
        return
    per_task = str(args.items_per_task)
    runs: dict[str, list[dict]] = {"list": [], "sweep": []}
    for _ in range(args.rounds):  # alternating, the best of each: the machine is shared and noisy
        for case in runs:
            runs[case].append(run_child("benchmarks.sweep_bench", "--step", case, "--items-per-task", per_task))
    baseline, sweep = (min(runs[case], key=lambda r: r["seconds"]) for case in ("list", "sweep"))
    assert (sweep["items"], sweep["shards"], sweep["bytes"]) == (baseline["items"], baseline["shards"],
                                                                 baseline["bytes"]), (sweep, baseline)
    rows = [(r["case"], f"{r['items']:,}", f"{r['shards']:,}", f"{r['bytes'] / 2 ** 20:.1f} MiB",
             f"{r['seconds']:.2f} s", f"{r['peak_rss_mib']:.0f} MiB") for r in (baseline, sweep)]
    print(table(rows, ("items from", "items", "shards", "shard bytes", "best time", "peak RSS")))
    time_ratio = sweep["seconds"] / baseline["seconds"]
    memory_ratio = sweep["peak_rss_mib"] / baseline["peak_rss_mib"]
    print(f"\nsweep / list: time {time_ratio:.2f} (goal <= 1.5), peak RSS {memory_ratio:.2f}")
    sys.exit(0 if time_ratio <= 1.5 else 1)


if __name__ == "__main__":
    main()

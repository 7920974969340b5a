"""Monitor cost: Batch calls per active run per tick, for runs of very different sizes.

    .venv/bin/python -m benchmarks.monitor_bench [--sizes 10,1000,5000]

Counts the requests the emulator served during one watch() tick (its /_emulator/stats), first
while every run is running (tasks held on a pool with no nodes), then on the tick where every run
is complete (counts, plus the one confirming list). Goal: at most 2 calls per run per tick,
whatever the task count.
"""
from __future__ import annotations

import argparse
import json
import time
import urllib.request

from azure.batch import models as bm

from benchmarks.common import env_for, services, table
from shared.accept import accept
from shared.watch import watch
from tests.pipeline.helpers import build_context, drop


def stats(emulator, reset: bool = False) -> dict:
    if reset:
        urllib.request.urlopen(urllib.request.Request(f"{emulator.url}/_emulator/stats/reset", method="POST", data=b""))
        return {}
    with urllib.request.urlopen(f"{emulator.url}/_emulator/stats") as r:
        return json.loads(r.read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,1000,5000")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    with services() as (azurite, emulator):
        ctx = build_context(env_for(azurite, emulator))
        vm = bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204"),
            node_agent_sku_id="batch.node.ubuntu 22.04")
        ctx.batch.create_pool(bm.BatchPoolCreateOptions(id="held", vm_size="standard_d2s_v3",
                                                         target_dedicated_nodes=0, virtual_machine_configuration=vm))
        runs = []
        for n in sizes:
            d = drop(ctx, f"size-{n}.json", {"command": "true", "input": {"items": list(range(n))},
                                             "pool": {"id": "held"}})
            runs.append(accept(ctx, d.container, d.name))
        watch(ctx)  # warm-up: the first tick also runs the hourly orphan sweep (one list-jobs call)
        stats(emulator, reset=True)
        outcome = watch(ctx)
        running = stats(emulator)
        assert all(outcome[r] in ("updated", "no change") for r in runs), outcome

        # let the tasks run, then the tick that hands every run to finalize
        ctx.batch.begin_resize_pool("held", bm.BatchPoolResizeOptions(target_dedicated_nodes=2)).result()

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if all(ctx.batch.get_job_task_counts(r).task_counts.completed == n for r, n in zip(runs, sizes)):
                break
            time.sleep(0.5)
        stats(emulator, reset=True)
        outcome = watch(ctx)
        done = stats(emulator)
        assert all(outcome[r] == "finalize requested" for r in runs), outcome

    rows = [("running (tasks held)", running["total"], f"{running['total'] / len(runs):.2f}"),
            ("completing (counts + confirm)", done["total"], f"{done['total'] / len(runs):.2f}")]
    print(f"runs: {len(runs)} with {', '.join(map(str, sizes))} tasks")
    print(table(rows, ("tick", "Batch calls", "calls per run")))
    print(json.dumps({"benchmark": "monitor", "sizes": sizes, "running_calls_per_run": running["total"] / len(runs),
                      "completing_calls_per_run": done["total"] / len(runs), "running": running, "completing": done}))


if __name__ == "__main__":
    main()

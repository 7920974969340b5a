"""Intake of a 20,000-task job on the local stack, against the storage limit measured in the same run.

    .venv/bin/python -m benchmarks.intake_bench [--tasks 20000]

Measures accept() (validate, split, upload the shards in parallel, create the job, add the tasks
100 per call) for a JSONL blob of N records with items_per_task=1, and, as the baseline, a plain
parallel upload of the same N shards with the same SDK and concurrency. The job runs on a pool
with no nodes, so the emulator holds the tasks without running them.
Goal: accept within 1.25x of the plain upload, and well inside 10 minutes.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

from azure.batch import models as bm

from benchmarks.common import Timer, env_for, services, table
from shared import split
from shared.accept import accept
from tests.pipeline.helpers import build_context, drop, put_data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    args = parser.parse_args()
    n = args.tasks
    record = lambda i: json.dumps({"id": i, "text": "lorem ipsum dolor sit amet " * 3}).encode()  # noqa: E731
    data = b"\n".join(record(i) for i in range(n)) + b"\n"

    with services() as (azurite, emulator):
        ctx = build_context(env_for(azurite, emulator))
        ctx.batch.create_pool(bm.BatchPoolCreateOptions(
            id="idle", vm_size="standard_d2s_v3", target_dedicated_nodes=0,
            virtual_machine_configuration=bm.VirtualMachineConfiguration(
                image_reference=bm.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204"),
                node_agent_sku_id="batch.node.ubuntu 22.04")))
        blob = put_data(ctx, "bench/input.jsonl", data)

        # baseline: the same shards, uploaded in parallel with the same SDK and concurrency
        shards = list(split.iter_shards("jsonl", [data], items_per_task=1))
        ctx.blobs.create_container("baseline")
        container = ctx.blobs.get_container_client("baseline")
        with Timer() as base, ThreadPoolExecutor(ctx.settings.upload_concurrency) as pool:
            list(pool.map(lambda i: container.upload_blob(f"shards/{i:06d}.jsonl", shards[i], overwrite=True),
                          range(len(shards))))

        d = drop(ctx, "bench.json", {"command": "true", "input": {"blob": blob}, "items_per_task": 1,
                                     "pool": {"id": "idle"}})
        with Timer() as intake:
            run_id = accept(ctx, d.container, d.name)
        counts = ctx.batch.get_job_task_counts(run_id).task_counts
        assert counts.active == n, f"expected {n} tasks, Batch holds {counts.active}"

    rows = [
        ("plain parallel upload (baseline)", f"{base.seconds:.1f}", f"{n / base.seconds:.0f}", "1.00"),
        ("accept: split + upload + submit", f"{intake.seconds:.1f}", f"{n / intake.seconds:.0f}",
         f"{intake.seconds / base.seconds:.2f}"),
    ]
    print(table(rows, ("step", "seconds", "tasks/s", "ratio")))
    print(json.dumps({"benchmark": "intake", "tasks": n, "baseline_s": round(base.seconds, 2),
                      "accept_s": round(intake.seconds, 2), "ratio": round(intake.seconds / base.seconds, 3),
                      "tasks_per_s": round(n / intake.seconds, 1)}))


if __name__ == "__main__":
    main()

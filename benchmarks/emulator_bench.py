#!/usr/bin/env python
"""Benchmark the local Batch emulator (batchemu) against `xargs -P N` running the same commands.

    .venv/bin/python benchmarks/emulator_bench.py [--slots N] [--true-tasks 2000] [--sleep-tasks 1000]
                                                  [--submit-tasks 10000] [--submit-concurrency 0]

Cases:
  (a) N-slot pool runs `true` x 2000, submitted with client.create_tasks, until all complete
      (--rounds times, in turn with xargs; the round with the median ratio is reported);
  (b) the same with `sleep 0.05` x 1000 (slot utilisation = ideal time / emulator time);
  (c) submission of 10,000 tasks to a job whose pool has 0 nodes (nothing runs): tasks/s;
  (d) peak RSS (VmHWM) of the emulator process holding those 10,000 tasks.
Each emulator case is compared with `xargs -P N` executing the same commands (no shell, like Batch).
Prints a table and one JSON line (prefixed with "JSON ").
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from azure.batch import BatchClient  # noqa: E402
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential  # noqa: E402

from batchemu.process import EmulatorProcess  # noqa: E402


def client_for(emu) -> BatchClient:
    return BatchClient(endpoint=emu.url, credential=AzureNamedKeyCredential(emu.account, emu.key))


def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0])  # kB
    return out


def run_xargs(argv_tail: list[str], n_tasks: int, slots: int, arg: str) -> float:
    """`xargs -P slots -n 1 <cmd...>` fed with n_tasks copies of `arg` (exec, no shell)."""
    data = ("\n".join([arg] * n_tasks) + "\n").encode()
    t0 = time.perf_counter()
    subprocess.run(["xargs", "-P", str(slots), "-n", "1", *argv_tail], input=data, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_emulator_case(client, pool_id: str, job_id: str, command: str, n_tasks: int, submit_concurrency: int):
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    tasks = [m.BatchTaskCreateOptions(id=f"t{i:06d}", command_line=command) for i in range(n_tasks)]
    t0 = time.perf_counter()
    client.create_tasks(job_id, tasks, max_concurrency=submit_concurrency or None)
    t_submit = time.perf_counter() - t0
    polls = 0
    while True:
        c = client.get_job_task_counts(job_id).task_counts
        polls += 1
        if c.completed >= n_tasks:
            break
        time.sleep(0.05)
    total = time.perf_counter() - t0
    failed = c.failed
    return {"submit_s": t_submit, "total_s": total, "failed": failed, "polls": polls}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", type=int, default=2, help="N: pool slots, emulator max concurrency and xargs -P")
    ap.add_argument("--true-tasks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of case (a); the median round is reported")
    ap.add_argument("--sleep-tasks", type=int, default=1000)
    ap.add_argument("--sleep", type=float, default=0.05)
    ap.add_argument("--submit-tasks", type=int, default=10000)
    ap.add_argument("--submit-concurrency", type=int, default=0,
                    help="create_tasks(max_concurrency=...) for the submission case (0 = SDK default, serial)")
    args = ap.parse_args(argv)
    n = args.slots
    results: dict = {"slots": n, "cpu_count": os.cpu_count()}

    with tempfile.TemporaryDirectory(prefix="batchemu-bench-") as tmp:
        with EmulatorProcess(data_dir=os.path.join(tmp, "run"), max_concurrency=n) as emu:
            client = client_for(emu)
            client.create_pool(m.BatchPoolCreateOptions(id="bench", vm_size="standard_d2s_v3",
                                                        target_dedicated_nodes=1, task_slots_per_node=n))
            # warm-up (imports, first fork, sqlite)
            run_emulator_case(client, "bench", "warmup", "true", 20, 0)

            # (a) true x 2000, `rounds` times, xargs and emulator in turn; the median round by ratio
            rounds = []
            for i in range(max(1, args.rounds)):
                x = run_xargs(["true"], args.true_tasks, n, "x")
                e = run_emulator_case(client, "bench", f"true-job-{i}", "true", args.true_tasks, 0)
                rounds.append((e["total_s"] / x, x, e))
            rounds.sort(key=lambda r: r[0])
            _, x_true, e_true = rounds[len(rounds) // 2]
            results["true_rounds"] = [round(r[0], 3) for r in rounds]
            results["true"] = {"tasks": args.true_tasks, "xargs_s": round(x_true, 3),
                               "emulator_s": round(e_true["total_s"], 3), "submit_s": round(e_true["submit_s"], 3),
                               "emulator_tasks_per_s": round(args.true_tasks / e_true["total_s"], 1),
                               "xargs_tasks_per_s": round(args.true_tasks / x_true, 1),
                               "ratio": round(e_true["total_s"] / x_true, 3), "failed": e_true["failed"]}

            # (b) sleep 0.05 x 1000
            sleep_arg = repr(args.sleep)
            x_sleep = run_xargs(["sleep"], args.sleep_tasks, n, sleep_arg)
            e_sleep = run_emulator_case(client, "bench", "sleep-job", f"sleep {sleep_arg}", args.sleep_tasks, 0)
            ideal = args.sleep_tasks * args.sleep / n
            results["sleep"] = {"tasks": args.sleep_tasks, "sleep_s": args.sleep, "ideal_s": round(ideal, 3),
                                "xargs_s": round(x_sleep, 3), "emulator_s": round(e_sleep["total_s"], 3),
                                "submit_s": round(e_sleep["submit_s"], 3),
                                "emulator_tasks_per_s": round(args.sleep_tasks / e_sleep["total_s"], 1),
                                "xargs_tasks_per_s": round(args.sleep_tasks / x_sleep, 1),
                                "ratio": round(e_sleep["total_s"] / x_sleep, 3),
                                "slot_utilisation": round(ideal / e_sleep["total_s"], 3),
                                "xargs_slot_utilisation": round(ideal / x_sleep, 3), "failed": e_sleep["failed"]}

        # (c) + (d): a fresh emulator holding only the submitted tasks
        with EmulatorProcess(data_dir=os.path.join(tmp, "submit"), max_concurrency=n) as emu:
            client = client_for(emu)
            client.create_pool(m.BatchPoolCreateOptions(id="idle", vm_size="standard_d2s_v3", target_dedicated_nodes=0))
            client.create_job(m.BatchJobCreateOptions(id="held", pool_info=m.BatchPoolInfo(pool_id="idle")))
            base_mem = proc_status(emu.pid)
            tasks = [m.BatchTaskCreateOptions(id=f"task-{i:06d}", command_line=f"/bin/sh -c 'echo task {i}'")
                     for i in range(args.submit_tasks)]
            t0 = time.perf_counter()
            res = client.create_tasks("held", tasks, max_concurrency=args.submit_concurrency or None)
            t_submit = time.perf_counter() - t0
            counts = client.get_job_task_counts("held").task_counts
            t1 = time.perf_counter()
            listed = sum(1 for _ in client.list_tasks("held", select=["id", "state"]))
            t_list = time.perf_counter() - t1
            t2 = time.perf_counter()
            for _ in range(20):
                client.get_job_task_counts("held")
            t_counts = (time.perf_counter() - t2) / 20
            mem = proc_status(emu.pid)
            results["submit"] = {"tasks": args.submit_tasks, "submit_s": round(t_submit, 3),
                                 "tasks_per_s": round(args.submit_tasks / t_submit, 1),
                                 "sdk_max_concurrency": args.submit_concurrency or None,
                                 "accepted": len(res.result_values), "active": counts.active,
                                 "list_all_s": round(t_list, 3), "listed": listed,
                                 "taskcounts_ms": round(t_counts * 1000, 2)}
            results["memory"] = {"peak_rss_mb": round(mem["VmHWM"] / 1024, 1),
                                 "rss_mb": round(mem["VmRSS"] / 1024, 1),
                                 "baseline_rss_mb": round(base_mem["VmRSS"] / 1024, 1),
                                 "tasks_held": counts.active}

    goals = {"true_within_1.3x_xargs": results["true"]["ratio"] <= 1.3,
             "sleep_within_1.1x_xargs": results["sleep"]["ratio"] <= 1.1,
             "submission_ge_1000_per_s": results["submit"]["tasks_per_s"] >= 1000}
    results["goals"] = goals

    t, s, sub, mem = results["true"], results["sleep"], results["submit"], results["memory"]
    rows = [
        ("case", "emulator", "xargs -P %d" % n, "ratio", "notes"),
        ("(a) true x%d" % t["tasks"], f"{t['emulator_s']:.2f}s ({t['emulator_tasks_per_s']:.0f}/s)",
         f"{t['xargs_s']:.2f}s ({t['xargs_tasks_per_s']:.0f}/s)", f"{t['ratio']:.2f}x",
         f"submit {t['submit_s']:.2f}s; median of rounds {', '.join(f'{x:.2f}' for x in results['true_rounds'])}"),
        ("(b) sleep %s x%d" % (s["sleep_s"], s["tasks"]), f"{s['emulator_s']:.2f}s ({s['emulator_tasks_per_s']:.0f}/s)",
         f"{s['xargs_s']:.2f}s ({s['xargs_tasks_per_s']:.0f}/s)", f"{s['ratio']:.3f}x",
         f"ideal {s['ideal_s']:.2f}s, slot utilisation {s['slot_utilisation']:.1%} "
         f"(xargs {s['xargs_slot_utilisation']:.1%})"),
        ("(c) submit x%d" % sub["tasks"], f"{sub['submit_s']:.2f}s ({sub['tasks_per_s']:.0f}/s)", "-", "-",
         f"list all {sub['list_all_s']:.2f}s, taskcounts {sub['taskcounts_ms']:.1f} ms"),
        ("(d) peak RSS", f"{mem['peak_rss_mb']:.1f} MB", "-", "-",
         f"{mem['tasks_held']} tasks held; baseline {mem['baseline_rss_mb']:.1f} MB"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("goals: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in goals.items()))
    print("JSON " + json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

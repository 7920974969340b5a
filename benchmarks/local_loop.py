"""The local loop, drop -> succeeded, against `xargs -P 2` running the same commands.

The whole stack as `make up` runs it (Azurite, the Batch emulator, devhost as a process with the
local settings of local.settings.sample.json and devstack's options), one job file of N tasks of
`sleep S` on 2 slots (an auto pool of 2 one-slot nodes), against `xargs -P 2` sleeping the same.
Times from the upload of the job file until finalize wrote ``succeeded`` to status.json (its log line
right after; the benchmark reads status.json every POLL_S as a user would), split by report.json's
task times:

  to first task     blob-trigger detection, intake (split, upload, submit), the emulator's start
  tasks             first task start -> last task end (per task: input download, the task wrapper,
                    the command, output upload: "task overhead" is the mean beyond S)
  after last task   the monitor's tick, the finalize queue's poll, finalize itself
  intake ran, finalize ran: the functions' own durations (devhost's log)

Usage: python -m benchmarks.local_loop [--tasks N --seconds S] [--rounds R]
(default: 40 x 1 s and 200 x 0.2 s, 3 rounds each, the median round reported).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import ROOT, services, table
from scripts import devstack
from tests.services import stop_process

SLOTS = 2
# how often the benchmark reads status.json, as a user watching it would (`batchdrop watch` polls every
# 2 s); the end is taken from finalize's log line, so this costs no precision. Polling every 50 ms, as
# it did before, put 20 SDK reads a second on Azurite and 6% of a core on the machine being measured.
POLL_S = 0.5


def xargs_seconds(tasks: int, seconds: float) -> float:
    start = time.perf_counter()
    subprocess.run(["xargs", "-P", str(SLOTS), "-n", "1", "sleep"], input="\n".join([str(seconds)] * tasks),
                   text=True, check=True)
    return time.perf_counter() - start


def _time(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _durations(log_text: str) -> dict[str, float]:
    """Seconds each function's invocations took in all, from devhost's "Executed" lines."""
    import re

    out: dict[str, float] = {}
    for name, ms in re.findall(r"Executed 'Functions\.(\w+)' \(\w+, Id=[^,]+, Duration=(\d+)ms\)", log_text):
        out[name] = out.get(name, 0.0) + int(ms) / 1000
    return out


def _finalized_at(log_text: str, run_id: str) -> float:
    """When finalize wrote the run's final status.json: its "finalized" line, logged right after
    (devhost's timestamps are local time, to the millisecond)."""
    import re

    found = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*finalized run_id=" + re.escape(run_id) + r" ",
                      log_text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"devhost's log has no end of finalize for {run_id}")
    return time.mktime(time.strptime(found[1], "%Y-%m-%d %H:%M:%S")) + int(found[2]) / 1000


def loop_seconds(azurite, emulator, tasks: int, seconds: float, workdir: Path) -> dict:
    from azure.storage.blob import BlobServiceClient

    from tests.pipeline.helpers import settings_env

    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values = {**sample, **settings_env(azurite, emulator, uuid.uuid4().hex[:8])}
    for name in ("MONITOR_SCHEDULE", "MONITOR_TAIL_SECONDS", "UPLOAD_CONCURRENCY",
                 "SUBMIT_CONCURRENCY"):  # make up's, not the tests'
        values[name] = sample[name]
    settings_file = workdir / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in (values["INTAKE_CONTAINER"], values["DATA_CONTAINER"], values["RESULTS_CONTAINER"]):
        service.create_container(name)
    command = devstack.devhost_command(settings_file)
    log = open(workdir / "devhost.log", "wb")
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **values}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        intake = service.get_container_client(values["INTAKE_CONTAINER"])
        # devhost is up once its idle queue listeners have created their queues
        deadline = time.monotonic() + 60
        while b"Host started" not in (workdir / "devhost.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("devhost did not start:\n" + (workdir / "devhost.log").read_text()[-3000:])
            time.sleep(0.1)
        time.sleep(1.0)  # let the listeners settle into their idle back-off, as a stack left running does
        job = {"name": "loop", "command": f"sleep {seconds}", "input": {"items": list(range(tasks))},
               "merge": "none", "retries": 0, "pool": {"max_nodes": SLOTS, "slots_per_node": 1}}
        dropped = time.time()
        etag = intake.get_blob_client("loop.json").upload_blob(json.dumps(job).encode())["etag"]
        from shared import jobfile

        run_id = jobfile.run_id("loop", values["INTAKE_CONTAINER"], "loop.json", etag)
        status_blob = service.get_blob_client(values["RESULTS_CONTAINER"], f"{run_id}/status.json")
        deadline = time.monotonic() + 30 + tasks * seconds * 3
        while True:
            try:
                status = json.loads(status_blob.download_blob().readall())
            except Exception:  # not written yet
                status = {}
            if status.get("state") in ("succeeded", "failed", "rejected", "cancelled"):
                seen = time.time()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} did not finish; last state {status.get('state')}")
            time.sleep(POLL_S)
        if status["state"] != "succeeded":
            raise RuntimeError(f"run {run_id} ended {status['state']}")
        report = json.loads(service.get_blob_client(values["RESULTS_CONTAINER"], f"{run_id}/report.json")
                            .download_blob().readall())
        starts = [_time(t.get("start_time")) for t in report["entries"]]
        ends = [_time(t.get("end_time")) for t in report["entries"]]
        first, last = min(s for s in starts if s), max(e for e in ends if e)
        by_node: dict[str, list[tuple[float, float]]] = {}
        for t, s_, e_ in zip(report["entries"], starts, ends):
            by_node.setdefault(t.get("node_id") or "", []).append((s_ or 0.0, e_ or 0.0))
        gaps = [b[0] - a[1] for spans in by_node.values() for a, b in zip(sorted(spans), sorted(spans)[1:])]
        runs = [e_ - s_ for s_, e_ in zip(starts, ends) if s_ and e_]
        deadline = time.monotonic() + 10  # finalize wrote "succeeded"; devhost logs its end just after
        while "finalize" not in _durations((workdir / "devhost.log").read_text(errors="replace")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        log_text = (workdir / "devhost.log").read_text(errors="replace")
        durations = _durations(log_text)
        # logged just after the write: a read between the two saw it first (by milliseconds)
        done = min(_finalized_at(log_text, run_id), seen)
        if not dropped < done:
            raise RuntimeError(f"finalize logged its end at {done}, before the drop at {dropped}")
        return {"total": done - dropped, "to first task": first - dropped, "tasks": last - first,
                "after last task": done - last,
                "intake ran": durations.get("intake", 0.0), "finalize ran": durations.get("finalize", 0.0),
                "task overhead": sum(runs) / len(runs) - seconds, "gap": sum(gaps) / max(1, len(gaps)),
                "slots' last ends": max(e for _, e in (max(v) for v in by_node.values())) -
                min(e for _, e in (max(v) for v in by_node.values()))}
    finally:
        stop_process(proc, grace_s=15)
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, help="tasks in the job (with --seconds)")
    p.add_argument("--seconds", type=float, help="each task's `sleep`")
    p.add_argument("--rounds", type=int, default=3, help="rounds per case; the median round is reported (default 3)")
    args = p.parse_args(argv)
    cases = [(args.tasks, args.seconds)] if args.tasks and args.seconds else [(40, 1.0), (200, 0.2)]
    rows, details = [], []
    with services(max_concurrency=SLOTS) as (azurite, emulator):
        for tasks, seconds in cases:
            measured = []
            for _ in range(max(1, args.rounds)):
                with tempfile.TemporaryDirectory(prefix="bench-loop-") as work:
                    base = xargs_seconds(tasks, seconds)
                    loop = loop_seconds(azurite, emulator, tasks, seconds, Path(work))
                measured.append((loop["total"] / base, base, loop))
                print(f"round {len(measured)}: {tasks} x sleep {seconds:g}: {loop['total'] / base:.2f}, " +
                      ", ".join(f"{k} {v:.2f}" for k, v in loop.items()), flush=True)  # an outlier shows where
            measured.sort(key=lambda m: m[0])
            ratio, base, loop = measured[len(measured) // 2]  # the median (the higher one of two)
            rows.append((f"{tasks} x sleep {seconds:g}", f"{loop['total']:.1f} s", f"{base:.1f} s", f"{ratio:.2f}",
                         " ".join(f"{m[0]:.2f}" for m in measured)))
            details.append(f"{tasks} x sleep {seconds:g}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in loop.items() if k != "total"))
    print(table(rows, ("case", "drop -> succeeded", "xargs -P 2", "ratio (goal <= 1.15)", "all rounds")))
    print("phases of the reported round (s):")
    print("\n".join(details))
    return 0


if __name__ == "__main__":
    sys.exit(main())

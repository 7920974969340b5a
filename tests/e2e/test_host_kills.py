"""Issue 16, end to end: the functions host SIGKILLed in the middle of each step of a run and
restarted at once; every run ends within 3 minutes of the restart, once, with nothing left behind.

One stack (Azurite on disk, the Batch emulator, devhost on the repository's function app, as in
the chaos test: `tests/e2e/chaos.py`) and five kills of the host, at the four moments of the issue
(intake twice):

1. intake, whose run's record exists (`accepted`) and which holds its claim (a 14 MB input split
   into 8 tasks, one chunk): (upload) while it uploads the shards, before any task is in the Batch
   job (created first); (submit) once the Batch job exists, before the run is `running` (the
   re-driven intake meets JobExists, and TaskExists if it got that far);
2. request: the run is `merging` (the monitor asked for finalize), a host took the finalize message
   and no finalize has claimed the run yet: the case of the issue (the message stays invisible for
   the dead host's 10-minute queue lease);
3. merge: finalize holds its claim and has begun (a 3.6 MB merge), no report.json yet;
4. cleanup: report.json is written, status.json is not final yet.

How each moment is hit: the tasks of the runs of moments 2-4 wait for a gate file the test
creates, so a run goes to finalize only when the test lets it, never while the host is killed for
another run. Close to the moment, the host is stepped in slices of a few milliseconds (SIGCONT,
SIGSTOP) and storage is looked at while it is frozen (`host_kills_support.catch`); at the moment,
the frozen host is SIGKILLed, storage is looked at once more (still the moment: nothing the host
had sent changed it after all), and the host is started again at once on the same settings, data
and host id. A run whose moment passed between two looks is not counted (it must still end well):
the scenario takes its spare job file instead.

The kills come a few seconds apart (the last about 15 s after the first), and each killed step
waits for its claim to expire and the monitor's re-drive (75 s after it was last asked for), so the
recoveries overlap: the test takes about a minute and three quarters.

Then: every job file has exactly one run folder, `succeeded`, within 3 minutes of the restart that
followed its kill; its output holds each input record once, in order (report.json's sha256 is the
output's); status.json says the killed step was re-driven once (`redrives`, `last_redrive`) and
report.json counts it (but for the cleanup's re-drive: it comes after report.json, which is written
once); the runs no kill hit were not re-driven; no Batch job or pool, work container, control
marker or claim is left. On failure the message carries the timeline (also in
tmp_path/timeline.txt, beside the services' logs); CHAOS_VERBOSE=1 prints it as it happens.
"""
from __future__ import annotations

import hashlib
import json
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import pytest

from tests.e2e.chaos import TERMINAL, Timeline
from tests.e2e.host_kills_support import (
    COPY,
    HIT,
    INTAKE_THAW_S,
    KillStack,
    Scenario,
    catch,
    gated,
    jsonl,
    near_cleanup,
    near_intake,
    near_merge,
    near_request,
    probe_cleanup,
    probe_merge,
    probe_request,
    probe_submit,
    probe_upload,
)

pytestmark = pytest.mark.e2e

FINAL_WITHIN_S = 180.0  # issue 16: final within 3 minutes of the restart
CATCH_TIMEOUT_S = 45.0  # from the drop / the gate's opening to the moment
READY_TIMEOUT_S = 60.0  # the gated runs submitted
CLEAN_WITHIN_S = 30.0  # after the last run is final: the monitor retires runs on its next tick
KILLS_WITHIN_S = 55.0  # after the first kill; later, a kill could hit an earlier scenario's re-driven step
BIG_RECORDS, BIG_PER_TASK = 16_000, 2_000  # intake: 14 MB, 8 tasks
MERGE_RECORDS, MERGE_PER_TASK = 4_000, 1_000  # merge: 3.6 MB, 4 tasks
PAD = "x" * 900


@dataclass
class JobFile:
    name: str
    job: dict
    records: list[dict]
    gate: str | None = None  # its tasks wait for this gate
    run_id: str | None = None  # once dropped
    final_at: float | None = None  # timeline seconds when it was first seen final

    @property
    def body(self) -> bytes:
        return json.dumps(self.job).encode()


def make_jobs(stack: KillStack) -> tuple[dict[str, JobFile], dict[str, bytes], list[Scenario]]:
    """The job files (two per moment: the second is the spare), the data blobs, the scenarios."""
    data = stack.config.data_container
    big = [{"job": "big", "i": i, "pad": PAD} for i in range(BIG_RECORDS)]
    medium = [{"job": "medium", "i": i, "pad": PAD} for i in range(MERGE_RECORDS)]
    blobs = {"kills/big.jsonl": jsonl(big), "kills/medium.jsonl": jsonl(medium)}
    jobs: dict[str, JobFile] = {}

    def blob_job(name: str, path: str, records: list[dict], per_task: int, gate: str | None) -> None:
        command = COPY if gate is None else gated(COPY, stack.gate(gate))
        jobs[name] = JobFile(name, {"command": command, "input": {"blob": f"{data}/{path}", "format": "jsonl"},
                                    "items_per_task": per_task, "retries": 1}, records, gate)

    def items_job(name: str, gate: str) -> None:
        items = [{"job": name, "i": i} for i in range(4)]
        jobs[name] = JobFile(name, {"command": gated(COPY, stack.gate(gate)), "input": {"items": items},
                                    "items_per_task": 2, "retries": 1}, items, gate)

    for spare in ("", "-spare"):
        blob_job(f"k1-upload{spare}.json", "kills/big.jsonl", big, BIG_PER_TASK, None)
        blob_job(f"k1-submit{spare}.json", "kills/big.jsonl", big, BIG_PER_TASK, None)
        items_job(f"k2-request{spare}.json", f"request{spare}")
        blob_job(f"k3-merge{spare}.json", "kills/medium.jsonl", medium, MERGE_PER_TASK, f"merge{spare}")
        items_job(f"k4-cleanup{spare}.json", f"cleanup{spare}")
    scenarios = [
        Scenario("upload", "intake", probe_upload, near_intake, ["k1-upload.json", "k1-upload-spare.json"],
                 INTAKE_THAW_S),
        Scenario("submit", "intake", probe_submit, near_intake, ["k1-submit.json", "k1-submit-spare.json"],
                 INTAKE_THAW_S),
        Scenario("request", "finalize", probe_request, near_request, ["k2-request.json", "k2-request-spare.json"]),
        Scenario("merge", "finalize", probe_merge, near_merge, ["k3-merge.json", "k3-merge-spare.json"]),
        Scenario("cleanup", "finalize", probe_cleanup, near_cleanup, ["k4-cleanup.json", "k4-cleanup-spare.json"]),
    ]
    return jobs, blobs, scenarios


def test_host_killed_in_each_step_resumes(tmp_path):
    began = time.monotonic()
    timeline = Timeline(tmp_path / "timeline.txt")
    stack = KillStack(tmp_path, f"kills-{uuid.uuid4().hex[:8]}", timeline)
    problems: list[str] = []
    scenarios: list[Scenario] = []
    jobs: dict[str, JobFile] = {}
    try:
        stack.start()
        jobs, blobs, scenarios = make_jobs(stack)
        data = stack.blobs.get_container_client(stack.config.data_container)
        for path, body in blobs.items():
            data.upload_blob(path, body, overwrite=True)
        for job in jobs.values():
            if job.gate is not None:
                job.run_id = stack.drop(job.name, job.body)
        wait_submitted(stack, [j for j in jobs.values() if j.gate is not None], timeline)
        first_kill: float | None = None
        for scenario in scenarios:
            if first_kill is not None and timeline.now() - first_kill > KILLS_WITHIN_S:
                # a kill now could hit the re-driven steps of the runs killed so far: they end first
                timeline.note(f"{timeline.now() - first_kill:.0f}s since the first kill: waiting for the runs "
                              f"killed so far to end before the next kill")
                killed_so_far = {r for s in scenarios for r in s.killed_runs}
                wait_final(stack, [j for j in jobs.values() if j.run_id in killed_so_far], scenarios, timeline)
                first_kill = None
            play(stack, scenario, jobs, timeline)
            if scenario.killed_at is not None and first_kill is None:
                first_kill = scenario.killed_at
        for job in jobs.values():
            if job.gate is not None and not stack.gate(job.gate).exists():
                stack.open_gate(job.gate)  # the spares nobody needed
        timeline.note("kills over; waiting for every run to end")
        stuck = wait_final(stack, list(jobs.values()), scenarios, timeline)
        for job in stuck:
            problems.append(f"{job.name} (run {job.run_id}) not final: {not_final(stack, job, scenarios)}")
        if not stuck:  # what an unfinished run still holds is no leak
            left = wait_clean(stack, timeline)
            for what, names in left.items():
                if names:
                    problems.append(f"leaked {what}: {', '.join(sorted(names))}")
        check_results_folders(stack, jobs, problems)
        killed = {r for s in scenarios for r in s.killed_runs}
        for job in jobs.values():
            if job.run_id is not None and job.name not in {j.name for j in stuck}:
                check_run(stack, job, next((s for s in scenarios if s.run_id == job.run_id), None), killed, problems)
        for scenario in scenarios:
            if scenario.run_id is None:
                problems.append(f"{scenario.moment}: the moment was never hit: {'; '.join(scenario.missed)}")
        notes = {s.moment: redrive_note(stack, s) for s in scenarios}
    except Exception as e:  # a service that would not start, a look that raised: report with the timeline
        problems.append("".join(traceback.format_exception(e)).rstrip())
        notes = {}
    finally:
        stack.open_all_gates(j.gate for j in jobs.values() if j.gate is not None)
        codes = stack.stop()
    if codes.get("devhost") not in (0, None):
        problems.append(f"devhost exited {codes['devhost']} on SIGTERM at the end (expected 0)")
    summary = "\n".join([f"host kills: {time.monotonic() - began:.0f}s, {stack.devhost.kills} kill(s) of the host",
                         *(f"  {s.describe()}{notes.get(s.moment, '')}" for s in scenarios)])
    print("\n" + summary)
    assert not problems, "\n".join([
        f"{len(problems)} problem(s):", *[f"- {p}" for p in problems], "", summary,
        "", "timeline:", timeline.text(),
        "", f"logs in {tmp_path}; devhost log tail (without the monitor's quiet ticks):", stack.host_log_tail(),
    ])


# ------------------------------------------------------------------------------------ playing a scenario


def play(stack: KillStack, scenario: Scenario, jobs: dict[str, JobFile], timeline: Timeline) -> None:
    """Kill the host at the scenario's moment, on its first job file that is caught there, and
    restart it at once."""
    for name in scenario.candidates:
        job = jobs[name]
        if job.gate is None:
            job.run_id = stack.drop(name, job.body)
            timeline.note(f"{scenario.moment}: dropped {name} (run {job.run_id})")
        else:
            stack.open_gate(job.gate)
        run_id = job.run_id
        assert run_id is not None
        verdict, seen = catch(stack, partial(scenario.probe, stack, run_id), partial(scenario.near, stack, run_id),
                              CATCH_TIMEOUT_S, scenario.thaw_s)
        if verdict != HIT:
            scenario.missed.append(f"{name}: {verdict} {seen}".strip())
            timeline.note(f"{scenario.moment}: {name} not caught at the moment: {verdict} {seen}")
            wait_quiet(stack, job, timeline)
            continue
        stack.devhost.kill()
        scenario.killed_runs.append(run_id)
        killed_at = timeline.now()
        timeline.note(f"KILL devhost: {scenario.moment} of {name} (run {run_id}): {seen}")
        time.sleep(0.3)
        again, now = scenario.probe(stack, run_id)
        took = stack.restart_devhost()
        timeline.note(f"devhost restarted ({took:.1f}s)")
        if again != HIT:  # what the host had sent moved the run on after all: not this moment
            scenario.missed.append(f"{name}: killed at the moment, but then {again} {now}".strip())
            timeline.note(f"{scenario.moment}: {name} was past the moment after all ({again} {now})")
            wait_quiet(stack, job, timeline)
            continue
        scenario.run_id, scenario.job_file, scenario.seen = run_id, name, seen
        scenario.killed_at, scenario.restarted_at, scenario.restarted_wall = killed_at, timeline.now(), time.time()
        return


def wait_quiet(stack: KillStack, job: JobFile, timeline: Timeline, within_s: float = 20.0) -> None:
    """After a missed moment: let the run's finalize end before the next kill, so that kill does
    not hit it as well (a run that needs a re-drive now is left to it)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if job.run_id and stack.state(job.run_id) in TERMINAL:
            return
        time.sleep(0.2)
    timeline.note(f"{job.name} not final {within_s:.0f}s after its missed moment (left to the re-drive)")


def wait_submitted(stack: KillStack, jobs: list[JobFile], timeline: Timeline) -> None:
    """Bounded wait until every gated run is `running` (intake done: no host work left for them
    until their gates open)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        states = {j.name: stack.state(j.run_id) for j in jobs if j.run_id}
        if all(s == "running" for s in states.values()):
            timeline.note(f"{len(states)} gated runs submitted, their tasks waiting at their gates")
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"gated runs not running after {READY_TIMEOUT_S:.0f}s: {states}")
        time.sleep(0.2)


def wait_final(stack: KillStack, jobs: list[JobFile], scenarios: list[Scenario],
               timeline: Timeline) -> list[JobFile]:
    """Bounded polling until the runs of `jobs` are final (or 3 minutes after the last restart),
    noting each state change and re-drive in the timeline. Returns the runs that are not final."""
    restarts = [s.restarted_at for s in scenarios if s.restarted_at is not None]
    deadline = time.monotonic() - timeline.now() + max(restarts or [timeline.now()]) + FINAL_WITHIN_S + 5
    seen: dict[str, tuple] = {}
    while True:
        open_runs: list[JobFile] = []
        for job in jobs:
            if job.run_id is None or job.final_at is not None:
                continue
            status = stack.status(job.run_id) or {}
            state = status.get("state")
            now = (state, json.dumps(status.get("redrives") or {}), status.get("finalize_attempts"))
            if seen.get(job.name) != now:
                seen[job.name] = now
                redrive = status.get("last_redrive")
                timeline.note(f"{job.name}: {state}, redrives {now[1]}, finalize_attempts {now[2]}"
                              + (f", last re-drive: {redrive}" if redrive else ""))
            if state in TERMINAL:
                job.final_at = timeline.now()
                for s in scenarios:
                    if s.run_id == job.run_id:
                        s.final_at, s.final_state = job.final_at, state
            else:
                open_runs.append(job)
        if not open_runs or time.monotonic() > deadline:
            timeline.note(f"{len(jobs)} run(s) waited for: " + ("every one is final" if not open_runs
                          else f"not final: {[j.name for j in open_runs]}"))
            return open_runs
        time.sleep(0.5)


def not_final(stack: KillStack, job: JobFile, scenarios: list[Scenario]) -> str:
    """What a run that did not end looks like: its state, claims and queue, and what the host
    said about it last."""
    run_id = job.run_id or ""
    status = stack.status(run_id) or {}
    scenario = next((s for s in scenarios if s.run_id == run_id), None)
    since = f"{stack.timeline.now() - scenario.restarted_at:.0f}s after its restart, " if scenario and \
        scenario.restarted_at is not None else ""
    visible, taken = stack.finalize_messages(run_id)
    text = stack.devhost.log_path.read_text(errors="replace") if stack.devhost.log_path.exists() else ""
    said = [line.strip() for line in text.splitlines() if run_id and run_id in line][-8:]
    return (f"{since}{status.get('state')}, redrives {status.get('redrives') or {}}, last_redrive "
            f"{status.get('last_redrive')}, finalize_attempts {status.get('finalize_attempts')}, "
            f"updated_at {status.get('updated_at')}, finalize_requested_at {status.get('finalize_requested_at')}; "
            f"claims intake {stack.claim(run_id, 'intake')} / finalize {stack.claim(run_id, 'finalize')}; "
            f"finalize queue: {visible} message(s) for it visible, {taken} message(s) taken by a host; report.json "
            f"{'written' if stack.has_report(run_id) else 'absent'}; the host's last lines about it:\n      "
            + "\n      ".join(said or ["(none)"]))


def wait_clean(stack: KillStack, timeline: Timeline) -> dict[str, list[str]]:
    """Bounded polling until no Batch job or pool, work container, control marker or claim is left."""
    deadline = time.monotonic() + CLEAN_WITHIN_S
    while True:
        left = {**stack.leftovers(), "claims": stack.claims_left()}
        if not any(left.values()) or time.monotonic() > deadline:
            timeline.note("clean" if not any(left.values()) else f"still left: {left}")
            return left
        time.sleep(0.5)


# ------------------------------------------------------------------------------------ checks


def check_results_folders(stack: KillStack, jobs: dict[str, JobFile], problems: list[str]) -> None:
    """One run folder per job file, and no other."""
    prefix = stack.config.intake_container + "/"
    by_file: dict[str, list[str]] = {}
    for status in stack.statuses():
        by_file.setdefault(str(status.get("job_file", "")).removeprefix(prefix), []).append(status["run_id"])
    for job in jobs.values():
        if job.run_id is not None and by_file.get(job.name) != [job.run_id]:
            problems.append(f"{job.name}: run folders {by_file.get(job.name)}, expected [{job.run_id}]")
    results = stack.blobs.get_container_client(stack.config.results_container)
    folders = {b.name.split("/", 1)[0] for b in results.list_blobs()}
    others = folders - {j.run_id for j in jobs.values()}
    if others:
        problems.append(f"results holds folders of no job file: {sorted(others)}")


def check_run(stack: KillStack, job: JobFile, scenario: Scenario | None, killed: set[str],
              problems: list[str]) -> None:
    """Succeeded, once, with each record once, saying what was re-driven."""
    run_id = job.run_id or ""
    status = stack.status(run_id) or {}
    report = stack.report(run_id) or {}
    where = f"{job.name} (run {run_id}, {status.get('state')})"
    if status.get("state") != "succeeded":
        problems.append(f"{where}: expected succeeded; error: {status.get('error')}")
        return
    if scenario is not None and scenario.restarted_at is not None:
        took = (job.final_at or float("inf")) - scenario.restarted_at
        if took > FINAL_WITHIN_S:
            problems.append(f"{where}: final {took:.0f}s after the restart (at most {FINAL_WITHIN_S:.0f}s)")
    output = stack.read_blob(f"{run_id}/output.jsonl")
    if output is None:
        problems.append(f"{where}: no output.jsonl")
        return
    have = [json.loads(line) for line in output.splitlines() if line.strip()]
    if have != job.records:
        keys = [(r["job"], r["i"]) for r in have]
        doubled = len(keys) - len(set(keys))
        problems.append(f"{where}: the output holds {len(have)} records ({doubled} repeated), "
                        f"expected the {len(job.records)} input records once each, in order")
    if report.get("state") != "succeeded" or report.get("output_sha256") != hashlib.sha256(output).hexdigest():
        problems.append(f"{where}: report.json says {report.get('state')}, sha256 {report.get('output_sha256')} "
                        f"(the output's is {hashlib.sha256(output).hexdigest()})")
    redrives, reported = status.get("redrives") or {}, report.get("redrives")
    if scenario is None:
        # a spare, or a run whose moment passed without a kill: nothing stalled, nothing to re-drive
        if redrives and job.run_id not in killed:
            problems.append(f"{where}: never killed, yet re-driven: {redrives}, {status.get('last_redrive')}")
        return
    step = scenario.step
    last = status.get("last_redrive") or {}
    if step == "intake" and not redrives.get("intake"):
        retried = intake_runs(stack, job.name)
        if retried < 2:  # nor did the blob trigger's retry run it again
            problems.append(f"{where}: killed during intake, yet status.json shows no intake re-drive "
                            f"(redrives {redrives}) and the blob trigger ran intake {retried} time(s)")
        return
    if redrives != {step: 1} or last.get("step") != step or not last.get("why"):
        problems.append(f"{where}: killed at the {scenario.moment}: expected one {step} re-drive in status.json, "
                        f"found redrives {redrives}, last_redrive {last}")
    # report.json is written once: a re-drive after it (the cleanup's) is not in it
    expected = [{step: 1}] if scenario.moment != "cleanup" else [{}, {step: 1}]
    if reported not in expected:
        problems.append(f"{where}: report.json redrives {reported}, expected one of {expected}")


def intake_runs(stack: KillStack, job_name: str) -> int:
    """How often the blob trigger ran intake on the job file (the devhost log's invocations)."""
    text = stack.devhost.log_path.read_text(errors="replace") if stack.devhost.log_path.exists() else ""
    return sum(1 for line in text.splitlines()
               if "Executing 'Functions.intake'" in line and f"/{job_name}'" in line)


def redrive_note(stack: KillStack, scenario: Scenario) -> str:
    """When the re-drive came, after the restart (status.json's last_redrive, to the second), and
    what report.json counts."""
    if scenario.run_id is None or scenario.restarted_wall is None:
        return ""
    last = (stack.status(scenario.run_id) or {}).get("last_redrive") or {}
    if not last.get("at"):
        return ""
    at = datetime.fromisoformat(last["at"].replace("Z", "+00:00")).timestamp()
    reported = (stack.report(scenario.run_id) or {}).get("redrives")
    return (f"; re-driven {at - scenario.restarted_wall:.0f}s after the restart ({last.get('why')}); "
            f"report.json redrives {reported}")

"""Host kills at chosen moments of a run (issue 16): the local stack of the chaos test, runs whose
tasks wait for a gate the test opens, and a way to stop the functions host at an exact step.

* `KillStack`: `ChaosStack` (Azurite on disk, the emulator, devhost with a fixed host id) with
  enough emulator slots for every gated task at once, plus read-only looks at what the pipeline
  keeps in storage (status.json, report.json, claims, the finalize queue, work containers).
* Gates: a task of a gated run waits until a file the test creates exists (the emulator runs
  tasks as local processes), so a run reaches `merging` exactly when the test lets it, and never
  while the host is being killed for another run.
* `catch`: steps the host forward in slices of a few milliseconds (SIGCONT, sleep, SIGSTOP) and
  looks at storage while it is frozen, until a probe says the moment has come; the host is then
  left frozen for the SIGKILL. The slices are much shorter than any of the moments (each spans
  several storage calls), so a moment is hit, not jumped over. A frozen host is given `SETTLE_S`
  before each look, so a request it sent just before it was frozen is answered and seen.
* The probes (`probe_upload`, `probe_submit`, `probe_request`, `probe_merge`, `probe_cleanup`)
  say, from outside, whether a run is at the moment of its scenario: `HIT`, `WAIT`, or why it was
  missed; `near_*` say when to begin stepping the host (before that it runs freely).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError

from shared import naming
from shared.settings import Settings
from tests.e2e.chaos import TERMINAL, ChaosStack, EmulatorService, Timeline

HIT, WAIT = "hit", "wait"
THAW_S = 0.008  # how long the host runs between two looks while a moment is being caught
INTAKE_THAW_S = 0.03  # intake's moments last hundreds of milliseconds: fewer looks
SETTLE_S = 0.05  # after freezing, before looking: what the host had sent is answered by then
GATE_LIMIT_S = 300  # a gate never opened (a test that broke off) stops holding its task after this
COPY = 'cat "$INPUT_PATH" > "$OUTPUT_PATH"'


def gated(command: str, gate: Path) -> str:
    """`command`, once the gate file exists (or after GATE_LIMIT_S: a task process outlives the
    emulator that started it, and must not wait for ever)."""
    return (f'i=0; while [ ! -e "{gate}" ] && [ $i -lt {GATE_LIMIT_S * 20} ]; do sleep 0.05; i=$((i+1)); done; '
            f'{command}')


def jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


class KillStack(ChaosStack):
    """The chaos test's stack, read from outside the way an operator would look at it."""

    def __init__(self, workdir: Path, host_id: str, timeline: Timeline, slots: int = 16) -> None:
        super().__init__(workdir, host_id, timeline)
        # every gated task runs (and waits at its gate) at once: none waits for a slot
        self.emulator = EmulatorService(workdir / "batchemu", workdir / "batchemu.log", max_concurrency=slots)
        self.gates = workdir / "gates"
        self.gates.mkdir(exist_ok=True)

    @property
    def config(self) -> Settings:
        """The settings the host got (once started)."""
        assert self.settings is not None, "the stack is not started"
        return self.settings

    # -- gates -----------------------------------------------------------------------------------

    def gate(self, name: str) -> Path:
        return self.gates / name

    def open_gate(self, name: str) -> None:
        self.gate(name).touch()
        self.timeline.note(f"gate {name} opened")

    def open_all_gates(self, names) -> None:
        """Let every waiting task go (at the end, whatever happened: their processes outlive the emulator)."""
        for name in names:
            self.gate(name).touch()

    def host_log_tail(self, lines: int = 40) -> str:
        """The end of the host's log without the monitor's quiet ticks."""
        text = self.devhost.log_path.read_text(errors="replace") if self.devhost.log_path.exists() else ""
        quiet = ("Executing 'Functions.monitor'", "Executed 'Functions.monitor' (Succeeded", "monitor tick runs=")
        return "\n".join([line for line in text.splitlines() if not any(q in line for q in quiet)][-lines:])

    # -- looks -----------------------------------------------------------------------------------

    def drop(self, blob_name: str, body: bytes) -> str:
        """Put a job file into intake; returns the run id it gets."""
        from shared import jobfile

        props = self.blobs.get_blob_client(self.config.intake_container, blob_name).upload_blob(body, overwrite=True)
        name = jobfile.parse_job_file(body, blob_name=blob_name).name
        return naming.run_id(name, self.config.intake_container, blob_name, props["etag"])

    def status(self, run_id: str) -> dict | None:
        return self.read_json(f"{run_id}/status.json")

    def report(self, run_id: str) -> dict | None:
        return self.read_json(f"{run_id}/report.json")

    def has_report(self, run_id: str) -> bool:
        return self.blobs.get_blob_client(self.config.results_container, f"{run_id}/report.json").exists()

    def claim(self, run_id: str, step: str) -> str:
        """The claim blob's lease state: "leased", "available", "expired", "broken" or "none"."""
        blob = self.blobs.get_blob_client(self.config.control_container, naming.claim_blob(run_id, step))
        try:
            return str(blob.get_blob_properties().lease.state)
        except ResourceNotFoundError:
            return "none"

    def finalize_messages(self, run_id: str) -> tuple[int, int]:
        """(visible finalize messages naming the run, invisible finalize messages: taken by a host)."""
        from shared.storage import queue_client

        queue = queue_client(self.settings, self.settings.finalize_queue)
        try:
            total = queue.get_queue_properties().approximate_message_count
            visible = list(queue.peek_messages(max_messages=32))
        except ResourceNotFoundError:
            return 0, 0
        return sum(1 for m in visible if run_id in str(m.content)), (total or 0) - len(visible)

    def shards(self, run_id: str) -> int:
        """Blobs in the run's input work container (0 when there is none yet)."""
        inputs, _ = naming.work_containers(self.config.work_prefix, run_id)
        try:
            return sum(1 for _ in self.blobs.get_container_client(inputs).list_blobs())
        except ResourceNotFoundError:
            return 0

    def batch_tasks(self, run_id: str) -> int | None:
        """Tasks in the run's Batch job, None when there is no job."""
        try:
            return sum(1 for _ in self.batch.list_tasks(run_id, select=["id"]))
        except ResourceNotFoundError:
            return None

    def tasks_done(self, run_id: str) -> bool:
        """Every task of the run's Batch job has completed (False when there is no job or no task)."""
        try:
            tasks = list(self.batch.list_tasks(run_id, select=["id", "state"]))
        except ResourceNotFoundError:
            return False
        return bool(tasks) and all(t.state == "completed" for t in tasks)

    def state(self, run_id: str) -> str | None:
        status = self.status(run_id)
        return status["state"] if status else None

    def work_containers(self, run_id: str) -> list[str]:
        prefix = naming.work_containers(self.config.work_prefix, run_id)[0].removesuffix("-in")
        return [c.name for c in self.blobs.list_containers(name_starts_with=prefix)]

    def claims_left(self) -> list[str]:
        control = self.blobs.get_container_client(self.config.control_container)
        return [b.name for b in control.list_blobs(name_starts_with=naming.CLAIMS_PREFIX)]

    def restart_devhost(self) -> float:
        """Start the (killed) host again in place: same settings, data and host id. Returns how
        long it took until it said "Host started"."""
        began = time.monotonic()
        self.devhost.start()
        return time.monotonic() - began


# ------------------------------------------------------------------------------------ catching a moment


Probe = Callable[[], tuple[str, str]]


def catch(stack: KillStack, probe: Probe, near: Callable[[], bool], timeout_s: float,
          thaw_s: float = THAW_S) -> tuple[str, str]:
    """Let the host run until `near()` (looked at every few milliseconds, the host running), then
    step it until `probe()` (called while the host is frozen) says HIT, or something else than WAIT
    (the moment passed), or the timeout. Returns the probe's last (verdict, detail); on HIT the
    host is left frozen, otherwise it runs."""
    host = stack.devhost
    deadline = time.monotonic() + timeout_s
    while not near():
        if time.monotonic() > deadline:
            return "timeout", f"not near the moment after {timeout_s:.0f}s: {probe()[1]}"
        time.sleep(0.02)
    looks = 0
    while True:
        host.freeze()
        time.sleep(SETTLE_S)
        verdict, detail = probe()
        looks += 1
        if verdict == HIT:
            return verdict, f"{detail} (look {looks} of the frozen host)"
        if verdict != WAIT or time.monotonic() > deadline:
            host.thaw()
            return (verdict, detail) if verdict != WAIT else ("timeout", f"after {timeout_s:.0f}s: {detail}")
        host.thaw()
        time.sleep(thaw_s)


@dataclass(frozen=True)
class IntakeLook:
    passed: str | None  # why intake's moments are over (the run got further)
    at_work: bool  # `accepted` and the intake claim held
    shards: int  # uploaded so far
    tasks: int | None  # in the Batch job; None: no job yet
    detail: str


def look_at_intake(stack: KillStack, run_id: str) -> IntakeLook:
    status = stack.status(run_id)
    if status is None:
        return IntakeLook(None, False, 0, None, "no status.json yet")
    if status["state"] != "accepted":
        return IntakeLook(f"missed: the run is {status['state']} already", False, 0, None, "")
    claim = stack.claim(run_id, "intake")
    shards, tasks = stack.shards(run_id), stack.batch_tasks(run_id)
    detail = (f"accepted, intake claim {claim}, {shards} shard(s) uploaded, "
              + ("no Batch job yet" if tasks is None else f"Batch job with {tasks} task(s)"))
    return IntakeLook(None, claim == "leased", shards, tasks, detail)


def probe_upload(stack: KillStack, run_id: str) -> tuple[str, str]:
    """Intake at work on a run whose record exists, uploading the first chunk's shards: some are
    there, no task is in the Batch job yet (intake creates the job first, with TASK_COUNT)."""
    look = look_at_intake(stack, run_id)
    if look.passed:
        return look.passed, look.detail
    if look.tasks:
        return "missed: the upload is over", look.detail
    return (HIT if look.at_work and look.shards else WAIT), look.detail


def probe_submit(stack: KillStack, run_id: str) -> tuple[str, str]:
    """Intake at work on a run whose record exists, submitting: the Batch job exists, the run is
    not `running` yet."""
    look = look_at_intake(stack, run_id)
    if look.passed:
        return look.passed, look.detail
    return (HIT if look.at_work and look.tasks is not None else WAIT), look.detail


def probe_request(stack: KillStack, run_id: str) -> tuple[str, str]:
    """`merging` (the monitor asked for finalize), a host took the finalize message (it is in the
    queue, invisible: the host's 10-minute lease) and no finalize holds the claim yet: the case of
    issue 16. Only a re-drive gets such a run going again before the lease ends. (The moment between
    the monitor's write and its send, one storage call long, is not aimed at: it is hit only by
    chance; it needs the same re-drive.) Assumes no other finalize message is taken by a host."""
    status = stack.status(run_id)
    state = status["state"] if status else None
    if state in TERMINAL:
        return f"missed: the run is {state} already", ""
    if state != "merging":
        return WAIT, f"state {state}"
    claim = stack.claim(run_id, "finalize")
    if claim == "leased" or stack.has_report(run_id):
        return "missed: a finalize claimed the run first", f"claim {claim}"
    visible, total = stack.finalize_messages(run_id)
    if visible or not total:
        return WAIT, f"merging, the finalize message {'in the queue, visible' if visible else 'not sent yet'}"
    return HIT, f"merging, finalize claim {claim}, the finalize message taken by the host (invisible)"


def probe_merge(stack: KillStack, run_id: str) -> tuple[str, str]:
    """A finalize holds the claim and has begun (finalize_attempts counted), no report.json yet."""
    status = stack.status(run_id) or {}
    state = status.get("state")
    if state in TERMINAL or stack.has_report(run_id):
        return f"missed: the merge is over (state {state}, report.json written)", ""
    if state != "merging":
        return WAIT, f"state {state}"
    claim = stack.claim(run_id, "finalize")
    attempts = status.get("finalize_attempts", 0)
    detail = f"merging, finalize claim {claim}, finalize_attempts {attempts}, no report.json"
    if claim != "leased" or attempts < 1:
        return WAIT, detail
    return HIT, detail


def probe_cleanup(stack: KillStack, run_id: str) -> tuple[str, str]:
    """report.json written, status.json not final yet: finalize is cleaning up."""
    status = stack.status(run_id)
    state = status["state"] if status else None
    if state in TERMINAL:
        return f"missed: the run is {state} already", ""
    if state != "merging" or not stack.has_report(run_id):
        return WAIT, f"state {state}, no report.json"
    job = stack.batch_tasks(run_id)
    return HIT, (f"merging with report.json; Batch job {'gone' if job is None else 'still there'}, "
                 f"work containers {stack.work_containers(run_id)}")


# where the stepping begins: shortly before the moment (the host runs freely until then)


def near_intake(stack: KillStack, run_id: str) -> bool:
    """The record exists: the upload begins within a storage call or two."""
    return stack.status(run_id) is not None


def near_request(stack: KillStack, run_id: str) -> bool:
    return stack.tasks_done(run_id)


def near_merge(stack: KillStack, run_id: str) -> bool:
    return stack.state(run_id) == "merging"


def near_cleanup(stack: KillStack, run_id: str) -> bool:
    return stack.claim(run_id, "finalize") == "leased"


# ------------------------------------------------------------------------------------ scenarios


@dataclass
class Scenario:
    """One kill: the moment, the job files that may be used for it (the first one that is caught
    at the moment; the others run to the end untouched), and what happened."""

    moment: str  # upload | submit | request | merge | cleanup
    step: str  # the step that must be re-driven: intake | finalize
    probe: Callable[[KillStack, str], tuple[str, str]]
    near: Callable[[KillStack, str], bool]
    candidates: list[str]  # job file names
    thaw_s: float = THAW_S  # the host's slice between two looks
    run_id: str | None = None  # the run that was killed at the moment
    job_file: str | None = None
    seen: str = ""  # what the probe saw when the host was killed
    missed: list[str] = field(default_factory=list)
    killed_at: float | None = None  # timeline seconds
    restarted_at: float | None = None
    restarted_wall: float | None = None  # time.time() then, to compare with status.json's times
    killed_runs: list[str] = field(default_factory=list)  # every run the host was killed for, missed ones too
    final_at: float | None = None
    final_state: str | None = None

    def describe(self) -> str:
        if self.run_id is None:
            return f"{self.moment}: not hit ({'; '.join(self.missed) or 'not tried'})"
        ended = (f"{self.final_state} {self.final_at - self.restarted_at:.1f}s after the restart"
                 if self.final_at is not None and self.restarted_at is not None else "not final")
        return (f"{self.moment}: {self.job_file} run {self.run_id} killed at {self.killed_at:.1f}s ({self.seen}), "
                f"restarted at {self.restarted_at:.1f}s, {ended}"
                + (f"; missed first: {'; '.join(self.missed)}" if self.missed else ""))

"""The run record (results/<run>/status.json): its states, its fields, and every change to it.

`RunRecord` is the typed record. Its transitions (`running`, `finalize_requested`, `claimed`,
`finished`, `ended`, ...) are pure: each returns the changed record, or None when the change
does not apply in the record's state. `RunStore` is the only writer: it stores a transition's
result with a conditional write (If-Match on the ETag read), so of two monitors or finalizers
racing on a run exactly one wins and the other gets `Conflict`; and it writes what goes with a
state change (error.json, report.json, the monitor's index, the lifecycle event, the cleanup).

status.json keeps the layout users read (docs/jobfile.md): the same keys with the same values,
in the order they were first written, and keys this code does not know are kept as they are.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import jobfile, naming
from shared.errors import Conflict, JobFileError, RunNotFound
from shared.events import EventPublisher
from shared.jobfile import ExistingPool, JobSpec, PoolSpec
from shared.naming import RunPaths
from shared.settings import PoolDefaults
from shared.storage import JsonBlobs

log = logging.getLogger(__name__)

__all__ = ["RunPaths", "RunRecord", "RunStore", "TaskCounts", "JobFileVersion", "MergeCommand"]

ACCEPTED, QUEUED, RUNNING, MERGING = "accepted", "queued", "running", "merging"
SUCCEEDED, FAILED, CANCELLED, REJECTED = "succeeded", "failed", "cancelled", "rejected"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, REJECTED})
ACTIVE = frozenset({ACCEPTED, QUEUED, RUNNING, MERGING})  # the monitor watches them
ADMITTED = frozenset({ACCEPTED, RUNNING, MERGING})  # what MAX_ACTIVE_RUNS counts

_ALLOWED = {
    ACCEPTED: {QUEUED, RUNNING, REJECTED, FAILED, CANCELLED},
    # accepted again: admitted (the monitor re-requests its intake); it keeps its place should Batch refuse again
    QUEUED: {ACCEPTED, CANCELLED, FAILED},
    RUNNING: {MERGING, FAILED, CANCELLED},
    # not cancelled: once merging, finalize owns the run's end (a cancel then would race its
    # output, report and error.json), and all its tasks have already run
    MERGING: {SUCCEEDED, FAILED, RUNNING},  # running again: finalize found outputs lost, their tasks rerun
}

Clock = Callable[[], datetime]
Cleanup = Callable[..., None]  # (run_id, *, keep_outputs: bool): see shared.cleanup.remove_run


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    """The one timestamp format of every document: "2026-11-28T10:15:02Z"."""
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_ms(t: datetime) -> str:
    """`iso` to the millisecond, for what can come and go within a second (task times, node samples)."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """The inverse of `iso` (any ISO 8601 form with a zone is accepted)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _second(t: datetime) -> datetime:
    """What `iso` keeps of a time, so a stored time equals the one read back."""
    return t.astimezone(UTC).replace(microsecond=0)


def can_transition(current: str, target: str) -> bool:
    return target == current or target in _ALLOWED.get(current, set())


def fails_run(on_task_failure: str, failed_tasks: int) -> bool:
    """Under `fail` (the default) one task that failed all its tries fails the run; under
    `partial` the run goes on and merges what succeeded."""
    return on_task_failure != "partial" and failed_tasks > 0


# ----------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class TaskCounts:
    """status.json's "tasks". `stopped` (tasks that never finished because the run stopped
    early) is written only when there are any."""

    total: int = 0
    active: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    stopped: int = 0
    waiting_retry: int = 0  # failed by the infrastructure, to be run again (shared.retries)

    @classmethod
    def waiting(cls, total: int) -> TaskCounts:
        return cls(total=total, active=total)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TaskCounts:
        return cls(**{f.name: int(doc.get(f.name) or 0) for f in fields(cls)})

    def to_json(self) -> dict[str, int]:
        out = {"total": self.total, "active": self.active, "running": self.running,
               "succeeded": self.succeeded, "failed": self.failed}
        if self.stopped:
            out["stopped"] = self.stopped
        if self.waiting_retry:
            out["waiting_retry"] = self.waiting_retry
        return out


@dataclass(frozen=True)
class MergeCommand:
    """The user's own recombiner (`"merge": {"command": ...}`)."""

    command: str
    image: str | None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> MergeCommand:
        return cls(doc["command"], doc.get("image"))

    def to_json(self) -> dict[str, str | None]:
        return {"command": self.command, "image": self.image}


@dataclass(frozen=True)
class JobFileVersion:
    """One upload of a job file: the blob's container, name and ETag. A run belongs to exactly one."""

    container: str
    blob_name: str
    etag: str

    @property
    def path(self) -> str:
        return f"{self.container}/{self.blob_name}"

    @property
    def version(self) -> str:
        return self.etag.strip().strip('"')

    def made(self, run: RunRecord) -> bool:
        """Whether a run record was made from this upload (and not from another that hashes alike)."""
        return run.job_file == self.path and run.job_file_etag == self.version


@dataclass(frozen=True)
class ActiveMarker:
    """The monitor's index entry of a run: since when, and (for a run whose intake is under way)
    the job file it comes from and how often its intake was re-driven."""

    since: datetime
    source: JobFileVersion | None = None
    redrives: int = 0


_BOOKKEEPING = frozenset({"keys", "extra", "etag"})
_TIMES = frozenset({"created_at", "updated_at", "submitted_at", "last_submitted_at", "job_checked_at",
                    "finalize_requested_at", "merge_task_started_at", "finished_at", "outputs_kept_until"})
_TIME_MAPS = frozenset({"retry_waiting"})


@dataclass(frozen=True)
class RunRecord:
    """status.json as a typed record. Defaults are what a reader assumes for a key the document
    does not hold; only keys in `keys` are written (a key once written stays, None as null)."""

    run_id: str
    state: str
    name: str | None = None
    job_file: str | None = None
    job_file_etag: str | None = None
    input_etag: str | None = None  # the input blob's version: every intake try splits the same bytes
    tasks: TaskCounts = TaskCounts()
    merge: str = "jsonl"
    on_task_failure: str = "fail"
    output_extension: str | None = None  # of the merged output; None for merge "none"
    task_output: str | None = None  # the file each task writes, e.g. output.jsonl
    pool: str | None = None  # "auto", or the id of the user's pool
    task_timeout_minutes: int = jobfile.DEFAULT_TASK_TIMEOUT_MINUTES
    vm_size: str | None = None  # of the auto pool's nodes (for the cost); None for a pool the job file named
    slots_per_node: int = 1
    merge_command: MergeCommand | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    # submission in chunks (shared.submit): tasks in Batch so far (None: all of them, as before chunks), and
    # when the last chunk went in (a submission quiet for long is re-driven)
    submitted: int | None = None
    last_submitted_at: datetime | None = None
    submit_resume: Mapping[str, Any] | None = None  # where the input's split resumes for `submitted` (split.Resume)
    job_checked_at: datetime | None = None  # when the monitor last looked at a quiet run's job
    job_ended: str | None = None  # why the Batch job ended before all its tasks ran
    finalize_requested_at: datetime | None = None
    finalize_requests: int = 1
    last_rerun: Mapping[str, Any] | None = None  # {"tasks", "why"}: outputs finalize found lost
    merge_progress: Mapping[str, Any] | None = None  # a merge in parts, so far (shared.merge_parts)
    merge_task: str | None = None  # "running", then "done"
    merge_task_started_at: datetime | None = None
    finalize_attempts: int = 0  # finalizes that claimed the run (a finalize that keeps dying is given up on)
    # infrastructure retries (shared.retries): per task id, those spent; per Batch task id, when it is
    # reactivated; per task id, how often it was rerun under a new id because its output was lost
    infra_retries: Mapping[str, int] = field(default_factory=dict)
    retry_waiting: Mapping[str, datetime] = field(default_factory=dict)
    reruns: Mapping[str, int] = field(default_factory=dict)
    pool_id: str | None = None  # the pool the job runs on (an auto pool's id once Batch made it)
    # allocated nodes as the monitor saw them, when they changed: [time, dedicated, spot] (auto pools only)
    node_samples: tuple[tuple[str, int, int], ...] = ()
    redrives: Mapping[str, int] = field(default_factory=dict)  # per step: asked for again, nobody was at it
    last_redrive: Mapping[str, str] | None = None  # {"step", "at", "why"}
    queued_reason: str | None = None  # why the run waits (or last waited) for admission
    queue_position: int | None = None  # 1 = next to be admitted (the monitor keeps it current); None once admitted
    admissions: int = 0  # how often the monitor admitted it from the line
    finished_at: datetime | None = None
    # a rerun (shared.rerun): the run it reruns, and per task whose output it reuses, the run that made it
    rerun_of: str | None = None
    reused: Mapping[str, str] = field(default_factory=dict)
    # an ended run whose tasks did not all succeed keeps its task outputs until then, for a rerun
    outputs_kept_until: datetime | None = None
    output: str | None = None
    error: str | None = None
    container_execution: str | None = None
    keys: tuple[str, ...] = ()  # the document's keys, in the order they were first written
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this code does not know, kept as read
    etag: str | None = None  # the version read; None for a record not stored yet

    # ------------------------------------------------------------------ JSON

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], etag: str | None = None) -> RunRecord:
        values = {k: _decode(k, v) for k, v in doc.items() if k in _FIELDS}
        extra = {k: v for k, v in doc.items() if k not in _FIELDS}
        return cls(**values, keys=tuple(doc), extra=extra, etag=etag)

    def to_json(self) -> dict[str, Any]:
        return {k: self.extra[k] if k in self.extra else _encode(getattr(self, k)) for k in self.keys}

    @classmethod
    def _new(cls, values: dict[str, Any]) -> RunRecord:
        return cls(**values, keys=tuple(values))

    def _with(self, **changes: Any) -> RunRecord:
        """The record with `changes`; keys it did not hold yet are appended (as a dict update would)."""
        changes = {k: _second(v) if k in _TIMES and v is not None else v for k, v in changes.items()}
        keys = self.keys + tuple(k for k in changes if k not in self.keys)
        return replace(self, keys=keys, **changes)

    # ------------------------------------------------------------------ what readers ask

    @property
    def source(self) -> JobFileVersion | None:
        """The job file upload this run was made from (None for records without one)."""
        container, _, name = (self.job_file or "").partition("/")
        return JobFileVersion(container, name, self.job_file_etag) if name and self.job_file_etag else None

    def attempt(self, task: str) -> str:
        """The Batch task id that runs `task` now (see naming.attempt_id)."""
        return naming.attempt_id(task, self.reruns.get(task, 0))

    @property
    def superseded(self) -> int:
        """Succeeded Batch tasks whose output was lost and that a rerun replaced."""
        return sum(self.reruns.values())

    @property
    def submitting(self) -> bool:
        """Running, but not all its tasks are in Batch yet: its submission goes on in chunks."""
        return self.state == RUNNING and self.submitted is not None and self.submitted < self.tasks.total

    @property
    def output_file(self) -> str:
        """The file each task writes (OUTPUT_PATH's name)."""
        return self.task_output or f"output.{self.output_extension or 'bin'}"

    # ------------------------------------------------------------------ intake

    @classmethod
    def accepted(cls, run_id: str, spec: JobSpec, source: JobFileVersion, input_etag: str | None,
                 defaults: PoolDefaults | None = None) -> RunRecord:
        """A new run of a valid job file, before anything is created for it (`defaults`: the
        deployment's pool settings, for what the job file does not say)."""
        values: dict[str, Any] = dict(run_id=run_id, name=spec.name, job_file=source.path,
                                      job_file_etag=source.version)
        if input_etag:
            values["input_etag"] = input_etag
        values.update(
            state=ACCEPTED, tasks=TaskCounts(), merge=spec.merge.kind, on_task_failure=spec.on_task_failure,
            output_extension=spec.merge.output_extension, task_output=jobfile.task_output_name(spec),
            pool=spec.pool.id if isinstance(spec.pool, ExistingPool) else "auto",
            task_timeout_minutes=spec.task_timeout_minutes)
        if defaults is not None and isinstance(spec.pool, PoolSpec | None):
            values.update(vm_size=(spec.pool.vm_size if spec.pool else None) or defaults.vm_size,
                          slots_per_node=(spec.pool.slots_per_node if spec.pool else None) or defaults.slots_per_node)
        if spec.merge.kind == "command":
            values["merge_command"] = MergeCommand(spec.merge.command or "", spec.merge.image or spec.image)
        return cls._new(values)

    @classmethod
    def rejected_job_file(cls, run_id: str, name: str, source: JobFileVersion, error: str) -> RunRecord:
        """A job file that cannot run: the run is rejected from the start."""
        return cls._new(dict(run_id=run_id, name=name, job_file=source.path, job_file_etag=source.version,
                             state=REJECTED, tasks=TaskCounts(), error=error))

    def created(self, now: datetime) -> RunRecord:
        return self._with(created_at=now, updated_at=now)

    def touched(self, now: datetime) -> RunRecord:
        return self._with(updated_at=now)

    def running(self, total: int, now: datetime, submitted: int | None = None,
                resume: Mapping[str, Any] | None = None) -> RunRecord | None:
        """accepted -> running, once the first `submitted` (default: all) of its `total` tasks are in Batch
        (`resume`: where the input's split resumes for the next one)."""
        if self.state != ACCEPTED:
            return None
        changes = {"submit_resume": dict(resume)} if resume is not None else {}
        return self._with(state=RUNNING, tasks=TaskCounts.waiting(total), submitted_at=now,
                          submitted=total if submitted is None else submitted, last_submitted_at=now, **changes)

    def submitted_through(self, count: int, now: datetime, resume: Mapping[str, Any] | None = None) -> RunRecord | None:
        """The next chunk is in Batch: `count` tasks in all (`resume`: where the input's split resumes
        for the next one). None when the run is not running any more (cancelled, failed fast) and its
        submission must stop."""
        if self.state != RUNNING:
            return None
        if count < (self.submitted or 0):  # a replayed chunk: the cursor (and where it resumes) stays
            return self._with(last_submitted_at=now)
        changes = {"submit_resume": dict(resume)} if resume is not None else {}
        return self._with(submitted=count, last_submitted_at=now, **changes)

    def rerunning(self, of: str, reused: Mapping[str, str]) -> RunRecord:
        """A new run that reruns run `of`, reusing the outputs of the tasks in `reused` (task id -> the run
        whose output it is)."""
        return self._with(rerun_of=of, reused=dict(reused))

    def rejected(self, error: str, source: JobFileVersion) -> RunRecord | None:
        """accepted -> rejected, for a retry of this job file's intake that found it cannot run;
        a run that got going (or another job file's) is not rejected."""
        if self.state != ACCEPTED or not source.made(self):
            return None
        return self._with(state=REJECTED, error=error)

    # ------------------------------------------------------------------ admission

    def queued(self, reason: str) -> RunRecord | None:
        """accepted -> queued: Batch refused for quota, or MAX_ACTIVE_RUNS runs are admitted already.
        Its place in line is its arrival (created_at), kept however often it is refused."""
        if self.state != ACCEPTED:
            return None
        return self._with(state=QUEUED, queued_reason=reason)

    def admitted(self) -> RunRecord | None:
        """queued -> accepted: the monitor lets it in; its intake is asked for again."""
        if self.state != QUEUED:
            return None
        return self._with(state=ACCEPTED, queue_position=None, admissions=self.admissions + 1)

    def in_line_at(self, position: int) -> RunRecord:
        return self._with(queue_position=position)

    # ------------------------------------------------------------------ monitor

    def progressed(self, tasks: TaskCounts) -> RunRecord:
        return self._with(tasks=tasks)

    def job_looked_at(self, now: datetime, ended: str | None) -> RunRecord:
        """A quiet run's job was looked at; if it `ended` before all its tasks ran, the run goes
        to merging (finalize reports the tasks that never ran)."""
        checked = self._with(job_checked_at=now)
        return checked._with(state=MERGING, job_ended=ended) if ended else checked

    def finalize_requested(self, now: datetime) -> RunRecord:
        """running -> merging: all tasks are done (or the run stops early); finalize is asked for."""
        return self._with(state=MERGING, finalize_requested_at=now, finalize_requests=1)

    def merge_task_done(self, now: datetime) -> RunRecord:
        return self._with(merge_task="done", finalize_requested_at=now)

    def nodes_seen(self, now: datetime, pool_id: str, dedicated: int, spot: int) -> RunRecord:
        """A sample of the run's pool's allocated nodes, kept only when it differs from the last."""
        last = self.node_samples[-1] if self.node_samples else None
        if self.pool_id == pool_id and last is not None and (last[1], last[2]) == (dedicated, spot):
            return self
        return self._with(pool_id=pool_id, node_samples=(*self.node_samples, (iso_ms(now), dedicated, spot)))

    def retries_planned(self, used: Mapping[str, int], waiting: Mapping[str, datetime]) -> RunRecord:
        """The infrastructure retries spent and those waiting for their backoff (shared.retries)."""
        return self._with(infra_retries=dict(used), retry_waiting=dict(waiting))

    def redriven(self, step: str, now: datetime, why: str) -> RunRecord:
        """The monitor asked for `step` again: nobody was at work on it (shared.claims)."""
        counts = {**self.redrives, step: self.redrives.get(step, 0) + 1}
        changed = self._with(redrives=counts, last_redrive={"step": step, "at": iso(now), "why": why})
        if step == "finalize":
            changed = changed._with(finalize_requested_at=now, finalize_requests=self.finalize_requests + 1)
        if step == "submit":
            changed = changed._with(last_submitted_at=now)  # so the next re-drive waits as long again
        return changed

    # ------------------------------------------------------------------ finalize

    def finalize_attempted(self) -> RunRecord | None:
        if self.state != MERGING:
            return None
        return self._with(finalize_attempts=self.finalize_attempts + 1)

    def outputs_lost(self, tasks: Mapping[str, str]) -> RunRecord | None:
        """merging -> running: the outputs of `tasks` (task id -> what was wrong) were lost or
        corrupt; each runs again as a new Batch task (its rerun) and spends one infrastructure retry."""
        if self.state != MERGING:
            return None
        used, reruns = dict(self.infra_retries), dict(self.reruns)
        for task in tasks:
            used[task] = used.get(task, 0) + 1
            reruns[task] = reruns.get(task, 0) + 1
        first = sorted(tasks)[0]
        return self._with(state=RUNNING, infra_retries=used, reruns=reruns, finalize_attempts=0, merge_progress=None,
                          last_rerun={"tasks": sorted(tasks), "why": f"{first}: {tasks[first]}"})

    def merge_part_staged(self, progress: Mapping[str, Any], now: datetime) -> RunRecord | None:
        """One more part of a merge in parts is staged: a finalize that makes progress is not one that
        keeps dying (finalize_attempts starts over), and the monitor waits as long again before it
        re-drives the next."""
        if self.state != MERGING:
            return None
        return self._with(merge_progress=dict(progress), finalize_attempts=0, finalize_requested_at=now)

    def merge_task_started(self, now: datetime) -> RunRecord | None:
        """The user's merge task runs; the finalize after it collects its output."""
        if self.merge_task == "running":
            return None
        return self._with(merge_task="running", merge_task_started_at=now)

    def merge_task_refused(self, reason: str) -> RunRecord:
        """The merge task could not be added (the job ended meanwhile): report, do not merge."""
        return self._with(job_ended=reason)

    def finished(self, report: Mapping[str, Any], now: datetime,
                 outputs_kept_until: datetime | None = None) -> RunRecord | None:
        """merging -> the report's final state, with its counts, output and error."""
        if self.state != MERGING:
            return None
        changes: dict[str, Any] = dict(state=report["state"], tasks=TaskCounts.from_json(report["tasks"]),
                                       finished_at=now)
        if outputs_kept_until is not None:
            changes["outputs_kept_until"] = outputs_kept_until
        for key in ("output", "error", "container_execution"):
            if report.get(key):
                changes[key] = report[key]
        return self._with(**changes)

    # ------------------------------------------------------------------ any step

    def ended(self, state: str, message: str, only_from: frozenset[str],
              outputs_kept_until: datetime | None = None) -> RunRecord | None:
        """-> a final state (failed, cancelled), saying why; only while in one of `only_from`."""
        if self.state not in only_from:
            return None
        if outputs_kept_until is not None:
            return self._with(state=state, error=message, outputs_kept_until=outputs_kept_until)
        return self._with(state=state, error=message)

    def outputs_kept(self, now: datetime) -> bool:
        """Whether the task outputs of this ended run are still kept (for a rerun)."""
        return self.outputs_kept_until is not None and now < self.outputs_kept_until


_FIELDS = frozenset(f.name for f in fields(RunRecord)) - _BOOKKEEPING


def _decode(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _TIMES:
        return parse_time(value)
    if key in _TIME_MAPS:
        return {k: parse_time(v) for k, v in value.items()}
    if key == "tasks":
        return TaskCounts.from_json(value)
    if key == "merge_command":
        return MergeCommand.from_json(value)
    if key == "node_samples":
        return tuple((str(t), int(d), int(s)) for t, d, s in value)
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (TaskCounts, MergeCommand)):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


# ----------------------------------------------------------------------------- the store


class RunStore:
    """Run records, the documents beside them (error.json, report.json) and the control
    container's index of active runs (one marker blob each) and sweep marker.

    The only writer of all of them. Each state change is a conditional write of a `RunRecord`
    transition; the one that wins it writes what follows (error.json, cleanup, the event).
    """

    def __init__(self, results: JsonBlobs, control: JsonBlobs, clock: Clock = utc_now, *,
                 events: EventPublisher, cleanup: Cleanup, keep_outputs: timedelta = timedelta(0)) -> None:
        self._results = results
        self._control = control
        self._clock = clock
        self._events = events
        self._cleanup = cleanup
        self._keep_outputs = keep_outputs  # KEEP_TASK_OUTPUTS_HOURS

    def _kept_until(self) -> datetime | None:
        """Until when a run that ends now with tasks that did not succeed keeps their outputs (None: not at all)."""
        return self.now() + self._keep_outputs if self._keep_outputs > timedelta(0) else None

    def now(self) -> datetime:
        return _second(self._clock())

    # ------------------------------------------------------------------ reading

    def read(self, run_id: str) -> RunRecord:
        run = self.try_read(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    def try_read(self, run_id: str) -> RunRecord | None:
        found = self._results.read(RunPaths(run_id).status)
        return None if found is None else RunRecord.from_json(found.data, found.etag)

    # ------------------------------------------------------------------ writing

    def create(self, run: RunRecord) -> RunRecord:
        """Create the record if absent; Conflict if another delivery created it first.

        An active run is put in the monitor's index *before* its record exists: a crash in
        between leaves an index entry the monitor drops, never a run the monitor cannot see."""
        run = run.created(self.now())
        if run.state in ACTIVE:
            self.mark_active(run.run_id, run.source)
        written = self._results.create(RunPaths(run.run_id).status, run.to_json())
        return replace(run, etag=written.etag)

    def commit(self, before: RunRecord, after: RunRecord) -> RunRecord:
        """Store `after`, a transition of `before`, if status.json has not changed since `before`
        was read. Raises Conflict if it has, ValueError if the state change is not allowed."""
        if after.run_id != before.run_id or before.etag is None:
            raise ValueError(f"run {before.run_id}: not a stored record's transition")
        if not can_transition(before.state, after.state):
            raise ValueError(f"run {before.run_id}: {before.state} -> {after.state} is not allowed")
        # a run that reaches a final state stays in the monitor's index until the monitor has
        # made sure nothing of it is left (see `retire`)
        stamped = after.touched(self.now())
        written = self._results.replace(RunPaths(before.run_id).status, stamped.to_json(), before.etag)
        return replace(stamped, etag=written.etag)

    def commit_retrying(self, run_id: str, transition: Callable[[RunRecord], RunRecord | None],
                        attempts: int = 5) -> RunRecord | None:
        """Read, apply `transition`, commit; again on Conflict. None when the transition does
        not apply (it returned None)."""
        for _ in range(attempts):
            run = self.read(run_id)
            after = transition(run)
            if after is None:
                return None
            try:
                return self.commit(run, after)
            except Conflict:
                continue
        raise Conflict(f"run {run_id}: status.json kept changing; gave up after {attempts} attempts")

    # ------------------------------------------------------------------ transitions with what follows them

    def accept(self, run: RunRecord) -> RunRecord:
        """A new accepted run (see `create`); announced once, by the delivery that created it."""
        created = self.create(run)
        self._events.publish("accepted", run.run_id, {"job_file": run.job_file})
        return created

    def start_running(self, run_id: str, total: int, submitted: int, resume: Mapping[str, Any] | None = None) -> bool:
        """accepted -> running, its first `submitted` tasks in Batch; False when the run was not
        accepted any more (ended meanwhile, or another delivery got it running)."""
        if self.commit_retrying(run_id, lambda run: run.running(total, self.now(), submitted, resume)) is None:
            return False
        self.forget_queued(run_id)  # admitted for good: out of the line
        self._events.publish("running", run_id, {"tasks": total})
        log.info("running run_id=%s tasks=%d submitted=%d", run_id, total, submitted)
        return True

    def note_submitted(self, run_id: str, count: int, resume: Mapping[str, Any] | None = None) -> RunRecord | None:
        """Record that `count` tasks are in Batch (and where the input's split resumes for the next);
        None when the run stopped running meanwhile."""
        return self.commit_retrying(run_id, lambda run: run.submitted_through(count, self.now(), resume))

    def reject(self, run_id: str, name: str, source: JobFileVersion, error: JobFileError) -> bool:
        """The job file cannot run: status.json says rejected, error.json says why (for a new run,
        error.json is there before status.json says rejected). A retry of a run accepted before its
        input turned out to be unusable rejects that run (only an `accepted` run of this job file)
        and cleans up after it; a run that got going is left alone (returns False)."""
        failure = {"run_id": run_id, "job_file": source.path, "state": REJECTED, "field": error.field,
                   "message": error.message, "error": str(error)}
        if not self._create_rejected(RunRecord.rejected_job_file(run_id, name, source, str(error)), failure):
            if self.commit_retrying(run_id, lambda run: run.rejected(str(error), source)) is None:
                log.warning("late job file error ignored, the run is already under way run_id=%s field=%s",
                            run_id, error.field)
                return False
            self.write_error(run_id, failure)
            self._cleanup(run_id, keep_outputs=False)
        self._events.publish("rejected", run_id, {"job_file": source.path, "error": str(error)})
        log.info("rejected run_id=%s job_file=%s field=%s", run_id, source.path, error.field)
        return True

    def _create_rejected(self, run: RunRecord, failure: dict) -> bool:
        """Create a rejected run's record, error.json first: whoever reads "rejected" finds why.
        False when a record exists already (error.json then stays as it was: should another
        delivery have created the record meanwhile, the one written here is taken back unless
        that run has an error.json of its own)."""
        if self.try_read(run.run_id) is not None:
            return False
        self.write_error(run.run_id, failure)
        try:
            self.create(run)
            return True
        except Conflict:
            other = self.try_read(run.run_id)
            if other is not None and other.state not in (FAILED, CANCELLED, REJECTED):
                self._results.delete(RunPaths(run.run_id).error)
            return False

    def end(self, run_id: str, state: str, message: str, *, only_from: frozenset[str],
            record: RunRecord | None = None, event: dict | None = None) -> bool:
        """Move a run to a final state, then say why (error.json) and clean up; publish the event.

        The state change comes first and is conditional: it happens only while the run is in one
        of `only_from` (and, given `record`, only if status.json has not changed since it was
        read), so a run somebody else moved on meanwhile is left alone. Returns whether this call
        ended the run. A crash after the state change is covered: the monitor retires every
        finished run it indexes."""
        kept_until = self._kept_until()
        if record is not None:
            ended = record.ended(state, message, only_from, kept_until)
            if ended is None:
                return False
            try:
                self.commit(record, ended)
            except Conflict:
                return False
        elif self.commit_retrying(run_id, lambda run: run.ended(state, message, only_from, kept_until)) is None:
            return False
        self.write_error(run_id, {"run_id": run_id, "state": state, "message": message})
        self._cleanup(run_id, keep_outputs=kept_until is not None)
        self._events.publish(state, run_id, event if event is not None else {"error": message})
        log.warning("run ended run_id=%s state=%s reason=%s", run_id, state, message)
        return True

    def fail_intake(self, run_id: str, message: str) -> bool:
        """Intake cannot go on: fail the run. Only from `accepted`: a run another delivery got
        going is not this delivery's to fail."""
        return self.end(run_id, FAILED, message, only_from=frozenset({ACCEPTED}))

    def fail_submission(self, run_id: str, message: str) -> bool:
        """The run's submission cannot go on: fail it, whether no chunk (accepted) or some (running)
        are in Batch; a run that has all its tasks in, or ended, is left alone."""
        run = self.try_read(run_id)
        if run is None or not (run.state == ACCEPTED or run.submitting):
            return False
        return self.end(run_id, FAILED, message, only_from=frozenset({run.state}), record=run)

    def give_up(self, run: RunRecord, message: str, state: str = FAILED) -> bool:
        """End a run the monitor found stuck, unless it changed since `run` was read."""
        return self.end(run.run_id, state, message, only_from=frozenset({run.state}), record=run)

    def cancel(self, run_id: str, requested_by: str) -> bool:
        """Stop a run and remove what it created. Idempotent: a run already in a final state, or
        merging (its tasks are done and finalize is writing its end), is left as it is. Returns
        False when there is no such run."""
        run = self.try_read(run_id)
        if run is None:
            return False
        if run.state not in (ACCEPTED, QUEUED, RUNNING):
            log.info("cancel ignored run_id=%s state=%s", run_id, run.state)
            return True
        self.end(run_id, CANCELLED, f"cancelled by {requested_by}",
                 only_from=frozenset({ACCEPTED, QUEUED, RUNNING}), event={"requested_by": requested_by})
        return True

    def finish(self, run_id: str, report: Mapping[str, Any]) -> bool:
        """merging -> the report's state, after error.json (if it failed) and the cleanup. Returns
        whether this call made the change (and so published the one event)."""
        final = report["state"]
        if final == FAILED:
            self.write_error(run_id, {"run_id": run_id, "state": FAILED, "message": report["error"]})
        counted = TaskCounts.from_json(report["tasks"])
        all_succeeded = final == SUCCEEDED and counted.succeeded == counted.total
        kept_until = None if all_succeeded else self._kept_until()  # nothing to rerun: nothing kept
        self._cleanup(run_id, keep_outputs=kept_until is not None)
        self._control.delete(naming.kept_outcomes(run_id))
        if self.commit_retrying(run_id, lambda run: run.finished(report, self.now(), kept_until)) is None:
            return False
        self._events.publish(final, run_id, {"output": report.get("output"), "tasks": report["tasks"]})
        log.info("finalized run_id=%s state=%s", run_id, final)
        return True

    # ------------------------------------------------------------------ documents beside the record

    def write_error(self, run_id: str, error: dict) -> None:
        self._results.put(RunPaths(run_id).error, error)

    def read_report(self, run_id: str) -> dict | None:
        found = self._results.read(RunPaths(run_id).report)
        return None if found is None else found.data

    def keep_report(self, run_id: str, report: dict) -> dict:
        """Write report.json once: if another finalize (whose claim had expired) wrote it first,
        its report is kept and returned."""
        try:
            self._results.create(RunPaths(run_id).report, report)
            return report
        except Conflict:
            return self.read_report(run_id) or report

    def note_merge_progress(self, run_id: str, progress: Mapping[str, Any]) -> RunRecord | None:
        """Record a merge's progress; None when the run is not merging any more."""
        return self.commit_retrying(run_id, lambda run: run.merge_part_staged(progress, self.now()))

    def keep_job_file(self, run_id: str, raw: bytes) -> None:
        """Keep the job file the run was accepted from (its blob in intake may be replaced or deleted
        while the run goes on); a job file that is not UTF-8 was never accepted."""
        self._control.put(naming.kept_job_file(run_id), {"run_id": run_id, "job_file": raw.decode("utf-8")})

    def kept_job_file(self, run_id: str) -> bytes | None:
        found = self._control.read(naming.kept_job_file(run_id))
        text = found.data.get("job_file") if found is not None else None
        return text.encode("utf-8") if isinstance(text, str) else None

    def keep_outcomes(self, run: RunRecord, outcomes: list[dict[str, Any]]) -> None:
        """Keep a merging run's task outcomes for finalize's later invocations: listing a large job's
        tasks again for each part costs more than the part (2.4 ms a task through the SDK)."""
        self._control.put(naming.kept_outcomes(run.run_id), {"run_id": run.run_id, "reruns": dict(run.reruns),
                                                             "outcomes": outcomes})

    def kept_outcomes(self, run: RunRecord) -> list[dict[str, Any]] | None:
        """The outcomes kept for `run`, unless tasks ran again since (lost outputs): then None."""
        found = self._control.read(naming.kept_outcomes(run.run_id))
        if found is None or found.data.get("reruns") != dict(run.reruns):
            return None
        outcomes = found.data.get("outcomes")
        return outcomes if isinstance(outcomes, list) else None

    # ------------------------------------------------------------------ the monitor's index

    def mark_active(self, run_id: str, source: JobFileVersion | None = None, redrives: int = 0) -> None:
        """Idempotent: the monitor watches this run until it reaches a final state. With the job
        file it came from, so that an intake that died before the record existed is re-driven."""
        marker: dict[str, Any] = {"run_id": run_id, "since": iso(self.now())}
        if source is not None:
            marker.update(container=source.container, name=source.blob_name, etag=source.etag, redrives=redrives)
        self._control.put(naming.active_marker(run_id), marker)

    def marker(self, run_id: str) -> ActiveMarker | None:
        found = self._control.read(naming.active_marker(run_id))
        if found is None or "since" not in found.data:
            return None
        doc = found.data
        source = None
        if all(isinstance(doc.get(k), str) for k in ("container", "name", "etag")):
            source = JobFileVersion(doc["container"], doc["name"], doc["etag"])
        return ActiveMarker(parse_time(doc["since"]), source, int(doc.get("redrives") or 0))

    def marked_since(self, run_id: str) -> datetime | None:
        marker = self.marker(run_id)
        return None if marker is None else marker.since

    def active_run_ids(self) -> list[str]:
        return [name[len(naming.ACTIVE_PREFIX):] for name in self._control.names(naming.ACTIVE_PREFIX)]

    def forget_active(self, run_id: str) -> None:
        self._control.delete(naming.active_marker(run_id))

    def retire(self, run: RunRecord) -> None:
        """A finished run: make sure nothing of it is left (whoever ended it cleaned up, unless it
        crashed in between; idempotent), then stop watching it. A run that keeps its task outputs
        keeps its job file as long (a rerun plans the job again); the orphan sweep deletes both."""
        kept = run.outputs_kept_until is not None
        self._cleanup(run.run_id, keep_outputs=kept)
        self.forget_queued(run.run_id)
        self._control.delete(naming.kept_outcomes(run.run_id))
        if not kept:
            self._control.delete(naming.kept_job_file(run.run_id))
        self.forget_active(run.run_id)

    def forget_job_file(self, run_id: str) -> None:
        self._control.delete(naming.kept_job_file(run_id))

    # ------------------------------------------------------------------ the line of queued runs

    def queue(self, run_id: str, reason: str) -> bool:
        """accepted -> queued, its place in line kept in the control container (`queued/<run>`,
        written once: a run refused again keeps its place). False when the run was not accepted
        (ended, or got going, meanwhile)."""
        run = self.read(run_id)
        arrived = run.created_at or self.now()
        try:  # the marker first: the monitor never sees a queued run that is not in line
            self._control.create(naming.queued_marker(run_id),
                                 {"run_id": run_id, "arrived": iso(arrived), "at": self._clock().isoformat()})
        except Conflict:
            pass  # in line already (refused again): it keeps its place
        if self.commit_retrying(run_id, lambda r: r.queued(reason)) is None:
            return False
        self._events.publish("queued", run_id, {"reason": reason})
        log.info("queued run_id=%s reason=%s", run_id, reason)
        return True

    def queued_run_ids(self) -> list[str]:
        """The runs in line, in arrival order (the record's created_at, then when first queued)."""
        line = []
        for name in self._control.names(naming.QUEUED_PREFIX):
            found = self._control.read(name)
            if found is None:
                continue
            doc = found.data
            line.append((str(doc.get("arrived", "")), str(doc.get("at", "")), name[len(naming.QUEUED_PREFIX):]))
        return [run_id for _, _, run_id in sorted(line)]

    def forget_queued(self, run_id: str) -> None:
        self._control.delete(naming.queued_marker(run_id))

    # ------------------------------------------------------------------ the monitor's place in line

    def tick_cursor(self) -> str | None:
        """The last run a tick that ran out of time covered (the next tick starts after it)."""
        found = self._control.read(naming.MONITOR_CURSOR)
        return None if found is None else found.data.get("after")

    def set_tick_cursor(self, after: str | None) -> None:
        if after is None:
            self._control.delete(naming.MONITOR_CURSOR)
            return
        self._control.put(naming.MONITOR_CURSOR, {"after": after})

    # ------------------------------------------------------------------ the orphan sweep's marker

    def last_sweep(self) -> datetime | None:
        marker = self._control.read(naming.SWEEP_MARKER)
        return None if marker is None else parse_time(marker.data["at"])

    def mark_swept(self, at: datetime) -> None:
        self._control.put(naming.SWEEP_MARKER, {"at": iso(at)})

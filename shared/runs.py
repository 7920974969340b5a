"""The run record: results/<run>/status.json, its states and conditional transitions.

Every state change is a conditional write (If-Match on the ETag read), so two monitors or two
finalizers racing on the same run cannot both win: the loser gets `Conflict` and backs off.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from shared.errors import Conflict, RunNotFound
from shared.storage import JsonBlobs, Record

ACCEPTED, RUNNING, MERGING = "accepted", "running", "merging"
SUCCEEDED, FAILED, CANCELLED, REJECTED = "succeeded", "failed", "cancelled", "rejected"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, REJECTED})
ACTIVE = frozenset({ACCEPTED, RUNNING, MERGING})

_ALLOWED = {
    ACCEPTED: {RUNNING, REJECTED, FAILED, CANCELLED},
    RUNNING: {MERGING, FAILED, CANCELLED},
    MERGING: {SUCCEEDED, FAILED, CANCELLED},
}

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def can_transition(current: str, target: str) -> bool:
    return target == current or target in _ALLOWED.get(current, set())


def fails_run(on_task_failure: str, failed_tasks: int) -> bool:
    """Under `fail` (the default) one task that failed all its tries fails the run; under
    `partial` the run goes on and merges what succeeded."""
    return on_task_failure != "partial" and failed_tasks > 0


def empty_counts(total: int = 0) -> dict:
    return {"total": total, "active": total, "running": 0, "succeeded": 0, "failed": 0}


@dataclass(frozen=True)
class RunPaths:
    """Where a run's documents live inside the results container."""

    run_id: str

    @property
    def status(self) -> str:
        return f"{self.run_id}/status.json"

    @property
    def report(self) -> str:
        return f"{self.run_id}/report.json"

    @property
    def error(self) -> str:
        return f"{self.run_id}/error.json"

    def output(self, ext: str) -> str:
        return f"{self.run_id}/output.{ext}"

    def task_prefix(self, task_id: str) -> str:
        return f"{self.run_id}/tasks/{task_id}/"


class RunStore:
    """status.json documents plus an index of active runs (one marker blob each) for the monitor."""

    def __init__(self, results: JsonBlobs, control: JsonBlobs, clock: Clock = utc_now) -> None:
        self._results = results
        self._control = control
        self._clock = clock

    def now(self) -> str:
        return iso(self._clock())

    def read(self, run_id: str) -> Record:
        record = self._results.read(RunPaths(run_id).status)
        if record is None:
            raise RunNotFound(run_id)
        return record

    def try_read(self, run_id: str) -> Record | None:
        return self._results.read(RunPaths(run_id).status)

    def create(self, status: dict) -> Record:
        """Create the record if absent; Conflict if another delivery created it first.

        An active run is put in the monitor's index *before* its record exists: a crash in
        between leaves an index entry the monitor drops, never a run the monitor cannot see."""
        now = self.now()
        status = {**status, "created_at": now, "updated_at": now}
        if status["state"] in ACTIVE:
            self.mark_active(status["run_id"])
        return self._results.create(RunPaths(status["run_id"]).status, status)

    def mark_active(self, run_id: str) -> None:
        """Idempotent: the monitor watches this run until it reaches a final state."""
        self._control.put(f"active/{run_id}", {"run_id": run_id, "since": self.now()})

    def marked_since(self, run_id: str) -> datetime | None:
        marker = self._control.read(f"active/{run_id}")
        if marker is None or "since" not in marker.data:
            return None
        return datetime.fromisoformat(marker.data["since"].replace("Z", "+00:00"))

    def update(self, record: Record, changes: dict) -> Record:
        """Conditional write of `changes` (may include a new state). Raises Conflict if the record
        changed since it was read, ValueError if the state change is not allowed."""
        current = record.data["state"]
        target = changes.get("state", current)
        if not can_transition(current, target):
            raise ValueError(f"run {record.data['run_id']}: {current} -> {target} is not allowed")
        data = {**record.data, **changes, "updated_at": self.now()}
        # a run that reaches a final state stays in the monitor's index until the monitor has
        # made sure nothing of it is left (see watch.watch_run)
        return self._results.replace(RunPaths(data["run_id"]).status, data, record.etag)

    def update_retrying(self, run_id: str, mutate: Callable[[dict], dict | None], attempts: int = 5) -> Record | None:
        """Read-modify-write with retries on Conflict. `mutate` returns changes, or None to do nothing."""
        for _ in range(attempts):
            record = self.read(run_id)
            changes = mutate(record.data)
            if changes is None:
                return None
            try:
                return self.update(record, changes)
            except Conflict:
                continue
        raise Conflict(f"run {run_id}: status.json kept changing; gave up after {attempts} attempts")

    def active_run_ids(self) -> list[str]:
        return [name.split("/", 1)[1] for name in self._control.names("active/")]

    def forget_active(self, run_id: str) -> None:
        self._control.delete(f"active/{run_id}")

    def write_error(self, run_id: str, error: dict) -> None:
        self._results.put(RunPaths(run_id).error, error)

    def write_report(self, run_id: str, report: dict) -> None:
        self._results.put(RunPaths(run_id).report, report)

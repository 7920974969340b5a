"""Fault injection for tests (the ``/_emulator`` control plane): preempt, fail-next, slow, fail-upload, and
the storage outage.

Guarantees: task faults are per task, persisted (they survive a restart), and consumed by count: a fault
with ``count`` n >= 1 fires on the next n tries and is then removed; a negative or null count fires on
every try. ``preempt`` kills a running try at once, otherwise it arms a fault that preempts the next try
right after its command starts; on a low-priority node the node itself is preempted (`spot`). The storage
outage is emulator-wide, ends by itself and is not persisted (a restart ends it): while it lasts every
transfer attempt fails as a refused connection would.
"""
from __future__ import annotations

from typing import Any

from .core import EngineCore
from .model import Json, Task


class FaultsMixin(EngineCore):
    """Fault bookkeeping for `Engine`."""

    def list_faults(self) -> list[Json]:
        with self.lock:
            return [{"jobId": jk, "taskId": tk, **f} for (jk, tk), f in self.faults.items()]

    def set_fault(self, job_id: str, task_id: str, kind: str, value: Any) -> Json:
        with self.lock:
            key = (job_id.lower(), task_id.lower())
            f = dict(self.faults.get(key) or {})
            if value is None:
                f.pop(kind, None)
            else:
                f[kind] = value
            if f:
                self.faults[key] = f
            else:
                self.faults.pop(key, None)
            self.store.put_fault(key[0], key[1], f or None)
            return f

    def preempt(self, job_id: str, task_id: str, count: int = 1) -> Json:
        with self.lock:
            j = self.jobs.get(job_id.lower())
            t = j.tasks.get(task_id.lower()) if j else None
            if t is not None and t.run is not None and t.run.reason is None:
                node = self._preempt_run(t.run)
                return {"preempted": True, "nodePreempted": node}
            self.set_fault(job_id, task_id, "preempt", {"count": count})
            return {"preempted": False, "scheduled": True,
                    "message": "the task is not running: it will be preempted right after its next start"}

    def storage_outage(self, seconds: float | None) -> Json:
        """Make storage unreachable to transfers for `seconds` (None or 0: end the outage now)."""
        if seconds:
            return self.storage.start_outage(seconds)
        return self.storage.end_outage()

    def storage_outage_status(self) -> Json:
        return self.storage.outage()

    def _take_fault(self, t: Task, kind: str) -> Any:
        key = (t.job.key, t.key)
        f = self.faults.get(key)
        if not f or kind not in f:
            return None
        v = f[kind]
        count = v.get("count", 1) if isinstance(v, dict) else 1
        if count is not None and count >= 0:
            count -= 1
            if count <= 0:
                f = dict(f)
                f.pop(kind)
            else:
                f = dict(f)
                f[kind] = dict(v, count=count)
            if f:
                self.faults[key] = f
            else:
                self.faults.pop(key, None)
            self.store.put_fault(key[0], key[1], f or None)
        return v

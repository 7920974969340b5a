"""How a job ends: termination (by user, by exit options, when all tasks complete, on timeout) and deletion.

Guarantees: terminating a job kills its running tries, runs its release tasks on every node that ran its
preparation task, then marks it ``completed``; deleting a job also removes its task directories and
faults. Either way the job's auto pool is deleted with it unless it has ``keepAlive``. Idempotent
internally: ``_terminate_job`` on a job already terminating, completed or deleting does nothing.
"""
from __future__ import annotations

import os
import uuid

from .conditions import NO_CONDITIONS, Conditions
from .core import EngineCore
from .errors import err
from .model import TRASH_DIR, Job, Run, Stamp, job_dir
from .transfer import rmtree_quiet
from .util import now_iso


class JobLifecycleMixin(EngineCore):
    """Job termination, completion and deletion for `Engine`."""

    def terminate_job(self, job_id: str, reason: str | None, cond: Conditions = NO_CONDITIONS,
                      wait: float = 2.0) -> Stamp:
        with self.lock:
            j = self.get_job(job_id)
            cond.check(j.etag, j.last_modified)
            if j.state == "deleting":
                raise err("JobBeingDeleted")
            if j.state == "completed":
                raise err("JobCompleted")
            if j.state != "terminating":
                self._terminate_job(j, reason or "UserTerminate")
            self.state_cv.wait_for(lambda: j.state != "terminating", timeout=wait)
            return self._stamp(f"jobs/{j.id}", j)

    def _terminate_job(self, j: Job, reason: str) -> None:
        """Under the lock: start terminating a job (kills running tasks, runs release tasks, completes it)."""
        if j.state in ("terminating", "completed", "deleting"):
            return
        self._set_job_state(j, "terminating")
        j.exec["terminateReason"] = reason
        runs = list(j.runs)
        for r in runs:
            self._kill(r, "jobterminate")
        if not runs and not (j.spec.get("jobReleaseTask") and j.prep):
            self._complete_job(j)
        else:
            self._start_thread(self._finish_job_termination, j, runs)

    def _finish_job_termination(self, j: Job, runs: list[Run]) -> None:
        try:
            for r in runs:
                r.done.wait(30)
            self._run_release_tasks(j)
        finally:
            with self.lock:
                if not j.deleted and j.state == "terminating":
                    self._complete_job(j)

    def _complete_job(self, j: Job) -> None:
        j.exec["endTime"] = now_iso()
        self._set_job_state(j, "completed")
        j.touch()
        self._persist_job(j)
        j.ready.clear()
        for t in j.tasks.values():
            t.queued = False
        self.ready_jobs.pop(j.key, None)
        self._maybe_delete_auto_pool(j)

    def _check_all_complete(self, j: Job) -> None:
        if j.state != "active" or j.spec.get("onAllTasksComplete") != "terminatejob":
            return
        if j.counts["active"] == 0 and j.counts["running"] == 0:
            self._terminate_job(j, "AllTasksComplete")

    def _maybe_delete_auto_pool(self, j: Job) -> None:
        if not j.auto_pool:
            return
        aps = (j.spec.get("poolInfo") or {}).get("autoPoolSpecification") or {}
        if aps.get("keepAlive"):
            return
        p = self.pools.get(j.pool_key or "")
        if p is not None:
            self._start_pool_delete(p)

    def delete_job(self, job_id: str, cond: Conditions = NO_CONDITIONS, wait: float = 2.0) -> None:
        with self.lock:
            j = self.get_job(job_id)
            cond.check(j.etag, j.last_modified)
            if j.state != "deleting":
                self._set_job_state(j, "deleting")
                runs = list(j.runs)
                for r in runs:
                    self._kill(r, "delete")
                j.ready.clear()
                self.ready_jobs.pop(j.key, None)
                self._start_thread(self._finish_job_delete, j, runs)
            self.state_cv.wait_for(lambda: self.jobs.get(j.key) is not j, timeout=wait)

    def _to_trash(self, path: str) -> str | None:
        """Move `path` (if there) out of the nodes' trees at once, to be removed at leisure; a job made
        again with the same id meanwhile gets fresh directories."""
        trash = os.path.join(self.data_dir, TRASH_DIR, uuid.uuid4().hex)
        try:
            os.makedirs(os.path.dirname(trash), exist_ok=True)
            os.rename(path, trash)
        except FileNotFoundError:
            return None
        except OSError:
            rmtree_quiet(path)  # cannot be moved (another file system?): removed where it is
            return None
        return trash

    def _finish_job_delete(self, j: Job, runs: list[Run]) -> None:
        trash: list[str | None] = []
        try:
            for r in runs:
                r.done.wait(30)
            if not j.release_done:
                self._run_release_tasks(j)
            with self.lock:
                pool_dirs = {os.path.join(self.nodes_root, p.id) for p in self.pools.values()}
            for pool_dir in pool_dirs:
                if os.path.isdir(pool_dir):
                    for node_id in os.listdir(pool_dir):
                        trash.append(self._to_trash(job_dir(os.path.join(pool_dir, node_id), j.id)))
        finally:
            with self.lock:
                j.deleted = True
                if self.jobs.get(j.key) is j:
                    del self.jobs[j.key]
                    self.store.delete_job(j.key)
                for key in [k for k in self.faults if k[0] == j.key]:
                    del self.faults[key]
                self._maybe_delete_auto_pool(j)
                self.state_cv.notify_all()
        # the job is gone once its directories are out of the nodes' trees; removing them takes longer
        # (0.2 s for 200 tasks) and need not hold up the DELETE, which waits for the job to go
        for path in trash:
            if path is not None:
                rmtree_quiet(path)

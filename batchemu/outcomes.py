"""What a finished try means for its task and job: retry, requeue, complete, release dependents, job actions.

Guarantees: preemption and requeues never count as retries; a non-zero exit is retried up to
``maxTaskRetryCount`` (-1: forever); exit conditions pick the dependency action of a failure (and of a
success, if configured) and, with ``onTaskFailure: performexitoptionsjobaction``, the job action; a
deleted task or job, or an emulator shutting down, records nothing. Callers hold ``Engine.lock``.
"""
from __future__ import annotations

from .core import EngineCore
from .model import Json, Outcome, Run, Task
from .util import now_iso

TASK_ENDED = {"category": "usererror", "code": "TaskEnded", "message": "Task Was Ended by User Request"}


class OutcomesMixin(EngineCore):
    """Try outcomes for `Engine`."""

    @staticmethod
    def _exit_options(spec: Json, kind: str, exit_code: int | None) -> Json:
        ec = spec.get("exitConditions") or {}
        opts = None
        if kind == "preproc":
            opts = ec.get("preProcessingError")
        elif kind == "uploadfail":
            opts = ec.get("fileUploadError")
        elif exit_code is not None:
            for m in ec.get("exitCodes") or []:
                if m.get("code") == exit_code:
                    opts = m.get("exitOptions")
                    break
            if opts is None:
                for m in ec.get("exitCodeRanges") or []:
                    if m.get("start", 0) <= exit_code <= m.get("end", -1):
                        opts = m.get("exitOptions")
                        break
        if opts is None and not (kind == "exited" and exit_code == 0):
            opts = ec.get("default")
        return opts or {}

    def _finish(self, r: Run, outcome: Outcome) -> None:
        """Under the lock: record the outcome of a try."""
        t, j = r.task, r.job
        if j.deleted or t.state == "deleted" or self.stopping or r.reason in ("delete", "shutdown"):
            return
        rc = outcome.exit_code
        if r.reason in ("preempt", "requeue"):
            t.exec["requeueCount"] = t.exec.get("requeueCount", 0) + 1
            t.exec["lastRequeueTime"] = now_iso()
            self._retry(t)
        elif r.reason in ("terminate", "jobterminate"):
            self._complete(t, "failure", rc, TASK_ENDED)
        elif r.reason == "wallclock":
            self._complete(t, "failure", rc, {
                "category": "usererror", "code": "MaxWallClockTimeExpiry",
                "message": "The task was terminated because it exceeded its maximum wall clock time "
                           f"({t.effective_constraints()['maxWallClockTime']})"})
        elif outcome.kind == "exited":
            self._finish_exited(t, rc)
        else:
            fi = outcome.failure or {"category": "servererror", "code": "Unknown", "message": "Unknown error"}
            self._complete(t, "failure", rc, fi, kind=outcome.kind)

    def _retry(self, t: Task) -> None:
        """Back to active, at the front of its job's queue."""
        self._set_task_state(t, "active")
        if t.job.state == "active":
            self._enqueue(t, front=True)

    def _finish_exited(self, t: Task, rc: int | None) -> None:
        """A command that exited: success, a retry, or a failure once the retries are used up."""
        if rc == 0:
            self._complete(t, "success", 0, None)
            return
        max_retry = t.effective_constraints()["maxTaskRetryCount"]
        if max_retry == -1 or t.exec.get("retryCount", 0) < max_retry:
            t.exec["retryCount"] = t.exec.get("retryCount", 0) + 1
            t.exec["lastRetryTime"] = now_iso()
            t.exec["exitCode"] = rc
            self._retry(t)
            return
        self._complete(t, "failure", rc, {"category": "usererror", "code": "FailureExitCode",
                                          "message": "The task exited with an exit code representing a failure",
                                          "details": [{"name": "Message",
                                                       "value": f"The task exited with exit code {rc}"}]})

    def _complete(self, t: Task, result: str, exit_code: int | None, failure: Json | None,
                  kind: str = "exited") -> None:
        j = t.job
        t.exec["endTime"] = now_iso()
        if exit_code is not None:
            t.exec["exitCode"] = exit_code
        else:
            t.exec.pop("exitCode", None)
        t.exec["result"] = result
        if failure:
            t.exec["failureInfo"] = failure
        else:
            t.exec.pop("failureInfo", None)
        t.queued = False
        self._set_task_state(t, "completed")
        t.dep_ok, job_action = self._completion_actions(t, result, kind, exit_code)
        if t.dep_ok:
            self._release_dependents(t)
        self._persist_task(t)
        if j.spec.get("onTaskFailure") == "performexitoptionsjobaction" and job_action != "none":
            if job_action == "terminate":
                self._terminate_job(j, "TaskFailed")
                return
            if job_action == "disable" and j.state == "active":
                self._set_job_state(j, "disabled")
        jm = j.spec.get("jobManagerTask")
        if jm and jm.get("id", "").lower() == t.key and jm.get("killJobOnCompletion", True):
            self._terminate_job(j, "JMComplete")
            return
        self._check_all_complete(j)

    def _completion_actions(self, t: Task, result: str, kind: str, exit_code: int | None) -> tuple[bool, str]:
        """Whether a completed task satisfies its dependents, and the job action its exit options ask for."""
        opts = self._exit_options(t.spec, kind, exit_code)
        if result == "success":
            return opts.get("dependencyAction", "satisfy").lower() != "block", (opts.get("jobAction") or "none").lower()
        return ((opts.get("dependencyAction") or "block").lower() == "satisfy",
                (opts.get("jobAction") or "terminate").lower())

    def _release_dependents(self, t: Task) -> None:
        j = t.job
        for dk in j.dependents.pop(t.key, []):
            d = j.tasks.get(dk)
            if d is not None and d.deps_remaining > 0:
                d.deps_remaining -= 1
                if d.deps_remaining == 0 and d.state == "active" and j.state == "active":
                    self._enqueue(d)

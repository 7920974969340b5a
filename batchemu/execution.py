"""One try of a task, from node setup to output upload, on its own worker thread.

Guarantees: a try always releases its slots and records an outcome, even if the runner crashes
(``InternalError``); order within a try is node setup, resource file download, command, output file
upload; a task that names application packages (its own or its pool's) fails before anything runs,
with failureInfo ``ApplicationPackagesNotSupportedByEmulator``; injected faults are consumed when the try
starts; stdout.txt/stderr.txt exist after any try that did not exit normally. The lock is never held
while a process runs or a file transfers.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from .core import EngineCore
from .model import Json, Outcome, Run, task_rel_dir
from .transfer import TransferError, download_resource_files, upload_output_files
from .util import MAX_DURATION, now_iso, parse_duration

log = logging.getLogger("batchemu.engine")  # one logger for the whole engine

KILLED = Outcome("killed")


@dataclass(frozen=True)
class _Try:
    """What a try needs once it has started: its directory, its task's spec, deadline and faults."""
    task_dir: str
    spec: Json
    deadline: float | None
    slow: Any
    fail_next: Any
    fail_upload: Any
    preempt: Any


def _package_failure(r: Run) -> Json | None:
    """The failureInfo of a try whose task or pool names application packages: the emulator installs none,
    and running the command without them would only fail later and less clearly."""
    refs = [("task", ref) for ref in r.task.spec.get("applicationPackageReferences") or []]
    refs += [("pool", ref) for ref in r.pool.spec.get("applicationPackageReferences") or []]
    if not refs:
        return None
    names = ", ".join(f"{ref.get('applicationId')}:{ref.get('version') or 'default'} ({where})"
                      if isinstance(ref, dict) else str(ref) for where, ref in refs)
    return {"category": "usererror", "code": "ApplicationPackagesNotSupportedByEmulator",
            "message": "The local Batch emulator does not install application packages, and this task needs "
                       f"{names}. Remove applicationPackageReferences, or ship the files as resourceFiles.",
            "details": [{"name": "ApplicationPackageReferences", "value": names}]}


class ExecutionMixin(EngineCore):
    """Task tries for `Engine`."""

    def _run_task(self, r: Run) -> None:
        outcome = Outcome("error")
        try:
            outcome = self._attempt(r)
        except Exception as exc:
            log.exception("task %s/%s crashed the runner", r.job.id, r.task.id)
            outcome = Outcome("error", failure={"category": "servererror", "code": "InternalError",
                                                "message": f"The emulator failed to run the task: {exc}"})
        finally:
            with self.lock:
                self._count_on_node(r, outcome)
                r.node.used -= r.slots
                if not r.node.used:
                    r.node.state_time = now_iso()  # running -> idle
                r.pool.used -= r.slots
                self.running_total -= r.slots
                r.job.runs.discard(r)
                if r.task.run is r:
                    r.task.run = None
                try:
                    self._finish(r, outcome)
                except Exception:
                    log.exception("finishing task %s failed", r.task.id)
                # no scheduler wake-up: the worker dispatches into the freed slots next (scheduler._run_slot)
                self.state_cv.notify_all()
            r.done.set()

    @staticmethod
    def _count_on_node(r: Run, outcome: Outcome) -> None:
        """Lock held: the node's totalTasksRun / totalTasksSucceeded (a try cut short by a requeue, a
        delete or a shutdown did not complete there)."""
        if r.reason in ("preempt", "requeue", "delete", "shutdown"):
            return
        r.node.total_run += 1
        if outcome.kind == "exited" and outcome.exit_code == 0:
            r.node.total_succeeded += 1

    def _attempt(self, r: Run) -> Outcome:
        outcome = self._attempt_inner(r)
        if outcome.kind != "exited" or r.reason is not None:
            task_dir = r.node.task_dir(r.job.id, r.task.id)
            if os.path.isdir(task_dir):
                self._touch_std(task_dir)
        return outcome

    def _attempt_inner(self, r: Run) -> Outcome:
        r.node.ensure_dirs()
        packages = _package_failure(r)
        if packages is not None:
            return Outcome("preproc", failure=packages)
        fi = self._ensure_node_setup(r)
        if r.reason is not None:
            return KILLED
        if fi is not None:
            return Outcome("preproc", failure=fi)
        plan = self._start_try(r)
        if plan is None:
            return KILLED
        wd = self._prepare_dir(plan.task_dir)
        if plan.slow and not self._sleep_slow_fault(r, plan):
            return KILLED
        try:
            download_resource_files(plan.spec.get("resourceFiles"), wd, self.storage, lambda: r.reason is not None)
        except TransferError as exc:
            return KILLED if r.reason is not None else Outcome("preproc", failure=exc.failure_info())
        if plan.spec.get("containerSettings") is not None:
            with self.lock:
                r.task.container_mode = self.container_mode if self.container_mode in ("docker", "host") else None
            if self.container_mode == "fail":
                return Outcome("preproc", failure=self._container_failure())
        rc, fi = self._run_command(r, plan, wd)
        if r.reason is not None:
            return Outcome("killed", rc)
        if fi is not None:
            return Outcome("preproc", failure=fi)
        try:
            upload_output_files(plan.spec.get("outputFiles"), wd, plan.task_dir, rc, rc == 0, self.storage,
                                inject_failure=bool(plan.fail_upload), should_stop=lambda: r.reason is not None)
        except TransferError as exc:
            return Outcome("uploadfail", rc, exc.failure_info())
        return Outcome("exited", rc)

    def _start_try(self, r: Run) -> _Try | None:
        """Mark the task running on its node and take its faults (None if the try was killed meanwhile)."""
        t, j, node = r.task, r.job, r.node
        with self.lock:
            if r.reason is not None:
                return None
            t.exec["startTime"] = now_iso()
            for k in ("endTime", "exitCode", "result", "failureInfo"):
                t.exec.pop(k, None)
            rel = task_rel_dir(j.id, t.id)
            node_url = f"{self.public_url}/pools/{node.pool.id}/nodes/{node.id}"
            t.node_info = {"affinityId": f"TVM:{node.id}", "nodeUrl": node_url, "poolId": node.pool.id,
                           "nodeId": node.id, "taskRootDirectory": rel,
                           "taskRootDirectoryUrl": f"{node_url}/files/{rel}"}
            self._set_task_state(t, "running", persist=False)
            self._persist_task(t)
            mw = t.effective_constraints()["maxWallClockTime"]
            deadline = time.monotonic() + parse_duration(mw) if mw and mw != MAX_DURATION else None
            return _Try(node.task_dir(j.id, t.id), t.spec, deadline, self._take_fault(t, "slow"),
                        self._take_fault(t, "fail_next"), self._take_fault(t, "fail_upload"),
                        self._take_fault(t, "preempt"))

    def _sleep_slow_fault(self, r: Run, plan: _Try) -> bool:
        """The slow fault's delay (cut short by the wall clock limit). False if the try was killed."""
        slow = plan.slow
        secs = float(slow.get("seconds", 0) if isinstance(slow, dict) else slow)
        if plan.deadline is not None and time.monotonic() + secs > plan.deadline:
            r.killed.wait(max(0.0, plan.deadline - time.monotonic()))
            if r.reason is None:
                self._kill(r, "wallclock")
        else:
            r.killed.wait(secs)
        return r.reason is None

    def _run_command(self, r: Run, plan: _Try, wd: str) -> tuple[int | None, Json | None]:
        if plan.fail_next:
            with open(os.path.join(plan.task_dir, "stderr.txt"), "ab") as fe:
                fe.write(b"batchemu: injected failure (fail-next fault): the command was not run\n")
            if plan.preempt:
                self._preempt_after_start(r)
            return 1, None
        env = self._env(r.job, r.node, plan.spec.get("environmentSettings"), r.task.id, plan.task_dir, wd)
        return self._exec(r, plan.spec["commandLine"], wd, env, os.path.join(plan.task_dir, "stdout.txt"),
                          os.path.join(plan.task_dir, "stderr.txt"), plan.deadline, plan.spec.get("containerSettings"),
                          r.node, preempt_after_start=bool(plan.preempt))

"""One try of a task, from node setup to output upload, on its own worker thread.

Guarantees: a try always releases its slots and records an outcome, even if the runner crashes
(``InternalError``); order within a try is node setup, resource file download, command, output file
upload; injected faults are consumed when the try starts; stdout.txt/stderr.txt exist after any try that
did not exit normally. The lock is never held while a process runs or a file transfers.
"""
from __future__ import annotations

import logging
import os
import time

from .model import Run
from .transfer import TransferError, download_resource_files, upload_output_files
from .util import MAX_DURATION, now_iso, parse_duration

log = logging.getLogger("batchemu.engine")  # one logger for the whole engine


class ExecutionMixin:
    """Task tries for `Engine`."""

    def _run_task(self, r: Run):
        outcome = {"kind": "error"}
        try:
            outcome = self._attempt(r)
        except Exception as exc:
            log.exception("task %s/%s crashed the runner", r.job.id, r.task.id)
            outcome = {"kind": "error", "failure": {"category": "servererror", "code": "InternalError",
                                                    "message": f"The emulator failed to run the task: {exc}"}}
        finally:
            with self.lock:
                r.node.used -= r.slots
                r.pool.used -= r.slots
                self.running_total -= r.slots
                r.job.runs.discard(r)
                if r.task.run is r:
                    r.task.run = None
                try:
                    self._finish(r, outcome)
                except Exception:
                    log.exception("finishing task %s failed", r.task.id)
                self._wake_flag = True
                self.cv.notify()
                self.state_cv.notify_all()
            r.done.set()

    def _attempt(self, r: Run) -> dict:
        outcome = self._attempt_inner(r)
        if outcome.get("kind") != "exited" or r.reason is not None:
            task_dir = os.path.join(r.node.root, "workitems", r.job.id, "job-1", r.task.id)
            if os.path.isdir(task_dir):
                self._touch_std(task_dir)
        return outcome

    def _attempt_inner(self, r: Run) -> dict:
        t, j, node = r.task, r.job, r.node
        node.ensure_dirs()
        fi = self._ensure_node_setup(r)
        if r.reason is not None:
            return {"kind": "killed"}
        if fi is not None:
            return {"kind": "preproc", "failure": fi}
        task_dir = os.path.join(node.root, "workitems", j.id, "job-1", t.id)
        with self.lock:
            if r.reason is not None:
                return {"kind": "killed"}
            ts = now_iso()
            t.exec["startTime"] = ts
            for k in ("endTime", "exitCode", "result", "failureInfo"):
                t.exec.pop(k, None)
            t.node_info = {"affinityId": f"TVM:{node.id}", "nodeUrl": f"{self.public_url}/pools/{node.pool.id}/nodes/{node.id}",
                           "poolId": node.pool.id, "nodeId": node.id, "taskRootDirectory": f"workitems/{j.id}/job-1/{t.id}",
                           "taskRootDirectoryUrl": f"{self.public_url}/pools/{node.pool.id}/nodes/{node.id}/files/workitems/{j.id}/job-1/{t.id}"}
            self._set_task_state(t, "running", persist=False)
            self._persist_task(t)
            slow = self._take_fault(t, "slow")
            fail_next = self._take_fault(t, "fail_next")
            fail_upload = self._take_fault(t, "fail_upload")
            preempt = self._take_fault(t, "preempt")
            c = t.effective_constraints()
            spec = t.spec
        mw = c["maxWallClockTime"]
        deadline = None
        if mw and mw != MAX_DURATION:
            deadline = time.monotonic() + parse_duration(mw)
        wd = self._prepare_dir(task_dir)
        if slow:
            secs = float(slow.get("seconds", 0) if isinstance(slow, dict) else slow)
            if deadline is not None and time.monotonic() + secs > deadline:
                r.killed.wait(max(0.0, deadline - time.monotonic()))
                if r.reason is None:
                    self._kill(r, "wallclock")
            else:
                r.killed.wait(secs)
            if r.reason is not None:
                return {"kind": "killed"}
        try:
            download_resource_files(spec.get("resourceFiles"), wd, lambda: r.reason is not None)
        except TransferError as exc:
            if r.reason is not None:
                return {"kind": "killed"}
            return {"kind": "preproc", "failure": exc.failure_info()}
        container = spec.get("containerSettings")
        if container is not None:
            with self.lock:
                t.container_mode = "docker" if self.container_mode == "docker" else (
                    "host" if self.container_mode == "host" else None)
            if self.container_mode == "fail":
                return {"kind": "preproc", "failure": self._container_failure()}
        if fail_next:
            with open(os.path.join(task_dir, "stderr.txt"), "ab") as fe:
                fe.write(b"batchemu: injected failure (fail-next fault): the command was not run\n")
            rc, fi = 1, None
            if preempt:
                self._kill(r, "preempt")
        else:
            env = self._env(j, node, spec.get("environmentSettings"), t.id, task_dir, wd)
            rc, fi = self._exec(r, spec["commandLine"], wd, env, os.path.join(task_dir, "stdout.txt"),
                                os.path.join(task_dir, "stderr.txt"), deadline, container, node,
                                preempt_after_start=bool(preempt))
        if r.reason is not None:
            return {"kind": "killed", "exitCode": rc}
        if fi is not None:
            return {"kind": "preproc", "failure": fi}
        try:
            upload_output_files(spec.get("outputFiles"), wd, task_dir, rc, rc == 0, inject_failure=bool(fail_upload))
        except TransferError as exc:
            return {"kind": "uploadfail", "exitCode": rc, "failure": exc.failure_info()}
        return {"kind": "exited", "exitCode": rc}

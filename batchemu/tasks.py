"""Task API operations: add (one or a collection), update constraints, terminate, reactivate, delete.

Guarantees: tasks are validated outside the lock; add and update calls return only once the change is
persisted; a new task is queued as soon as its job is active and its dependencies are satisfied; a
collection adds every task it can and reports ``TaskExists`` per task for the rest.
"""
from __future__ import annotations

import os

from .errors import err
from .model import Job, Task
from .transfer import rmtree_quiet
from .util import new_etag, now_iso
from .validation import check_task, check_task_constraints


class TasksMixin:
    """The task operations of `Engine`."""

    def _new_task(self, j: Job, spec: dict) -> Task:
        """Under the lock: create a task object, register dependencies and queue it."""
        t = Task(j, spec, j.next_seq)
        j.next_seq += 1
        ts = now_iso()
        t.state_time = t.creation_time = t.last_modified = ts
        t.etag = new_etag()
        j.tasks[t.key] = t
        j.count_in(t, +1)
        self._register_dependencies(j, t)
        if j.state == "active" and t.deps_remaining == 0:
            self._enqueue(t)
        return t

    def _task_accepting(self, j: Job):
        if j.state == "completed":
            raise err("JobCompleted")
        if j.state == "deleting":
            raise err("JobBeingDeleted")
        if j.state == "terminating":
            raise err("JobBeingTerminated")

    def add_task(self, job_id: str, body: dict) -> Task:
        with self.lock:
            j = self.get_job(job_id)
        check_task(body, j)
        with self.lock:
            self._task_accepting(j)
            if body["id"].lower() in j.tasks:
                raise err("TaskExists")
            t = self._new_task(j, body)
            gen = self._persist_task(t)
        self.store.wait(gen)
        return t

    def add_tasks(self, job_id: str, bodies: list, base: str) -> list:
        with self.lock:
            j = self.get_job(job_id)
        for i, b in enumerate(bodies):
            check_task(b, j, f"value[{i}].")
        results = []
        new = []
        with self.lock:
            self._task_accepting(j)
            seen = set()
            for b in bodies:
                key = b["id"].lower()
                if key in j.tasks or key in seen:
                    e = err("TaskExists")
                    results.append({"status": "clienterror", "taskId": b["id"], "error": e.body()})
                    continue
                seen.add(key)
                t = self._new_task(j, b)
                new.append(t)
                results.append({"status": "success", "taskId": t.id, "eTag": t.etag, "lastModified": t.last_modified,
                                "location": f"{base}/jobs/{j.id}/tasks/{t.id}"})
            gen = self.store.put_tasks((j.key, t.key, t.seq, t.doc()) for t in new) if new else 0
        if gen:
            self.store.wait(gen)
        return results

    def _unfinished_task(self, job_id: str, task_id: str):
        """A task that may still be changed: not completed, in a job not being deleted (lock held)."""
        t = self.get_task(job_id, task_id)
        if t.job.state == "deleting":
            raise err("JobBeingDeleted")
        if t.state == "completed":
            raise err("TaskCompleted")
        return t

    def update_task(self, job_id: str, task_id: str, body: dict):
        check_task_constraints(body.get("constraints"))
        with self.lock:
            t = self._unfinished_task(job_id, task_id)
            t.constraints = dict(body.get("constraints") or {})
            self._touch(t)
            gen = self._persist_task(t)
        self.store.wait(gen)

    def terminate_task(self, job_id: str, task_id: str, wait: float = 5.0):
        with self.lock:
            t = self._unfinished_task(job_id, task_id)
            if t.run is not None:
                r = t.run
                self._kill(r, "terminate")
                self.state_cv.wait_for(lambda: t.state == "completed" or t.job.deleted, timeout=wait)
            else:
                self._complete(t, "failure", None, {"category": "usererror", "code": "TaskEnded",
                                                    "message": "Task Was Ended by User Request"})

    def reactivate_task(self, job_id: str, task_id: str):
        with self.lock:
            t = self.get_task(job_id, task_id)
            self._task_accepting(t.job)
            if t.state != "completed":
                raise err("TaskNotCompleted")
            if t.exec.get("result") == "success":
                raise err("TaskSucceeded")
            self._set_task_state(t, "active", persist=False)
            t.exec = {"retryCount": 0, "requeueCount": t.exec.get("requeueCount", 0)}
            t.dep_ok = False
            self._touch(t)
            self._persist_task(t)
            self._register_dependencies(t.job, t)
            self._enqueue(t)

    def delete_task(self, job_id: str, task_id: str):
        with self.lock:
            t = self.get_task(job_id, task_id)
            j = t.job
            if j.state == "deleting":
                raise err("JobBeingDeleted")
            if t.run is not None:
                self._kill(t.run, "delete")
                run_node = t.run.node
            else:
                run_node = None
            j.count_in(t, -1)
            del j.tasks[t.key]
            t.queued = False
            t.state = "deleted"
            self.store.delete_task(j.key, t.key)
            self.faults.pop((j.key, t.key), None)
            roots = [n.root for p in self.pools.values() for n in p.nodes]
            if run_node is not None:
                roots.append(run_node.root)
            self._check_all_complete(j)
        for root in set(roots):
            d = os.path.join(root, "workitems", j.id, "job-1", t.id)
            if os.path.isdir(d):
                self._start_thread(rmtree_quiet, d)

    def task_dir(self, t: Task) -> str | None:
        ni = t.node_info
        if not ni or not ni.get("poolId") or not ni.get("nodeId"):
            return None
        return os.path.join(self.nodes_root, ni["poolId"], ni["nodeId"], "workitems", t.job.id, "job-1", t.id)

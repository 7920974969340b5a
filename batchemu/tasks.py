"""Task API operations: add (one or a collection), read, list, update constraints, terminate, reactivate,
delete; where a task's files are.

Guarantees: new tasks are validated outside the lock; conditional headers are checked under the lock
against the version being read or changed; add and update calls return only once the change is persisted;
a new task is queued as soon as its job is active and its dependencies are satisfied; a collection adds
every task it can and reports ``TaskExists`` per task for the rest; tasks are listed in id order (as
the service lists them), paged by the last id, so a page boundary stays put while tasks are added.
"""
from __future__ import annotations

import bisect
import functools
import os
from collections.abc import Callable
from typing import Any

from .conditions import NO_CONDITIONS, Conditions
from .core import EngineCore
from .errors import err
from .model import Job, Json, Node, Stamp, Task, node_root, task_dir
from .transfer import rmtree_quiet
from .validation import check_task, check_task_constraints

Filter = Callable[[Callable[[str], Any]], bool]


class TasksMixin(EngineCore):
    """The task operations of `Engine`."""

    def _new_task(self, j: Job, spec: Json) -> Task:
        """Under the lock: create a task object, register dependencies and queue it."""
        t = Task(j, spec, j.next_seq)
        j.next_seq += 1
        j.tasks[t.key] = t
        if j.id_order is not None:
            bisect.insort(j.id_order, t.key)
        j.count_in(t, +1)
        self._register_dependencies(j, t)
        if j.state == "active" and t.deps_remaining == 0:
            self._enqueue(t)
        return t

    @staticmethod
    def _task_accepting(j: Job) -> None:
        if j.state == "completed":
            raise err("JobCompleted")
        if j.state == "deleting":
            raise err("JobBeingDeleted")
        if j.state == "terminating":
            raise err("JobBeingTerminated")

    def add_task(self, job_id: str, body: Json) -> Stamp:
        with self.lock:
            j = self.get_job(job_id)
        check_task(body, j)
        with self.lock:
            self._task_accepting(j)
            if body["id"].lower() in j.tasks:
                raise err("TaskExists")
            t = self._new_task(j, body)
            stamp, gen = self._stamp(t.path, t), self._persist_task(t)
        self.store.wait(gen)
        return stamp

    def add_tasks(self, job_id: str, bodies: list[Json], base: str) -> list[Json]:
        with self.lock:
            j = self.get_job(job_id)
        for i, b in enumerate(bodies):
            check_task(b, j, f"value[{i}].")
        results: list[Json] = []
        new: list[Task] = []
        with self.lock:
            self._task_accepting(j)
            seen: set[str] = set()
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
                                "location": f"{base}/{t.path}"})
            gen = self.store.put_tasks((j.key, t.key, t.seq, t.doc()) for t in new) if new else 0
        if gen:
            self.store.wait(gen)
        return results

    # ------------------------------------------------------------------------------------------- reads
    def read_task(self, job_id: str, task_id: str, base: str, cond: Conditions = NO_CONDITIONS) -> Json:
        with self.lock:
            t = self._checked_task(job_id, task_id, cond)
            return t.to_json(base)

    def task_page(self, job_id: str, after: str | None, pred: Filter | None, limit: int,
                  base: str) -> tuple[list[Json], str | None]:
        """Up to `limit` tasks that match `pred`, in id order (as the service lists them: by id, not by
        creation), after the task with key `after`; and the key to continue after (None on the last page)."""
        out: list[Task] = []
        with self.lock:
            j = self.get_job(job_id)
            if j.id_order is None:
                j.id_order = sorted(j.tasks)
            keys = j.id_order
            start = 0 if after is None else bisect.bisect_right(keys, after.lower())
            for key in keys[start:]:
                t = j.tasks[key]
                if pred is not None and not pred(functools.partial(t.get, base=base)):
                    continue
                if len(out) == limit:
                    return [x.to_json(base) for x in out], out[-1].key
                out.append(t)
            return [x.to_json(base) for x in out], None

    def subtasks(self, job_id: str, task_id: str) -> list[Json]:
        """A task's subtasks: always none (multi-instance tasks run as a single instance)."""
        with self.lock:
            self.get_task(job_id, task_id)
            return []

    def task_files(self, job_id: str, task_id: str) -> tuple[str, str | None]:
        """A task's path under the account URL, and its directory on its node (None before its first try)."""
        with self.lock:
            t = self.get_task(job_id, task_id)
            ni = t.node_info
            if not ni or not ni.get("poolId") or not ni.get("nodeId"):
                return t.path, None
            return t.path, task_dir(node_root(self.nodes_root, ni["poolId"], ni["nodeId"]), t.job.id, t.id)

    # ------------------------------------------------------------------------------------------- changes
    def _checked_task(self, job_id: str, task_id: str, cond: Conditions) -> Task:
        """Lock held: the task, once the request's conditions hold."""
        t = self.get_task(job_id, task_id)
        cond.check(t.etag, t.last_modified)
        return t

    @staticmethod
    def _check_unfinished(t: Task) -> None:
        """A task that may still be changed: not completed, in a job not being deleted."""
        if t.job.state == "deleting":
            raise err("JobBeingDeleted")
        if t.state == "completed":
            raise err("TaskCompleted")

    def update_task(self, job_id: str, task_id: str, body: Json, cond: Conditions = NO_CONDITIONS) -> Stamp:
        with self.lock:
            t = self._checked_task(job_id, task_id, cond)
            check_task_constraints(body.get("constraints"))
            self._check_unfinished(t)
            t.constraints = dict(body.get("constraints") or {})
            t.touch()
            stamp, gen = self._stamp(t.path, t), self._persist_task(t)
        self.store.wait(gen)
        return stamp

    def terminate_task(self, job_id: str, task_id: str, cond: Conditions = NO_CONDITIONS,
                       wait: float = 5.0) -> Stamp | None:
        """The task's version once terminated (None if it was deleted meanwhile)."""
        with self.lock:
            t = self._checked_task(job_id, task_id, cond)
            self._check_unfinished(t)
            if t.run is not None:
                self._kill(t.run, "terminate")
                self.state_cv.wait_for(lambda: t.state == "completed" or t.job.deleted, timeout=wait)
            else:
                self._complete(t, "failure", None, {"category": "usererror", "code": "TaskEnded",
                                                    "message": "Task Was Ended by User Request"})
            return None if t.state == "deleted" or t.job.deleted else self._stamp(t.path, t)

    def reactivate_task(self, job_id: str, task_id: str, cond: Conditions = NO_CONDITIONS) -> Stamp:
        """A failed task back to active with its retry count at 0 (REST "Reactivates a Task"): refused
        while its job is completed/terminating/deleting (``JobCompleted`` / ``JobBeingTerminated`` /
        ``JobBeingDeleted``), for a task not completed (``TaskNotCompleted``) and for one that succeeded
        (exit code 0, no failure info: ``TaskSucceeded``). Its exit code and failure info are gone;
        requeues (not retries) are kept."""
        with self.lock:
            t = self._checked_task(job_id, task_id, cond)
            self._task_accepting(t.job)
            if t.state != "completed":
                raise err("TaskNotCompleted")
            if t.exec.get("result") == "success":
                raise err("TaskSucceeded")
            self._set_task_state(t, "active", persist=False)
            t.exec = {"retryCount": 0, "requeueCount": t.exec.get("requeueCount", 0),
                      **({"lastRequeueTime": t.exec["lastRequeueTime"]} if "lastRequeueTime" in t.exec else {})}
            t.dep_ok = False
            t.touch()
            self._persist_task(t)
            self._register_dependencies(t.job, t)
            self._enqueue(t)
            return self._stamp(t.path, t)

    def delete_task(self, job_id: str, task_id: str, cond: Conditions = NO_CONDITIONS) -> None:
        with self.lock:
            t = self._checked_task(job_id, task_id, cond)
            j = t.job
            if j.state == "deleting":
                raise err("JobBeingDeleted")
            run_node: Node | None = None
            if t.run is not None:
                self._kill(t.run, "delete")
                run_node = t.run.node
            j.count_in(t, -1)
            del j.tasks[t.key]
            j.id_order = None
            t.queued = False
            t.state = "deleted"
            self.store.delete_task(j.key, t.key)
            self.faults.pop((j.key, t.key), None)
            roots = {n.root for p in self.pools.values() for n in p.nodes}
            if run_node is not None:
                roots.add(run_node.root)
            self._check_all_complete(j)
        for root in roots:
            d = task_dir(root, j.id, t.id)
            if os.path.isdir(d):
                self._start_thread(rmtree_quiet, d)

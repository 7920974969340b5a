"""The emulator's brain: one `Engine` object holding pools, jobs and tasks, and the threads that run them.

One lock (``Engine.lock``) guards all in-memory state; it is only held for short bookkeeping, never while
a process runs or a file transfers. The scheduler thread is woken by events (task added, task finished,
pool resized, job enabled...) and dispatches ready tasks FIFO onto free node slots; each try runs in its
own worker thread that owns a subprocess in its own process group.

This module holds the shared state, start-up (reloading and requeueing what the store holds), shutdown
and the small state-transition helpers every part uses. The behaviour lives in one mixin per concern:

- `pools`, `pool_scaling`: pool operations; node counts and autoscale
- `jobs`, `job_lifecycle`: job operations; termination, completion, deletion, auto pools
- `tasks`, `dependencies`: task operations; task dependencies
- `scheduler`: dispatch of ready tasks onto node slots, housekeeping
- `execution`, `outcomes`: one try of a task; what its result means (retries, exit options)
- `node_setup`: start, job preparation and job release tasks
- `runner`: launching and killing one command (environment, directories, Docker)
- `faults`: fault injection for the control plane
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

from .dependencies import MAX_TASK_RANGE_EXPANSION, DependenciesMixin  # noqa: F401  (re-exported)
from .environment import docker_cli_environment, task_base_environment
from .errors import err
from .execution import ExecutionMixin
from .faults import FaultsMixin
from .job_lifecycle import JobLifecycleMixin
from .jobs import JobsMixin
from .model import Job, Pool, Task
from .node_setup import NodeSetupMixin
from .outcomes import OutcomesMixin
from .pool_scaling import PoolScalingMixin
from .pools import POOL_SPEC_KEYS, PoolsMixin  # noqa: F401  (re-exported)
from .runner import RunnerMixin, _docker_available
from .scheduler import SchedulerMixin
from .store import Store
from .tasks import TasksMixin
from .util import new_etag, now_iso

log = logging.getLogger("batchemu.engine")


class Engine(PoolsMixin, PoolScalingMixin, JobsMixin, JobLifecycleMixin, TasksMixin, DependenciesMixin,
             SchedulerMixin, ExecutionMixin, OutcomesMixin, NodeSetupMixin, RunnerMixin, FaultsMixin):
    def __init__(self, data_dir: str, account: str, max_concurrency: int | None = None,
                 container_mode: str = "auto", public_url: str = "http://127.0.0.1:10100"):
        self.data_dir = os.path.abspath(data_dir)
        self.account = account
        self.max_concurrency = max(1, int(max_concurrency or os.cpu_count() or 1))
        self.public_url = public_url
        self.nodes_root = os.path.join(self.data_dir, "nodes")
        os.makedirs(self.nodes_root, exist_ok=True)
        if container_mode == "auto":
            container_mode = "docker" if _docker_available() else "host"
        self.container_mode = container_mode
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)        # scheduler wake-ups
        self.state_cv = threading.Condition(self.lock)  # API waiters (LRO-style transitions)
        self._wake_flag = False
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, Job] = {}
        self.faults: dict[tuple, dict] = {}
        self.ready_jobs: dict[str, Job] = {}
        self.running_total = 0
        self.stopping = False
        self.job_order = 0
        self.store = Store(self.data_dir)
        # tasks never see the emulator's own environment (app settings, keys): only a few base variables
        self.base_env = task_base_environment(os.environ)
        self.docker_env = docker_cli_environment(os.environ)
        self._scheduler = threading.Thread(target=self._schedule_loop, name="batchemu-scheduler", daemon=True)

    # =========================================================================================== lifecycle
    def load(self):
        with self.lock:
            self._load()

    def _load(self):
        pools, jobs, faults = self.store.load()
        for d in pools:
            p = Pool(d["id"], d["spec"])
            p.state, p.state_time = d["state"], d["stateTime"]
            p.alloc_state, p.alloc_time = "steady", d.get("allocTime") or d["stateTime"]
            p.creation_time, p.etag, p.last_modified = d["creationTime"], d["etag"], d["lastModified"]
            p.target_dedicated, p.target_low = d["targetDedicated"], d["targetLow"]
            p.autoscale_run, p.owner_job = d.get("autoscaleRun"), d.get("ownerJob")
            p.node_setup = {k: v for k, v in (d.get("nodeSetup") or {}).items() if v.get("state") == "completed"}
            self.pools[p.key] = p
            self._reconcile_nodes(p)
            if p.state == "deleting":
                self._start_thread(self._finish_pool_delete, p, [])
        for d in jobs:
            j = Job(d["id"], d["spec"])
            j.state, j.state_time = d["state"], d["stateTime"]
            j.prev_state, j.prev_state_time = d.get("prevState"), d.get("prevStateTime")
            j.creation_time, j.etag, j.last_modified = d["creationTime"], d["etag"], d["lastModified"]
            j.exec, j.pool_key, j.auto_pool = d.get("exec") or {}, d.get("poolKey"), d.get("autoPool", False)
            j.next_seq = d.get("nextSeq", 1)
            j.prep = {k: v for k, v in (d.get("prep") or {}).items() if v.get("state") == "completed"}
            j.release = d.get("release") or {}
            j.release_done = d.get("releaseDone", False)
            j.order = d.get("order", 0)
            j.created_ts = d.get("createdTs", time.time())
            self.job_order = max(self.job_order, j.order)
            self.jobs[j.key] = j
        requeued = []
        for jk, d in self.store.iter_tasks():
            job = self.jobs.get(jk)
            if job is None:
                continue
            spec = d["spec"]
            t = Task(job, spec, 0)
            t.state, t.state_time = d["state"], d["stateTime"]
            t.prev_state, t.prev_state_time = d.get("prevState"), d.get("prevStateTime")
            t.creation_time, t.etag, t.last_modified = d["creationTime"], d["etag"], d["lastModified"]
            t.exec, t.node_info, t.constraints = d["exec"], d.get("nodeInfo"), d.get("constraints") or {}
            t.container_mode, t.dep_ok = d.get("containerMode"), d.get("depOk", False)
            job.tasks[t.key] = t
            if t.state in ("running", "preparing"):
                # The emulator stopped while this try ran: requeue it, as a node failure would.
                ts = now_iso()
                t.prev_state, t.prev_state_time = t.state, t.state_time
                t.state, t.state_time = "active", ts
                t.exec["requeueCount"] = t.exec.get("requeueCount", 0) + 1
                t.exec["lastRequeueTime"] = ts
                t.etag, t.last_modified = new_etag(), ts
                requeued.append(t)
            job.count_in(t, +1)
        self._restore_seq()
        for job in self.jobs.values():
            self._rebuild_dependencies(job)
            for t in job.tasks.values():
                if t.state == "active" and t.deps_remaining == 0:
                    self._enqueue(t)
            if job.state == "deleting":
                self._start_thread(self._finish_job_delete, job, [])
            elif job.state == "terminating":
                self._start_thread(self._finish_job_termination, job, [])
            elif job.state == "disabling":
                self._set_job_state(job, "disabled")
            elif job.state == "enabling":
                self._set_job_state(job, "active")
        for t in requeued:
            self._persist_task(t)
        for jk, tk, doc in faults:
            self.faults[(jk, tk)] = doc
        if requeued:
            log.info("requeued %d task(s) that were running when the emulator stopped", len(requeued))

    def _restore_seq(self):
        # tasks were loaded ordered by seq per job; give them increasing in-memory seq numbers
        cur = self.store.db.execute("SELECT jk, tk, seq FROM tasks")
        for jk, tk, seq in cur:
            job = self.jobs.get(jk)
            if job and tk in job.tasks:
                job.tasks[tk].seq = seq
        for job in self.jobs.values():
            ordered = sorted(job.tasks.values(), key=lambda t: t.seq)
            job.tasks = {t.key: t for t in ordered}
            if ordered:
                job.next_seq = max(job.next_seq, ordered[-1].seq + 1)

    def start(self):
        self.store.start()
        self._scheduler.start()

    def stop(self):
        with self.lock:
            self.stopping = True
            runs = [r for j in self.jobs.values() for r in list(j.runs)]
            for r in runs:
                self._kill(r, "shutdown")
            self.cv.notify_all()
        for r in runs:
            r.done.wait(10)
        self._scheduler.join(timeout=5)
        self.store.close()

    # =========================================================================================== helpers
    def _start_thread(self, fn, *args) -> threading.Thread:
        th = threading.Thread(target=self._guard, args=(fn, args), daemon=True)
        th.start()
        return th

    def _guard(self, fn, args):
        try:
            fn(*args)
        except Exception:
            log.exception("background operation %s failed", getattr(fn, "__name__", fn))

    def wake(self):
        with self.cv:
            self._wake_flag = True
            self.cv.notify()

    def _persist_task(self, t: Task) -> int:
        if t.job.deleted:
            return 0
        return self.store.put_task(t.job.key, t.key, t.seq, t.doc())

    def _persist_job(self, j: Job) -> int:
        if j.deleted:
            return 0
        return self.store.put_job(j.key, j.doc())

    def _persist_pool(self, p: Pool) -> int:
        if p.key not in self.pools:
            return 0
        return self.store.put_pool(p.key, p.doc())

    def _touch(self, obj):
        obj.etag = new_etag()
        obj.last_modified = now_iso()

    def _set_task_state(self, t: Task, state: str, persist: bool = True):
        if t.state == state:
            return
        job = t.job
        job.count_in(t, -1)
        ts = now_iso()
        t.prev_state, t.prev_state_time = t.state, t.state_time
        t.state, t.state_time = state, ts
        t.etag, t.last_modified = new_etag(), ts
        job.count_in(t, +1)
        if persist:
            self._persist_task(t)

    def _set_job_state(self, j: Job, state: str):
        if j.state == state:
            return
        ts = now_iso()
        j.prev_state, j.prev_state_time = j.state, j.state_time
        j.state, j.state_time = state, ts
        j.etag, j.last_modified = new_etag(), ts
        self._persist_job(j)
        self.state_cv.notify_all()

    def _enqueue(self, t: Task, front: bool = False):
        if t.queued or t.state != "active" or t.deps_remaining > 0:
            return
        t.queued = True
        if front:
            t.job.ready.appendleft(t)
        else:
            t.job.ready.append(t)
        self.ready_jobs[t.job.key] = t.job
        self._wake_flag = True
        self.cv.notify()

    def get_pool(self, pool_id: str) -> Pool:
        p = self.pools.get(pool_id.lower())
        if p is None:
            raise err("PoolNotFound")
        return p

    def get_job(self, job_id: str) -> Job:
        j = self.jobs.get(job_id.lower())
        if j is None:
            raise err("JobNotFound")
        return j

    def get_task(self, job_id: str, task_id: str) -> Task:
        j = self.get_job(job_id)
        t = j.tasks.get(task_id.lower())
        if t is None:
            raise err("TaskNotFound")
        return t

    # =========================================================================================== stats helpers
    def summary(self) -> dict:
        with self.lock:
            return {"pools": len(self.pools), "jobs": len(self.jobs),
                    "tasks": sum(len(j.tasks) for j in self.jobs.values()), "runningSlots": self.running_total,
                    "maxConcurrency": self.max_concurrency, "containerMode": self.container_mode}


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

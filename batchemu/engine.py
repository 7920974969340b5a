"""The emulator's brain: one `Engine` object owning pools, jobs and tasks, and the threads that run them.

One lock (``Engine.lock``) guards all in-memory state; it is only held for short bookkeeping, never while
a process runs or a file transfers. Nothing outside the engine takes that lock or reads its dicts: the
REST handlers call the engine's public methods, which check conditional headers under the lock, act, and
answer with plain data. The scheduler thread is woken by events (task added, task finished, pool
resized, job enabled...) and dispatches ready tasks FIFO onto free node slots; each try runs in its own
worker thread that owns a subprocess in its own process group.

This module holds start-up (reloading and requeueing what the store holds) and shutdown; the state and
the small helpers every part uses are in `core`. The behaviour lives in one mixin per concern:

- `pools`, `pool_scaling`: pool and node operations; node counts and autoscale
- `jobs`, `job_lifecycle`: job operations; termination, completion, deletion, auto pools
- `tasks`, `dependencies`: task operations; task dependencies
- `scheduler`: dispatch of ready tasks onto node slots, housekeeping
- `execution`, `outcomes`: one try of a task; what its result means (retries, exit options)
- `node_setup`: start, job preparation and job release tasks
- `runner`: launching and killing one command (environment, directories, Docker)
- `faults`: fault injection for the control plane (the storage outage lives in `transfer_retry`)
- `quotas`: the account's quotas (active jobs, pools, cores) and quota-limited allocation (`vmsizes`)
"""
from __future__ import annotations

import json
import logging
import os
import threading

from .core import EngineCore
from .dependencies import MAX_TASK_RANGE_EXPANSION, DependenciesMixin  # noqa: F401  (re-exported)
from .environment import docker_cli_environment, task_base_environment
from .execution import ExecutionMixin
from .faults import FaultsMixin
from .job_lifecycle import JobLifecycleMixin
from .jobs import JobsMixin
from .model import TRASH_DIR, Job, Json, Pool, Task
from .node_setup import NodeSetupMixin
from .outcomes import OutcomesMixin
from .pool_scaling import PoolScalingMixin
from .pools import POOL_SPEC_KEYS, PoolsMixin  # noqa: F401  (re-exported)
from .quotas import Quotas, QuotasMixin
from .runner import RunnerMixin, _docker_available
from .scheduler import SchedulerMixin
from .spot import SpotMixin
from .store import Store
from .tasks import TasksMixin
from .transfer import rmtree_quiet
from .transfer_retry import RetryPolicy, StorageLink

log = logging.getLogger("batchemu.engine")


class Engine(PoolsMixin, PoolScalingMixin, JobsMixin, JobLifecycleMixin, TasksMixin, DependenciesMixin,
             SchedulerMixin, ExecutionMixin, OutcomesMixin, NodeSetupMixin, RunnerMixin, FaultsMixin, QuotasMixin,
             SpotMixin, EngineCore):
    def __init__(self, data_dir: str, account: str, max_concurrency: int | None = None,
                 container_mode: str = "auto", public_url: str = "http://127.0.0.1:10100",
                 transfer_policy: RetryPolicy | None = None, quotas: Quotas | None = None):
        self.data_dir = os.path.abspath(data_dir)
        self.account = account
        self.max_concurrency = max(1, int(max_concurrency or os.cpu_count() or 1))
        self.public_url = public_url
        self.nodes_root = os.path.join(self.data_dir, "nodes")
        os.makedirs(self.nodes_root, exist_ok=True)
        rmtree_quiet(os.path.join(self.data_dir, TRASH_DIR))  # left by a deletion the last process did not finish
        if container_mode == "auto":
            container_mode = "docker" if _docker_available() else "host"
        self.container_mode = container_mode
        self.lock = threading.RLock()
        self.cv = threading.Condition(self.lock)
        self.state_cv = threading.Condition(self.lock)
        self._wake_flag = False
        self.pools = {}
        self.jobs = {}
        self.faults = {}
        self.ready_jobs = {}
        self.running_total = 0
        self.stopping = False
        self.job_order = 0
        self.store = Store(self.data_dir)
        self.storage = StorageLink(transfer_policy)
        self.quotas = quotas or Quotas()
        self._init_spot()
        # tasks never see the emulator's own environment (app settings, keys): only a few base variables
        self.base_env = task_base_environment(os.environ)
        self.docker_env = docker_cli_environment(os.environ)
        self._scheduler = threading.Thread(target=self._schedule_loop, name="batchemu-scheduler", daemon=True)

    # =========================================================================================== lifecycle
    def load(self) -> None:
        """Rebuild the state the store holds; tries that were running when the emulator stopped are requeued."""
        pools, jobs, faults = self.store.load()
        with self.lock:
            for d in pools:
                self._load_pool(Pool.from_doc(d))
            for d in jobs:
                j = Job.from_doc(d)
                self.job_order = max(self.job_order, j.order)
                self.jobs[j.key] = j
            requeued = [t for t in self._load_tasks() if self._requeue_interrupted(t)]
            for job in self.jobs.values():
                self._resume_job(job)
            for t in requeued:
                self._persist_task(t)
            for jk, tk, doc in faults:
                self.faults[(jk, tk)] = doc
        if requeued:
            log.info("requeued %d task(s) that were running when the emulator stopped", len(requeued))

    def _load_pool(self, p: Pool) -> None:
        self.pools[p.key] = p
        self._reconcile_nodes(p)
        if p.state == "deleting":
            self._start_thread(self._finish_pool_delete, p, [])

    def _load_tasks(self) -> list[Task]:
        """The stored tasks of known jobs, each job's in sequence order."""
        loaded = []
        for jk, seq, d in self.store.iter_tasks():
            job = self.jobs.get(jk)
            if job is None:
                continue
            t = Task.from_doc(job, d, seq)
            job.tasks[t.key] = t
            job.next_seq = max(job.next_seq, seq + 1)
            job.count_in(t, +1)
            loaded.append(t)
        return loaded

    def _requeue_interrupted(self, t: Task) -> bool:
        """A try that ran when the emulator stopped goes back to active, as after a node failure."""
        if t.state not in ("running", "preparing"):
            return False
        self._set_task_state(t, "active", persist=False)
        t.exec["requeueCount"] = t.exec.get("requeueCount", 0) + 1
        t.exec["lastRequeueTime"] = t.state_time
        return True

    def _resume_job(self, job: Job) -> None:
        """Queue a loaded job's ready tasks and finish the transition it was in."""
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

    def start(self) -> None:
        self.store.start()
        self._scheduler.start()

    def stop(self) -> None:
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

    # =========================================================================================== reads
    def summary(self) -> Json:
        with self.lock:
            out = {"pools": len(self.pools), "jobs": len(self.jobs),
                   "tasks": sum(len(j.tasks) for j in self.jobs.values()), "runningSlots": self.running_total,
                   "maxConcurrency": self.max_concurrency, "containerMode": self.container_mode}
        policy = self.storage.policy
        return {**out, "transferRetries": policy.retries, "transferRetryDelay": policy.first_delay,
                "transferRetryBudgetSeconds": policy.budget}

    def transfer_stats(self) -> Json:
        """Transfer retries and injected outage failures since start/reset, and the outage now."""
        return {**self.storage.stats(), "storageOutage": self.storage.outage()}

    def reset_transfer_stats(self) -> None:
        self.storage.reset_stats()


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

"""The engine's state and the small state-transition helpers every part of it uses.

Guarantees: all in-memory state below is guarded by ``lock`` (one RLock for the whole engine); every
helper here expects it held. Only the engine touches this state: the REST handlers call `Engine` methods,
which take the lock, check conditional headers, change the state and answer with plain data (dicts,
`Stamp`). Every state change renews the object's ETag and Last-Modified and is queued for the store.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import err
from .model import Job, Json, Pool, Stamp, Task, Versioned
from .store import Store
from .transfer_retry import StorageLink
from .util import now_iso

if TYPE_CHECKING:
    from .model import Node, Outcome, Run
    from .quotas import Quotas

log = logging.getLogger("batchemu.engine")  # one logger for the whole engine


class EngineCore:
    """State shared by the `Engine` mixins (annotations only: `Engine.__init__` sets them)."""

    data_dir: str
    account: str
    max_concurrency: int
    public_url: str
    nodes_root: str
    container_mode: str
    lock: threading.RLock
    cv: threading.Condition        # scheduler wake-ups
    state_cv: threading.Condition  # API waiters (LRO-style transitions)
    _wake_flag: bool
    pools: dict[str, Pool]
    jobs: dict[str, Job]
    faults: dict[tuple[str, str], Json]
    ready_jobs: dict[str, Job]
    running_total: int
    stopping: bool
    job_order: int
    store: Store
    storage: StorageLink  # transfer retries, the injected storage outage and their counters
    quotas: Quotas        # the account's quotas (replaced, never mutated, by the control plane)
    spot_capacity: bool   # False: spot capacity withheld (`spot`)
    preempted_nodes: dict[str, float]  # preempted low-priority node id -> when it comes back (`spot`)
    base_env: dict[str, str]
    docker_env: dict[str, str]

    # ------------------------------------------------------------------------------------------- threads
    def _start_thread(self, fn: Callable[..., object], *args: Any) -> threading.Thread:
        th = threading.Thread(target=self._guard, args=(fn, args), daemon=True)
        th.start()
        return th

    @staticmethod
    def _guard(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("background operation %s failed", getattr(fn, "__name__", fn))

    def _notify_scheduler(self) -> None:
        """Lock held: have the scheduler look at the queues again."""
        self._wake_flag = True
        self.cv.notify()

    # ------------------------------------------------------------------------------------------- lookups
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
        t = self.get_job(job_id).tasks.get(task_id.lower())
        if t is None:
            raise err("TaskNotFound")
        return t

    @staticmethod
    def _stamp(path: str, obj: Versioned) -> Stamp:
        return Stamp(path, obj.etag, obj.last_modified)

    # ------------------------------------------------------------------------------------------- changes
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

    def _set_task_state(self, t: Task, state: str, persist: bool = True) -> None:
        if t.state == state:
            return
        job = t.job
        job.count_in(t, -1)
        ts = now_iso()
        t.prev_state, t.prev_state_time = t.state, t.state_time
        t.state, t.state_time = state, ts
        t.touch(ts)
        job.count_in(t, +1)
        if persist:
            self._persist_task(t)

    def _set_job_state(self, j: Job, state: str) -> None:
        if j.state == state:
            return
        ts = now_iso()
        j.prev_state, j.prev_state_time = j.state, j.state_time
        j.state, j.state_time = state, ts
        j.touch(ts)
        self._persist_job(j)
        self.state_cv.notify_all()

    def _enqueue(self, t: Task, front: bool = False) -> None:
        if t.queued or t.state != "active" or t.deps_remaining > 0:
            return
        t.queued = True
        if front:
            t.job.ready.appendleft(t)
        else:
            t.job.ready.append(t)
        self.ready_jobs[t.job.key] = t.job
        self._notify_scheduler()

    # ------------------------------------------------------------------------------------------- declared
    if TYPE_CHECKING:  # implemented by the mixins that make up `Engine`; declared for the type checker
        def _kill(self, r: Run, reason: str) -> None: ...
        def _is_preempted(self, n: Node) -> bool: ...
        def _preempted_count(self, p: Pool) -> int: ...
        def _spot_short(self, p: Pool) -> bool: ...
        def _preempt_run(self, r: Run) -> bool: ...
        def _preempt_after_start(self, r: Run) -> None: ...
        def _recover_nodes(self) -> None: ...
        def _allocation_state(self, p: Pool) -> None: ...
        def _env(self, j: Job, node: Node, extra: list[Json] | None, task_id: str, task_dir: str,
                 wd: str) -> dict[str, str]: ...
        def _exec(self, r: Run, command_line: str, cwd: str, env: dict[str, str], out_path: str, err_path: str,
                  deadline: float | None, container: Json | None, node: Node,
                  preempt_after_start: bool = False) -> tuple[int | None, Json | None]: ...
        def _prepare_dir(self, task_dir: str) -> str: ...
        def _touch_std(self, task_dir: str) -> None: ...
        def _container_failure(self) -> Json: ...
        def _take_fault(self, t: Task, kind: str) -> Any: ...
        def _register_dependencies(self, j: Job, t: Task) -> None: ...
        def _rebuild_dependencies(self, j: Job) -> None: ...
        def _reconcile_nodes(self, p: Pool) -> list[Node]: ...
        def _apply_pool_targets(self, p: Pool, dedicated: int, low: int, deallocation: str = "requeue") -> None: ...
        def _pool_capacity(self, p: Pool) -> int: ...
        def _allocate(self, p: Pool) -> None: ...
        def _short_of_targets(self, p: Pool) -> bool: ...
        def _fallback_node(self, p: Pool) -> tuple[int, int]: ...
        def _check_job_quota(self) -> None: ...
        def _check_pool_quota(self) -> None: ...
        def _pool_quota_allows(self) -> bool: ...
        def _run_autoscale(self, p: Pool, formula: str | None = None, apply: bool = True) -> Json: ...
        def _check_formula(self, formula: str | None) -> None: ...
        def _resolve_interval(self, spec: Json, prop: str = "autoScaleEvaluationInterval") -> None: ...
        def _validate_pool_spec(self, spec: Json, prefix: str = "") -> None: ...
        def _new_pool(self, pool_id: str, spec: Json, owner_job: str | None = None) -> Pool: ...
        def _start_pool_delete(self, p: Pool) -> None: ...
        def _finish_pool_delete(self, p: Pool, runs: list[Run]) -> None: ...
        def _new_task(self, j: Job, spec: Json) -> Task: ...
        def _terminate_job(self, j: Job, reason: str) -> None: ...
        def _finish_job_termination(self, j: Job, runs: list[Run]) -> None: ...
        def _complete_job(self, j: Job) -> None: ...
        def _finish_job_delete(self, j: Job, runs: list[Run]) -> None: ...
        def _check_all_complete(self, j: Job) -> None: ...
        def _complete(self, t: Task, result: str, exit_code: int | None, failure: Json | None,
                      kind: str = "exited") -> None: ...
        def _finish(self, r: Run, outcome: Outcome) -> None: ...
        def _ensure_node_setup(self, r: Run) -> Json | None: ...
        def _run_release_tasks(self, j: Job) -> None: ...
        def _run_task(self, r: Run) -> None: ...

"""The scheduler thread: FIFO dispatch of ready tasks onto free node slots, plus periodic housekeeping.

Guarantees: jobs are served by priority then creation order, tasks within a job in queue order; the host
never runs more than ``max_concurrency`` slots, a pool never more than its nodes' slots, a job never more
than ``maxParallelTasks`` tries; each try runs on a worker thread, started outside the lock, and a worker
whose try ends dispatches the next tries itself (the scheduler thread handles what arrives otherwise).
Housekeeping (about once a second) re-evaluates autoscale pools and terminates jobs past their
``maxWallClockTime``.
"""
from __future__ import annotations

import logging
import threading
import time

from .core import EngineCore
from .errors import BatchError
from .model import Job, Node, NodeTaskStatus, Pool, Run, Task
from .util import now_iso, parse_duration

log = logging.getLogger("batchemu.engine")  # one logger for the whole engine


class SchedulerMixin(EngineCore):
    """The scheduling loop of `Engine`."""

    def _schedule_loop(self) -> None:
        last_house = 0.0
        while True:
            with self.cv:
                if not self._wake_flag and not self.stopping:
                    self.cv.wait(timeout=1.0)
                if self.stopping:
                    return
                self._wake_flag = False
                now = time.monotonic()
                if now - last_house >= 1.0:
                    last_house = now
                    try:
                        self._housekeeping()
                    except Exception:
                        log.exception("housekeeping failed")
                try:
                    runs = self._dispatch()
                except Exception:
                    log.exception("dispatch failed")
                    runs = []
            self._start_runs(runs)

    def _start_runs(self, runs: list[Run]) -> None:
        """Outside the lock: a worker thread for each try."""
        for r in runs:
            r.thread = threading.Thread(target=self._run_slot, args=(r,), name=f"task-{r.task.id}", daemon=True)
            r.thread.start()

    def _run_slot(self, r: Run) -> None:
        """A worker thread: run the try, then refill the slots it freed at once, the first new try on
        this same thread. For short tasks the hand-off to the scheduler thread and a thread start per
        try were a large part of the emulator's cost (benchmarks/emulator_bench.py)."""
        while True:
            self._run_task(r)
            with self.cv:
                try:
                    runs = [] if self.stopping else self._dispatch()
                except Exception:
                    log.exception("dispatch failed")
                    self._notify_scheduler()  # it tries again
                    runs = []
            if not runs:
                return
            r = runs[0]
            r.thread = threading.current_thread()
            r.thread.name = f"task-{r.task.id}"
            self._start_runs(runs[1:])

    def _housekeeping(self) -> None:
        self._recover_nodes()
        for p in list(self.pools.values()):
            if p.state == "active" and p.spec.get("enableAutoScale"):  # fixed pools keep their nodes
                self._autoscale(p)
        now = time.time()
        for j in list(self.jobs.values()):
            if j.state in ("active", "disabled"):
                c = j.spec.get("constraints") or {}
                mw = c.get("maxWallClockTime")
                if mw:
                    try:
                        limit = parse_duration(mw)
                    except BatchError:
                        continue
                    if now - j.created_ts > limit:
                        self._terminate_job(j, "MaxWallClockTimeExpiry")

    def _autoscale(self, p: Pool) -> None:
        """Lock held: evaluate the pool's formula now and materialise its nodes."""
        before, etag = len(p.nodes), p.etag
        self._run_autoscale(p)
        removed = self._reconcile_nodes(p)
        if len(p.nodes) != before or removed or p.etag != etag:
            self._persist_pool(p)

    def _choose_node(self, p: Pool, slots_needed: int) -> Node | None:
        best = None
        fill = ((p.spec.get("taskSchedulingPolicy") or {}).get("nodeFillType") or "spread").lower()
        for n in p.nodes:
            if n.used + slots_needed <= p.slots and not self._is_preempted(n):
                if best is None:
                    best = n
                    if fill == "pack":
                        break
                elif n.used < best.used:
                    best = n
        return best

    def _dispatch(self) -> list[Run]:
        """Lock held: start as many ready tries as the host, the pools and the jobs allow."""
        out: list[Run] = []
        if self.running_total >= self.max_concurrency or not self.ready_jobs:
            return out
        jobs = sorted(self.ready_jobs.values(), key=lambda j: (-(j.spec.get("priority") or 0), j.order))
        for j in jobs:
            if not j.ready:
                self.ready_jobs.pop(j.key, None)
                continue
            if j.state != "active":
                continue
            p = self.pools.get(j.pool_key) if j.pool_key else None
            if p is None or p.state != "active":
                continue
            if p.spec.get("enableAutoScale") and (not p.nodes or p.fallback != (0, 0)):
                # no nodes, or only the stand-in node of a formula that said 0 before these tasks came:
                # evaluate now rather than at the next housekeeping, up to a second later
                self._autoscale(p)
            self._dispatch_job(j, p, out)
            if not j.ready:
                self.ready_jobs.pop(j.key, None)
            if self.running_total >= self.max_concurrency:
                break
        return out

    def _dispatch_job(self, j: Job, p: Pool, out: list[Run]) -> None:
        """Lock held: start the job's ready tries, in order, while its pool has free slots."""
        cap = self._pool_capacity(p)
        maxp = j.spec.get("maxParallelTasks")
        maxp = -1 if maxp is None else maxp
        while j.ready and self.running_total < self.max_concurrency and p.used < cap:
            if maxp != -1 and len(j.runs) >= maxp:
                break
            t = j.ready[0]
            if t.state != "active" or not t.queued or t.job is not j or t.run is not None:
                self._drop_stale(j, t)
                continue
            need = min(t.slots, p.slots)
            if p.used + need > cap and p.used > 0:
                break
            node = self._choose_node(p, need)
            if node is None:
                break
            j.ready.popleft()
            out.append(self._start_run(t, j, p, node, need))

    def _drop_stale(self, j: Job, t: Task) -> None:
        """The head of the job's queue no longer belongs there: drop it (requeue it if still runnable)."""
        j.ready.popleft()
        if t.state != "active":
            t.queued = False
        elif t.run is None and t.job is j and t.key in j.tasks:
            t.queued = False
            self._enqueue(t)

    def _start_run(self, t: Task, j: Job, p: Pool, node: Node, slots: int) -> Run:
        """Lock held: book `slots` slots on the node for a new try of the task (preparing if setup is due)."""
        t.queued = False
        r = Run(t, j, p, node)
        r.slots = slots
        t.run = r
        j.runs.add(r)
        if not node.used:
            node.state_time = now_iso()  # idle -> running
        node.used += slots
        node.remember(t)
        p.used += slots
        self.running_total += slots
        prep_due = j.spec.get("jobPreparationTask") and not self._setup_done(j.prep, node)
        start_due = p.spec.get("startTask") and not self._setup_done(p.node_setup, node)
        self._set_task_state(t, "preparing" if prep_due or start_due else "running", persist=False)
        return r

    @staticmethod
    def _setup_done(holder: dict[str, NodeTaskStatus], node: Node) -> bool:
        st = holder.get(node.id)
        return st is not None and st.state == "completed"

"""The scheduler thread: FIFO dispatch of ready tasks onto free node slots, plus periodic housekeeping.

Guarantees: jobs are served by priority then creation order, tasks within a job in queue order; the host
never runs more than ``max_concurrency`` slots, a pool never more than its nodes' slots, a job never more
than ``maxParallelTasks`` tries; each dispatched try gets its own worker thread, started outside the lock.
Housekeeping (about once a second) re-evaluates autoscale pools and terminates jobs past their
``maxWallClockTime``.
"""
from __future__ import annotations

import logging
import threading
import time

from .errors import BatchError
from .model import Pool, Run
from .util import parse_duration

log = logging.getLogger("batchemu.engine")  # one logger for the whole engine


class SchedulerMixin:
    """The scheduling loop of `Engine`."""

    def _schedule_loop(self):
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
            for r in runs:
                r.thread = threading.Thread(target=self._run_task, args=(r,), name=f"task-{r.task.id}", daemon=True)
                r.thread.start()

    def _housekeeping(self):
        for p in list(self.pools.values()):
            if p.state == "active" and p.spec.get("enableAutoScale"):
                before = len(p.nodes)
                self._run_autoscale(p)
                removed = self._reconcile_nodes(p)
                if len(p.nodes) != before or removed:
                    self._persist_pool(p)
            elif p.state == "active":
                # pending-driven minimum for autoscale pools only; fixed pools keep their nodes
                pass
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

    def _choose_node(self, p: Pool, slots_needed: int):
        best = None
        fill = ((p.spec.get("taskSchedulingPolicy") or {}).get("nodeFillType") or "spread").lower()
        for n in p.nodes:
            if n.used + slots_needed <= p.slots:
                if best is None:
                    best = n
                    if fill == "pack":
                        break
                elif n.used < best.used:
                    best = n
        return best

    def _dispatch(self) -> list:
        out = []
        host_free = self.max_concurrency - self.running_total
        if host_free <= 0 or not self.ready_jobs:
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
            if p.spec.get("enableAutoScale") and not p.nodes:
                self._reconcile_nodes(p)
            cap = self._pool_capacity(p)
            maxp = j.spec.get("maxParallelTasks")
            maxp = -1 if maxp is None else maxp
            while j.ready and host_free > 0 and p.used < cap:
                if maxp != -1 and len(j.runs) >= maxp:
                    break
                t = j.ready[0]
                if t.state != "active" or not t.queued or t.job is not j or t.run is not None:
                    j.ready.popleft()
                    t.queued = False if t.state != "active" else t.queued
                    if t.state == "active" and t.run is None and t.job is j and t.key in j.tasks:
                        t.queued = False
                        self._enqueue(t)
                    continue
                need = min(t.slots, p.slots)
                if p.used + need > cap and p.used > 0:
                    break
                node = self._choose_node(p, need)
                if node is None:
                    break
                j.ready.popleft()
                t.queued = False
                r = Run(t, j, p, node)
                r.slots = need
                t.run = r
                j.runs.add(r)
                node.used += need
                p.used += need
                self.running_total += need
                host_free -= need
                needs_setup = (j.spec.get("jobPreparationTask") and (j.prep.get(node.id) or {}).get("state") != "completed") \
                    or (p.spec.get("startTask") and (p.node_setup.get(node.id) or {}).get("state") != "completed")
                self._set_task_state(t, "preparing" if needs_setup else "running", persist=False)
                out.append(r)
            if not j.ready:
                self.ready_jobs.pop(j.key, None)
            if host_free <= 0:
                break
        return out

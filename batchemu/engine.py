"""The emulator's brain: pools, jobs, tasks, the scheduler and task execution.

One lock (``Engine.lock``) guards all in-memory state; it is only held for short bookkeeping, never while
a process runs or a file transfers. The scheduler thread is woken by events (task added, task finished,
pool resized, job enabled...) and dispatches ready tasks FIFO onto free node slots; each try runs in its
own worker thread that owns a subprocess in its own process group.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid

from . import autoscale
from .errors import BatchError, bad_property, err, missing_property
from .model import Job, Node, Pool, Run, Task
from .store import Store
from .transfer import TransferError, download_resource_files, rmtree_quiet, upload_output_files
from .util import MAX_DURATION, new_etag, now_iso, parse_duration

log = logging.getLogger("batchemu.engine")

POOL_SPEC_KEYS = ("displayName", "vmSize", "virtualMachineConfiguration", "resizeTimeout", "enableAutoScale",
                  "autoScaleFormula", "autoScaleEvaluationInterval", "enableInterNodeCommunication",
                  "networkConfiguration", "startTask", "applicationPackageReferences", "taskSlotsPerNode",
                  "taskSchedulingPolicy", "userAccounts", "metadata", "mountConfiguration", "upgradePolicy",
                  "cloudServiceConfiguration", "certificateReferences", "applicationLicenses",
                  "targetNodeCommunicationMode", "resourceTags", "identity")
MAX_TASK_RANGE_EXPANSION = 1_000_000


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=5)
        return r.returncode == 0 and bool(r.stdout.strip())
    except Exception:
        return False


class Engine:
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
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHEMU_", "AZ_BATCH_"))}
        self._threads: set = set()
        self._scheduler = threading.Thread(target=self._schedule_loop, name="batchemu-scheduler", daemon=True)

    # =========================================================================================== lifecycle
    def load(self):
        with self.lock:
            self._load()

    def _load(self):
        pools, jobs, faults, meta = self.store.load()
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

    # =========================================================================================== pools
    def _reconcile_nodes(self, p: Pool):
        ded, low = self._effective_nodes(p)
        existing = {n.id: n for n in p.nodes}
        nodes = []
        for i in range(ded):
            n = Node(p, True, i, self.nodes_root)
            nodes.append(existing.get(n.id, n))
        for i in range(low):
            n = Node(p, False, i, self.nodes_root)
            nodes.append(existing.get(n.id, n))
        removed = [n for nid, n in existing.items() if nid not in {x.id for x in nodes}]
        p.nodes = nodes
        return removed

    def _effective_nodes(self, p: Pool) -> tuple[int, int]:
        if p.state != "active":
            return 0, 0
        ded, low = p.target_dedicated, p.target_low
        if p.spec.get("enableAutoScale") and ded + low == 0 and self._pool_pending(p) > 0:
            ded = 1  # documented: an autoscale pool evaluating to 0 nodes still gets 1 node while tasks are pending
        # materialise at most as many nodes as the host can keep busy
        cap_nodes = max(1, math.ceil(self.max_concurrency / p.slots))
        if ded + low > cap_nodes:
            if ded >= cap_nodes:
                ded, low = cap_nodes, 0
            else:
                low = cap_nodes - ded
        return ded, low

    def _pool_pending(self, p: Pool) -> int:
        n = 0
        for j in self.jobs.values():
            if j.pool_key == p.key:
                n += j.counts["active"] + j.counts["running"]
        return n

    def _pool_capacity(self, p: Pool) -> int:
        return min(len(p.nodes) * p.slots, self.max_concurrency)

    def _apply_pool_targets(self, p: Pool, dedicated: int, low: int, deallocation: str = "requeue"):
        p.target_dedicated, p.target_low = dedicated, low
        ts = now_iso()
        p.alloc_state, p.alloc_time = "steady", ts  # allocation is instantaneous in the emulator
        removed = self._reconcile_nodes(p)
        if removed:
            removed_ids = {n.id for n in removed}
            for j in self.jobs.values():
                for r in list(j.runs):
                    if r.node.id in removed_ids:
                        if deallocation == "requeue":
                            self._kill(r, "requeue")
                        elif deallocation == "terminate":
                            self._kill(r, "terminate")
                        # taskcompletion / retaineddata: let it finish on the leaving node
        self._wake_flag = True
        self.cv.notify()

    def _resolve_interval(self, spec: dict, prop="autoScaleEvaluationInterval") -> None:
        if spec.get(prop):
            secs = parse_duration(spec[prop], prop)
            if secs < 300 or secs > 168 * 3600:
                raise bad_property(prop, spec[prop], "The evaluation interval must be between 5 minutes and 168 hours")

    def _autoscale_inputs(self, p: Pool) -> dict:
        active = running = succeeded = failed = 0
        for j in self.jobs.values():
            if j.pool_key == p.key:
                active += j.counts["active"]
                running += j.counts["running"]
                succeeded += j.counts["succeeded"]
                failed += j.counts["failed"]
        return {"$pendingtasks": float(active + running), "$activetasks": float(active),
                "$runningtasks": float(running), "$succeededtasks": float(succeeded), "$failedtasks": float(failed),
                "$currentdedicatednodes": float(p.target_dedicated), "$currentlowprioritynodes": float(p.target_low),
                "$targetdedicatednodes": float(p.target_dedicated), "$targetlowprioritynodes": float(p.target_low),
                "$tasksslotspernode": float(p.slots), "$taskslotspernode": float(p.slots),
                "$usablenodecount": float(len(p.nodes)), "$preemptednodecount": 0.0, "$cpupercent": 0.0,
                "$memorybytes": 0.0, "$diskbytes": 0.0, "$wallclockseconds": 0.0}

    def _run_autoscale(self, p: Pool, formula: str | None = None, apply: bool = True) -> dict:
        formula = formula if formula is not None else p.spec.get("autoScaleFormula") or ""
        ts = now_iso()
        try:
            values, results = autoscale.evaluate(formula, self._autoscale_inputs(p))
        except autoscale.FormulaError as exc:
            run = {"timestamp": ts, "error": {"code": "AutoScalingFormulaSyntaxError",
                                               "message": f"The specified auto-scaling formula has an error: {exc}",
                                               "values": [{"name": "Formula", "value": formula[:200]}]}}
            if apply:
                p.autoscale_run = run
            return run
        run = {"timestamp": ts, "results": results}
        if apply:
            p.autoscale_run = run
            p.deallocation = values["deallocation"]
            if (values["dedicated"], values["lowPriority"]) != (p.target_dedicated, p.target_low):
                self._apply_pool_targets(p, values["dedicated"], values["lowPriority"], values["deallocation"])
                self._touch(p)
        return run

    def _check_formula(self, formula):
        if not formula:
            raise missing_property("autoScaleFormula")
        try:
            autoscale.parse(formula)
        except autoscale.FormulaError as exc:
            raise BatchError(400, "AutoScalingFormulaSyntaxError", None,
                             [{"key": "Reason", "value": str(exc)}])

    def _validate_pool_spec(self, spec: dict, prefix=""):
        if not spec.get("vmSize"):
            raise missing_property(prefix + "vmSize")
        slots = spec.get("taskSlotsPerNode")
        if slots is not None and not (1 <= slots <= 256):
            raise bad_property(prefix + "taskSlotsPerNode", slots)
        for k in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if spec.get(k) is not None and spec[k] < 0:
                raise bad_property(prefix + k, spec[k])
        if spec.get("enableAutoScale"):
            if spec.get("targetDedicatedNodes") is not None or spec.get("targetLowPriorityNodes") is not None:
                raise bad_property(prefix + "targetDedicatedNodes", spec.get("targetDedicatedNodes"),
                                   "targetDedicatedNodes/targetLowPriorityNodes cannot be specified when "
                                   "enableAutoScale is true")
            self._check_formula(spec.get("autoScaleFormula"))
            self._resolve_interval(spec)
        if spec.get("resizeTimeout"):
            parse_duration(spec["resizeTimeout"], prefix + "resizeTimeout")
        st = spec.get("startTask")
        if st is not None and not st.get("commandLine"):
            raise missing_property(prefix + "startTask.commandLine")

    def _new_pool(self, pool_id: str, spec: dict, owner_job: str | None = None) -> Pool:
        p = Pool(pool_id, {k: spec[k] for k in POOL_SPEC_KEYS if k in spec})
        ts = now_iso()
        p.state_time = p.alloc_time = p.creation_time = ts
        p.etag, p.last_modified = new_etag(), ts
        p.owner_job = owner_job
        self.pools[p.key] = p
        if spec.get("enableAutoScale"):
            self._run_autoscale(p)
        else:
            self._apply_pool_targets(p, spec.get("targetDedicatedNodes") or 0, spec.get("targetLowPriorityNodes") or 0)
        return p

    def create_pool(self, body: dict):
        from .util import check_id
        check_id(body.get("id"))
        self._validate_pool_spec(body)
        with self.lock:
            existing = self.pools.get(body["id"].lower())
            if existing is not None:
                raise err("PoolBeingDeleted" if existing.state == "deleting" else "PoolExists")
            p = self._new_pool(body["id"], body)
            gen = self._persist_pool(p)
        self.store.wait(gen)
        return p

    def pool_json(self, p: Pool, base: str) -> dict:
        s = p.spec
        d = {"id": p.id, "url": f"{base}/pools/{p.id}", "eTag": p.etag, "lastModified": p.last_modified,
             "creationTime": p.creation_time, "state": p.state, "stateTransitionTime": p.state_time,
             "allocationState": p.alloc_state, "allocationStateTransitionTime": p.alloc_time}
        for k in ("displayName", "vmSize", "virtualMachineConfiguration", "cloudServiceConfiguration"):
            if k in s:
                d[k] = s[k]
        d["resizeTimeout"] = s.get("resizeTimeout") or "PT15M"
        if p.resize_errors:
            d["resizeErrors"] = p.resize_errors
        d["currentDedicatedNodes"] = p.target_dedicated
        d["currentLowPriorityNodes"] = p.target_low
        d["targetDedicatedNodes"] = p.target_dedicated
        d["targetLowPriorityNodes"] = p.target_low
        d["enableAutoScale"] = bool(s.get("enableAutoScale"))
        if s.get("enableAutoScale"):
            d["autoScaleFormula"] = s.get("autoScaleFormula")
            d["autoScaleEvaluationInterval"] = s.get("autoScaleEvaluationInterval") or "PT15M"
            if p.autoscale_run:
                d["autoScaleRun"] = p.autoscale_run
        d["enableInterNodeCommunication"] = bool(s.get("enableInterNodeCommunication"))
        for k in ("networkConfiguration", "startTask", "applicationPackageReferences", "certificateReferences",
                  "applicationLicenses", "userAccounts", "metadata", "mountConfiguration", "upgradePolicy",
                  "targetNodeCommunicationMode", "resourceTags", "identity"):
            if k in s:
                d[k] = s[k]
        d["taskSlotsPerNode"] = p.slots
        d["taskSchedulingPolicy"] = s.get("taskSchedulingPolicy") or {"nodeFillType": "spread"}
        return d

    def list_pools(self):
        with self.lock:
            return list(self.pools.values())

    def _pool_mutable(self, p: Pool):
        if p.state == "deleting":
            raise err("PoolBeingDeleted")

    def delete_pool(self, pool_id: str, wait: float = 2.0):
        with self.lock:
            p = self.get_pool(pool_id)
            if p.state != "deleting":
                p.state, p.state_time = "deleting", now_iso()
                self._touch(p)
                self._persist_pool(p)
                runs = [r for j in self.jobs.values() for r in j.runs if r.pool is p]
                for r in runs:
                    self._kill(r, "requeue")
                p.nodes = []
                self._start_thread(self._finish_pool_delete, p, runs)
            self.state_cv.wait_for(lambda: self.pools.get(p.key) is not p, timeout=wait)

    def _finish_pool_delete(self, p: Pool, runs):
        try:
            for r in runs:
                r.done.wait(10)
            rmtree_quiet(os.path.join(self.nodes_root, p.id))
        finally:
            with self.lock:
                if self.pools.get(p.key) is p:
                    del self.pools[p.key]
                    self.store.delete_pool(p.key)
                self.state_cv.notify_all()

    def patch_pool(self, pool_id: str, body: dict):
        with self.lock:
            p = self.get_pool(pool_id)
            self._pool_mutable(p)
            for k in ("startTask", "applicationPackageReferences", "metadata", "displayName", "vmSize",
                      "virtualMachineConfiguration", "enableInterNodeCommunication", "taskSchedulingPolicy",
                      "networkConfiguration", "userAccounts", "mountConfiguration", "upgradePolicy",
                      "targetNodeCommunicationMode", "certificateReferences", "resourceTags"):
                if k in body:
                    p.spec[k] = body[k]
            if "taskSlotsPerNode" in body and body["taskSlotsPerNode"] is not None:
                if not 1 <= body["taskSlotsPerNode"] <= 256:
                    raise bad_property("taskSlotsPerNode", body["taskSlotsPerNode"])
                p.spec["taskSlotsPerNode"] = body["taskSlotsPerNode"]
                self._reconcile_nodes(p)
            self._touch(p)
            gen = self._persist_pool(p)
            self.wake()
        self.store.wait(gen)

    def replace_pool_properties(self, pool_id: str, body: dict):
        with self.lock:
            p = self.get_pool(pool_id)
            self._pool_mutable(p)
            for k in ("startTask", "applicationPackageReferences", "metadata", "certificateReferences"):
                if k in body and body[k] is not None:
                    p.spec[k] = body[k]
                else:
                    p.spec.pop(k, None)
            self._touch(p)
            gen = self._persist_pool(p)
        self.store.wait(gen)

    def resize_pool(self, pool_id: str, body: dict):
        with self.lock:
            p = self.get_pool(pool_id)
            self._pool_mutable(p)
            if p.spec.get("enableAutoScale"):
                raise err("OperationInvalidForCurrentState", 409,
                          "The pool has auto-scaling enabled; disable auto-scaling before resizing it.")
            for k in ("targetDedicatedNodes", "targetLowPriorityNodes"):
                if body.get(k) is not None and body[k] < 0:
                    raise bad_property(k, body[k])
            if body.get("resizeTimeout"):
                parse_duration(body["resizeTimeout"], "resizeTimeout")
            opt = (body.get("nodeDeallocationOption") or "requeue").lower()
            if opt not in ("requeue", "terminate", "taskcompletion", "retaineddata"):
                raise bad_property("nodeDeallocationOption", opt)
            ded = body.get("targetDedicatedNodes")
            low = body.get("targetLowPriorityNodes")
            self._apply_pool_targets(p, p.target_dedicated if ded is None else ded,
                                     p.target_low if low is None else low, opt)
            self._touch(p)
            gen = self._persist_pool(p)
        self.store.wait(gen)

    def stop_resize(self, pool_id: str):
        with self.lock:
            p = self.get_pool(pool_id)
            self._pool_mutable(p)
            p.alloc_state, p.alloc_time = "steady", now_iso()
            self._touch(p)
            self._persist_pool(p)

    def enable_autoscale(self, pool_id: str, body: dict):
        with self.lock:
            p = self.get_pool(pool_id)
            self._pool_mutable(p)
            formula = body.get("autoScaleFormula") or p.spec.get("autoScaleFormula")
            self._check_formula(formula)
            self._resolve_interval(body)
            p.spec["enableAutoScale"] = True
            p.spec["autoScaleFormula"] = formula
            if body.get("autoScaleEvaluationInterval"):
                p.spec["autoScaleEvaluationInterval"] = body["autoScaleEvaluationInterval"]
            self._run_autoscale(p)
            self._touch(p)
            gen = self._persist_pool(p)
        self.store.wait(gen)

    def disable_autoscale(self, pool_id: str):
        with self.lock:
            p = self.get_pool(pool_id)
            self._pool_mutable(p)
            p.spec["enableAutoScale"] = False
            p.spec.pop("autoScaleFormula", None)
            p.spec.pop("autoScaleEvaluationInterval", None)
            p.autoscale_run = None
            self._touch(p)
            gen = self._persist_pool(p)
        self.store.wait(gen)

    def evaluate_autoscale(self, pool_id: str, body: dict) -> dict:
        with self.lock:
            p = self.get_pool(pool_id)
            self._pool_mutable(p)
            if not p.spec.get("enableAutoScale"):
                raise err("InvalidAutoScalingSettings", 409,
                          "Auto-scaling is not enabled on the pool; enable it before evaluating a formula.")
            formula = body.get("autoScaleFormula")
            self._check_formula(formula)
            return self._run_autoscale(p, formula, apply=False)

    # =========================================================================================== jobs
    def _validate_job(self, body: dict):
        from .validation import check_env, check_resource_files, check_task_constraints
        from .util import check_id
        check_id(body.get("id"))
        pi = body.get("poolInfo")
        if not pi:
            raise missing_property("poolInfo")
        if bool(pi.get("poolId")) == bool(pi.get("autoPoolSpecification")):
            raise bad_property("poolInfo", None, "Exactly one of poolId and autoPoolSpecification must be specified")
        if pi.get("poolId"):
            check_id(pi["poolId"], "poolInfo.poolId")
        else:
            aps = pi["autoPoolSpecification"]
            opt = (aps.get("poolLifetimeOption") or "").lower()
            if not opt:
                raise missing_property("poolInfo.autoPoolSpecification.poolLifetimeOption")
            if opt not in ("job", "jobschedule"):
                raise bad_property("poolInfo.autoPoolSpecification.poolLifetimeOption", opt)
            prefix = aps.get("autoPoolIdPrefix")
            if prefix is not None and (len(prefix) > 20 or not all(c.isalnum() or c in "-_" for c in prefix)):
                raise bad_property("poolInfo.autoPoolSpecification.autoPoolIdPrefix", prefix)
            if not aps.get("pool"):
                raise missing_property("poolInfo.autoPoolSpecification.pool")
            self._validate_pool_spec(aps["pool"], "poolInfo.autoPoolSpecification.pool.")
        for k in ("onAllTasksComplete", "onTaskFailure"):
            v = body.get(k)
            allowed = ("noaction", "terminatejob") if k == "onAllTasksComplete" else ("noaction", "performexitoptionsjobaction")
            if v is not None and v.lower() not in allowed:
                raise bad_property(k, v)
        c = body.get("constraints") or {}
        if c.get("maxWallClockTime"):
            parse_duration(c["maxWallClockTime"], "constraints.maxWallClockTime")
        if c.get("maxTaskRetryCount") is not None and c["maxTaskRetryCount"] < -1:
            raise bad_property("constraints.maxTaskRetryCount", c["maxTaskRetryCount"])
        if body.get("priority") is not None and not -1000 <= body["priority"] <= 1000:
            raise bad_property("priority", body["priority"])
        if body.get("maxParallelTasks") is not None and (body["maxParallelTasks"] == 0 or body["maxParallelTasks"] < -1):
            raise bad_property("maxParallelTasks", body["maxParallelTasks"])
        check_env(body.get("commonEnvironmentSettings"), "commonEnvironmentSettings")
        for k in ("jobPreparationTask", "jobReleaseTask", "jobManagerTask"):
            t = body.get(k)
            if t is None:
                continue
            if not t.get("commandLine"):
                raise missing_property(f"{k}.commandLine")
            if t.get("id") is not None:
                check_id(t["id"], f"{k}.id")
            check_env(t.get("environmentSettings"), f"{k}.environmentSettings")
            check_resource_files(t.get("resourceFiles"), f"{k}.resourceFiles")
            check_task_constraints(t.get("constraints"), f"{k}.constraints")
            if t.get("maxWallClockTime"):
                parse_duration(t["maxWallClockTime"], f"{k}.maxWallClockTime")
        if body.get("jobReleaseTask") and not body.get("jobPreparationTask"):
            raise bad_property("jobReleaseTask", None, "A job release task requires a job preparation task")
        if body.get("jobManagerTask") and not body["jobManagerTask"].get("id"):
            raise missing_property("jobManagerTask.id")

    def create_job(self, body: dict) -> Job:
        self._validate_job(body)
        with self.lock:
            existing = self.jobs.get(body["id"].lower())
            if existing is not None:
                raise err("JobBeingDeleted" if existing.state == "deleting" else "JobExists")
            spec = dict(body)
            spec["onAllTasksComplete"] = (spec.get("onAllTasksComplete") or "noaction").lower()
            spec["onTaskFailure"] = (spec.get("onTaskFailure") or "noaction").lower()
            j = Job(body["id"], spec)
            ts = now_iso()
            j.state_time = j.creation_time = ts
            j.etag, j.last_modified = new_etag(), ts
            j.created_ts = time.time()
            self.job_order += 1
            j.order = self.job_order
            pi = spec["poolInfo"]
            gens = []
            if pi.get("poolId"):
                j.pool_key = pi["poolId"].lower()
                j.exec = {"startTime": ts, "poolId": pi["poolId"]}
            else:
                aps = pi["autoPoolSpecification"]
                prefix = aps.get("autoPoolIdPrefix")
                pool_id = f"{prefix}_{uuid.uuid4()}" if prefix else f"autopool-{uuid.uuid4()}"
                p = self._new_pool(pool_id, aps["pool"], owner_job=j.key)
                j.pool_key, j.auto_pool = p.key, True
                j.exec = {"startTime": ts, "poolId": p.id}
                gens.append(self._persist_pool(p))
            self.jobs[j.key] = j
            gens.append(self._persist_job(j))
            jm = spec.get("jobManagerTask")
            if jm:
                tspec = {k: v for k, v in jm.items() if k in ("id", "displayName", "commandLine", "containerSettings",
                                                             "resourceFiles", "outputFiles", "environmentSettings",
                                                             "constraints", "requiredSlots", "userIdentity",
                                                             "applicationPackageReferences")}
                t = self._new_task(j, tspec)
                gens.append(self._persist_task(t))
            self._check_all_complete(j)
        self.store.wait(max(gens))
        return j

    def job_json(self, j: Job, base: str) -> dict:
        s = j.spec
        d = {"id": j.id, "url": f"{base}/jobs/{j.id}", "eTag": j.etag, "lastModified": j.last_modified,
             "creationTime": j.creation_time, "state": j.state, "stateTransitionTime": j.state_time}
        if "displayName" in s:
            d["displayName"] = s["displayName"]
        d["usesTaskDependencies"] = bool(s.get("usesTaskDependencies"))
        if j.prev_state:
            d["previousState"] = j.prev_state
            d["previousStateTransitionTime"] = j.prev_state_time
        d["priority"] = s.get("priority") or 0
        d["allowTaskPreemption"] = bool(s.get("allowTaskPreemption"))
        d["maxParallelTasks"] = s.get("maxParallelTasks") if s.get("maxParallelTasks") is not None else -1
        c = s.get("constraints") or {}
        d["constraints"] = {"maxWallClockTime": c.get("maxWallClockTime") or MAX_DURATION,
                            "maxTaskRetryCount": c.get("maxTaskRetryCount") or 0}
        for k in ("jobManagerTask", "jobPreparationTask", "jobReleaseTask", "commonEnvironmentSettings",
                  "networkConfiguration", "metadata"):
            if k in s:
                d[k] = s[k]
        d["poolInfo"] = s["poolInfo"]
        d["onAllTasksComplete"] = s.get("onAllTasksComplete") or "noaction"
        d["onTaskFailure"] = s.get("onTaskFailure") or "noaction"
        d["executionInfo"] = dict(j.exec)
        return d

    def list_jobs(self):
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: j.order)

    def _job_mutable(self, j: Job):
        if j.state == "deleting":
            raise err("JobBeingDeleted")
        if j.state == "terminating":
            raise err("JobBeingTerminated")
        if j.state == "completed":
            raise err("JobCompleted")

    def _update_job(self, job_id: str, body: dict, replace: bool):
        with self.lock:
            j = self.get_job(job_id)
            self._job_mutable(j)
            s = j.spec
            oatc = body.get("onAllTasksComplete")
            if oatc is not None:
                if oatc.lower() not in ("noaction", "terminatejob"):
                    raise bad_property("onAllTasksComplete", oatc)
                if s.get("onAllTasksComplete") == "terminatejob" and oatc.lower() == "noaction":
                    raise bad_property("onAllTasksComplete", oatc, "onAllTasksComplete cannot be changed from "
                                                                   "terminatejob to noaction")
            if body.get("priority") is not None and not -1000 <= body["priority"] <= 1000:
                raise bad_property("priority", body["priority"])
            c = body.get("constraints")
            if c and c.get("maxWallClockTime"):
                parse_duration(c["maxWallClockTime"], "constraints.maxWallClockTime")
            pi = body.get("poolInfo")
            if pi is not None and pi != s.get("poolInfo"):
                if j.state not in ("disabled",):
                    raise err("JobNotDisabled", 409, "The pool of a job can only be changed while it is disabled.")
                if not pi.get("poolId"):
                    raise err("NotSupportedByEmulator", 400,
                              "Changing a job to an auto pool is not supported by the emulator.")
                s["poolInfo"] = pi
                j.pool_key = pi["poolId"].lower()
                j.exec["poolId"] = pi["poolId"]
            if replace:
                # PUT: omitted updatable properties revert to their defaults
                s["priority"] = body.get("priority") or 0
                s["constraints"] = body.get("constraints") or {}
                s["metadata"] = body.get("metadata") or []
                if not s["metadata"]:
                    s.pop("metadata")
                if oatc is not None:
                    s["onAllTasksComplete"] = oatc.lower()
                elif s.get("onAllTasksComplete") != "terminatejob":  # can't revert terminatejob to noaction
                    s["onAllTasksComplete"] = "noaction"
                if body.get("maxParallelTasks") is not None:
                    s["maxParallelTasks"] = body["maxParallelTasks"]
                if body.get("allowTaskPreemption") is not None:
                    s["allowTaskPreemption"] = body["allowTaskPreemption"]
            else:
                for k in ("priority", "constraints", "metadata", "maxParallelTasks", "allowTaskPreemption",
                          "networkConfiguration"):
                    if body.get(k) is not None:
                        s[k] = body[k]
                if oatc is not None:
                    s["onAllTasksComplete"] = oatc.lower()
            self._touch(j)
            gen = self._persist_job(j)
            self._check_all_complete(j)
            self._wake_flag = True
            self.cv.notify()
        self.store.wait(gen)

    def patch_job(self, job_id: str, body: dict):
        self._update_job(job_id, body, replace=False)

    def replace_job(self, job_id: str, body: dict):
        self._update_job(job_id, body, replace=True)

    def disable_job(self, job_id: str, body: dict, wait: float = 2.0):
        opt = (body.get("disableTasks") or "").lower()
        if not opt:
            raise missing_property("disableTasks")
        if opt not in ("requeue", "terminate", "wait"):
            raise bad_property("disableTasks", opt)
        with self.lock:
            j = self.get_job(job_id)
            if j.state in ("deleting",):
                raise err("JobBeingDeleted")
            if j.state in ("terminating", "completed"):
                raise err("JobCompleted" if j.state == "completed" else "JobBeingTerminated")
            if j.state in ("disabled", "disabling"):
                raise err("JobNotActive", 409, "The specified job is not in active state.")
            self._set_job_state(j, "disabling")
            runs = list(j.runs)
            if opt in ("requeue", "terminate"):
                for r in runs:
                    self._kill(r, "requeue" if opt == "requeue" else "terminate")
            self._set_job_state(j, "disabled")
            self._touch(j)
            self._persist_job(j)

    def enable_job(self, job_id: str):
        with self.lock:
            j = self.get_job(job_id)
            if j.state == "deleting":
                raise err("JobBeingDeleted")
            if j.state not in ("disabled", "disabling"):
                raise err("JobNotDisabled", 409, "The specified job is not in disabled state.")
            self._set_job_state(j, "enabling")
            self._set_job_state(j, "active")
            for t in j.tasks.values():
                if t.state == "active":
                    self._enqueue(t)
            self._wake_flag = True
            self.cv.notify()

    def terminate_job(self, job_id: str, reason: str | None, wait: float = 2.0):
        with self.lock:
            j = self.get_job(job_id)
            if j.state == "deleting":
                raise err("JobBeingDeleted")
            if j.state == "completed":
                raise err("JobCompleted")
            if j.state != "terminating":
                self._terminate_job(j, reason or "UserTerminate")
            self.state_cv.wait_for(lambda: j.state != "terminating", timeout=wait)

    def _terminate_job(self, j: Job, reason: str):
        """Under the lock: start terminating a job (kills running tasks, runs release tasks, completes it)."""
        if j.state in ("terminating", "completed", "deleting"):
            return
        self._set_job_state(j, "terminating")
        j.exec["terminateReason"] = reason
        runs = list(j.runs)
        for r in runs:
            self._kill(r, "jobterminate")
        if not runs and not (j.spec.get("jobReleaseTask") and j.prep):
            self._complete_job(j)
        else:
            self._start_thread(self._finish_job_termination, j, runs)

    def _finish_job_termination(self, j: Job, runs):
        try:
            for r in runs:
                r.done.wait(30)
            self._run_release_tasks(j)
        finally:
            with self.lock:
                if not j.deleted and j.state == "terminating":
                    self._complete_job(j)

    def _complete_job(self, j: Job):
        j.exec["endTime"] = now_iso()
        self._set_job_state(j, "completed")
        self._touch(j)
        self._persist_job(j)
        j.ready.clear()
        for t in j.tasks.values():
            t.queued = False
        self.ready_jobs.pop(j.key, None)
        self._maybe_delete_auto_pool(j)

    def _maybe_delete_auto_pool(self, j: Job):
        if not j.auto_pool:
            return
        aps = (j.spec.get("poolInfo") or {}).get("autoPoolSpecification") or {}
        if aps.get("keepAlive"):
            return
        p = self.pools.get(j.pool_key)
        if p is not None and p.state != "deleting":
            p.state, p.state_time = "deleting", now_iso()
            self._touch(p)
            self._persist_pool(p)
            runs = [r for jj in self.jobs.values() for r in jj.runs if r.pool is p]
            for r in runs:
                self._kill(r, "requeue")
            p.nodes = []
            self._start_thread(self._finish_pool_delete, p, runs)

    def delete_job(self, job_id: str, wait: float = 2.0):
        with self.lock:
            j = self.get_job(job_id)
            if j.state != "deleting":
                self._set_job_state(j, "deleting")
                runs = list(j.runs)
                for r in runs:
                    self._kill(r, "delete")
                j.ready.clear()
                self.ready_jobs.pop(j.key, None)
                self._start_thread(self._finish_job_delete, j, runs)
            self.state_cv.wait_for(lambda: self.jobs.get(j.key) is not j, timeout=wait)

    def _finish_job_delete(self, j: Job, runs):
        try:
            for r in runs:
                r.done.wait(30)
            if not j.release_done:
                self._run_release_tasks(j)
            with self.lock:
                node_roots = {os.path.join(self.nodes_root, p.id) for p in self.pools.values()}
            for root in node_roots:
                if os.path.isdir(root):
                    for node_id in os.listdir(root):
                        rmtree_quiet(os.path.join(root, node_id, "workitems", j.id))
        finally:
            with self.lock:
                j.deleted = True
                if self.jobs.get(j.key) is j:
                    del self.jobs[j.key]
                    self.store.delete_job(j.key)
                for key in [k for k in self.faults if k[0] == j.key]:
                    del self.faults[key]
                self._maybe_delete_auto_pool(j)
                self.state_cv.notify_all()

    def task_counts(self, job_id: str) -> dict:
        with self.lock:
            j = self.get_job(job_id)
            return {"taskCounts": dict(j.counts), "taskSlotCounts": dict(j.slot_counts)}

    def prep_release_status(self, job_id: str, base: str) -> list:
        with self.lock:
            j = self.get_job(job_id)
            if not j.spec.get("jobPreparationTask"):
                raise err("JobPreparationTaskNotSpecified")
            out = []
            for node_id, st in j.prep.items():
                pool_id = st.get("_poolId") or st.get("poolId") or j.exec.get("poolId")
                item = {"poolId": pool_id, "nodeId": node_id, "nodeUrl": f"{base}/pools/{pool_id}/nodes/{node_id}",
                        "jobPreparationTaskExecutionInfo": {k: v for k, v in st.items()
                                                            if not k.startswith("_") and k != "poolId"}}
                rel = j.release.get(node_id)
                if rel:
                    item["jobReleaseTaskExecutionInfo"] = rel
                out.append(item)
            return out

    # =========================================================================================== tasks
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

    def _dependency_keys(self, t: Task):
        dep = t.spec.get("dependsOn") or {}
        keys = {x.lower() for x in dep.get("taskIds") or []}
        budget = MAX_TASK_RANGE_EXPANSION
        for r in dep.get("taskIdRanges") or []:
            start, end = int(r["start"]), int(r["end"])
            if end - start + 1 > budget:
                end = start + budget - 1
            budget -= end - start + 1
            keys.update(str(i) for i in range(start, end + 1))
        keys.discard(t.key)
        return keys

    def _register_dependencies(self, j: Job, t: Task):
        if not t.spec.get("dependsOn"):
            return
        remaining = 0
        for k in self._dependency_keys(t):
            other = j.tasks.get(k)
            if other is not None and other.dep_ok:
                continue
            remaining += 1
            j.dependents.setdefault(k, []).append(t.key)
        t.deps_remaining = remaining

    def _rebuild_dependencies(self, j: Job):
        j.dependents = {}
        for t in j.tasks.values():
            if t.state != "completed":
                self._register_dependencies(j, t)

    def _task_accepting(self, j: Job):
        if j.state == "completed":
            raise err("JobCompleted")
        if j.state == "deleting":
            raise err("JobBeingDeleted")
        if j.state == "terminating":
            raise err("JobBeingTerminated")

    def add_task(self, job_id: str, body: dict) -> Task:
        from .validation import check_task
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
        from .validation import check_task
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

    def update_task(self, job_id: str, task_id: str, body: dict):
        from .validation import check_task_constraints
        check_task_constraints(body.get("constraints"))
        with self.lock:
            t = self.get_task(job_id, task_id)
            if t.job.state == "deleting":
                raise err("JobBeingDeleted")
            if t.state == "completed":
                raise err("TaskCompleted")
            t.constraints = dict(body.get("constraints") or {})
            self._touch(t)
            gen = self._persist_task(t)
        self.store.wait(gen)

    def terminate_task(self, job_id: str, task_id: str, wait: float = 5.0):
        with self.lock:
            t = self.get_task(job_id, task_id)
            if t.job.state == "deleting":
                raise err("JobBeingDeleted")
            if t.state == "completed":
                raise err("TaskCompleted")
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

    # ---- task directories ----
    def task_dir(self, t: Task) -> str | None:
        ni = t.node_info
        if not ni or not ni.get("poolId") or not ni.get("nodeId"):
            return None
        return os.path.join(self.nodes_root, ni["poolId"], ni["nodeId"], "workitems", t.job.id, "job-1", t.id)

    # =========================================================================================== faults
    def set_fault(self, job_id: str, task_id: str, kind: str, value):
        with self.lock:
            key = (job_id.lower(), task_id.lower())
            f = dict(self.faults.get(key) or {})
            if value is None:
                f.pop(kind, None)
            else:
                f[kind] = value
            if f:
                self.faults[key] = f
            else:
                self.faults.pop(key, None)
            self.store.put_fault(key[0], key[1], f or None)
            return f

    def preempt(self, job_id: str, task_id: str, count: int = 1) -> dict:
        with self.lock:
            j = self.jobs.get(job_id.lower())
            t = j.tasks.get(task_id.lower()) if j else None
            if t is not None and t.run is not None and t.run.reason is None:
                self._kill(t.run, "preempt")
                return {"preempted": True}
            self.set_fault(job_id, task_id, "preempt", {"count": count})
            return {"preempted": False, "scheduled": True,
                    "message": "the task is not running: it will be preempted right after its next start"}

    def _take_fault(self, t: Task, kind: str):
        key = (t.job.key, t.key)
        f = self.faults.get(key)
        if not f or kind not in f:
            return None
        v = f[kind]
        count = v.get("count", 1) if isinstance(v, dict) else 1
        if count is not None and count >= 0:
            count -= 1
            if count <= 0:
                f = dict(f)
                f.pop(kind)
            else:
                f = dict(f)
                f[kind] = dict(v, count=count)
            if f:
                self.faults[key] = f
            else:
                self.faults.pop(key, None)
            self.store.put_fault(key[0], key[1], f or None)
        return v

    # =========================================================================================== scheduler
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

    # =========================================================================================== execution
    def _kill(self, r: Run, reason: str):
        with r.lock:
            if r.reason is None:
                r.reason = reason
            r.killed.set()
            proc = r.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if r.container_name:
            try:
                subprocess.Popen(["docker", "kill", r.container_name], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            except Exception:
                pass

    def _env(self, j: Job, node: Node, extra: list | None, task_id: str, task_dir: str, wd: str) -> dict:
        env = dict(self.base_env)
        for s in j.spec.get("commonEnvironmentSettings") or []:
            env[s["name"]] = s.get("value") or ""
        for s in extra or []:
            env[s["name"]] = s.get("value") or ""
        pool = node.pool
        jobdir = os.path.join(node.root, "workitems", j.id, "job-1")
        env.update({
            "AZ_BATCH_ACCOUNT_NAME": self.account,
            "AZ_BATCH_ACCOUNT_URL": self.public_url,
            "AZ_BATCH_POOL_ID": pool.id,
            "AZ_BATCH_NODE_ID": node.id,
            "AZ_BATCH_NODE_IS_DEDICATED": "true" if node.dedicated else "false",
            "AZ_BATCH_NODE_ROOT_DIR": node.root,
            "AZ_BATCH_NODE_SHARED_DIR": node.shared_dir,
            "AZ_BATCH_NODE_STARTUP_DIR": os.path.join(node.root, "startup"),
            "AZ_BATCH_NODE_MOUNTS_DIR": os.path.join(node.root, "fsmounts"),
            "AZ_BATCH_JOB_ID": j.id,
            "AZ_BATCH_TASK_ID": task_id,
            "AZ_BATCH_TASK_DIR": task_dir,
            "AZ_BATCH_TASK_WORKING_DIR": wd,
            "AZ_BATCH_TASK_USER": "_azbatch",
            "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
            "AZ_BATCH_CERTIFICATES_DIR": os.path.join(task_dir, "certs"),
        })
        if j.spec.get("jobPreparationTask"):
            env["AZ_BATCH_JOB_PREP_DIR"] = os.path.join(jobdir, "jobpreparation")
            env["AZ_BATCH_JOB_PREP_WORKING_DIR"] = os.path.join(jobdir, "jobpreparation", "wd")
        return env

    def _container_failure(self):
        return {"category": "usererror", "code": "ContainerEngineUnavailable",
                "message": "The task has containerSettings but no container engine is available to the emulator "
                           "(container mode 'fail'). Start a Docker engine or run the emulator with "
                           "--container-mode host."}

    def _exec(self, r: Run, command_line: str, cwd: str, env: dict, out_path: str, err_path: str,
              deadline: float | None, container: dict | None, node: Node, preempt_after_start: bool = False):
        """Runs one command. Returns (exit_code | None, failure_info | None)."""
        try:
            argv = shlex.split(command_line)
        except ValueError as exc:
            return None, {"category": "usererror", "code": "CommandLaunchFailed",
                          "message": f"Failed to parse the command line: {exc}"}
        if not argv:
            return None, {"category": "usererror", "code": "CommandLaunchFailed", "message": "Empty command line"}
        if container is not None and self.container_mode == "docker":
            name = f"batchemu-{uuid.uuid4().hex[:16]}"
            r.container_name = name
            docker = ["docker", "run", "--rm", "--name", name, "-v", f"{node.root}:{node.root}"]
            if (container.get("workingDirectory") or "taskWorkingDirectory").lower() != "containerimagedefault":
                docker += ["-w", cwd]
            for k, v in env.items():
                if self.base_env.get(k) != v:  # Batch and user variables (not the emulator's own environment)
                    docker += ["-e", f"{k}={v}"]
            if container.get("containerRunOptions"):
                docker += shlex.split(container["containerRunOptions"])
            argv = docker + [container["imageName"]] + argv
        with open(out_path, "wb", buffering=0) as fo, open(err_path, "wb", buffering=0) as fe:
            with r.lock:
                if r.reason is not None:
                    return None, None
                try:
                    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                            start_new_session=True, close_fds=True)
                except FileNotFoundError:
                    return None, {"category": "usererror", "code": "CommandProgramNotFound",
                                  "message": f"The specified command program is not found: {argv[0]}"}
                except (PermissionError, OSError) as exc:
                    return None, {"category": "usererror", "code": "CommandLaunchFailed",
                                  "message": f"Failed to launch the specified command line: {exc.strerror or exc}"}
                r.proc = proc
                r.started = True
            if preempt_after_start:
                self._kill(r, "preempt")
            while True:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    rc = proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    self._kill(r, "wallclock")
            # make sure no stray children keep the group alive
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if rc < 0:
            rc = 128 - rc
        return rc, None

    def _prepare_dir(self, task_dir: str) -> str:
        """A clean task directory with an empty wd/ (each try starts from scratch)."""
        try:
            os.mkdir(task_dir)
        except FileExistsError:
            shutil.rmtree(task_dir, ignore_errors=True)
            os.makedirs(task_dir, exist_ok=True)
        except FileNotFoundError:
            os.makedirs(task_dir, exist_ok=True)
        wd = os.path.join(task_dir, "wd")
        os.mkdir(wd)
        return wd

    def _touch_std(self, task_dir: str):
        for name in ("stdout.txt", "stderr.txt"):
            path = os.path.join(task_dir, name)
            if not os.path.exists(path):
                open(path, "ab").close()

    def _run_aux(self, r: Run, kind: str, spec: dict, j: Job, node: Node, directory: str, env_id: str,
                 max_wall: float | None) -> tuple:
        """Runs a job preparation/release or start task. Returns (exit_code, failure_info)."""
        wd = self._prepare_dir(directory)
        if kind != "jobrelease":
            os.makedirs(node.shared_dir, exist_ok=True)
        try:
            download_resource_files(spec.get("resourceFiles"), wd, lambda: r.reason is not None)
        except TransferError as exc:
            return None, exc.failure_info()
        if spec.get("containerSettings") is not None and self.container_mode == "fail":
            return None, self._container_failure()
        env = self._env(j, node, spec.get("environmentSettings"), env_id, directory, wd) if j else None
        if env is None:
            env = dict(self.base_env)
            env.update({"AZ_BATCH_NODE_ID": node.id, "AZ_BATCH_POOL_ID": node.pool.id,
                        "AZ_BATCH_NODE_ROOT_DIR": node.root, "AZ_BATCH_NODE_SHARED_DIR": node.shared_dir,
                        "AZ_BATCH_NODE_STARTUP_DIR": os.path.join(node.root, "startup"),
                        "AZ_BATCH_TASK_DIR": directory, "AZ_BATCH_TASK_WORKING_DIR": wd,
                        "AZ_BATCH_ACCOUNT_NAME": self.account, "AZ_BATCH_ACCOUNT_URL": self.public_url})
            for s in spec.get("environmentSettings") or []:
                env[s["name"]] = s.get("value") or ""
        deadline = time.monotonic() + max_wall if max_wall else None
        container = spec.get("containerSettings")
        return self._exec(r, spec["commandLine"], wd, env, os.path.join(directory, "stdout.txt"),
                          os.path.join(directory, "stderr.txt"), deadline, container, node)

    def _ensure_node_setup(self, r: Run):
        """Pool start task (once per node) then job preparation task (once per node per job).

        Returns None when the task may run, or a failureInfo dict."""
        j, node, p = r.job, r.node, r.pool
        for kind in ("start", "prep"):
            if kind == "start":
                spec = p.spec.get("startTask")
                holder = p.node_setup
            else:
                spec = j.spec.get("jobPreparationTask")
                holder = j.prep
            if not spec:
                continue
            owner = False
            with self.lock:
                st = holder.get(node.id)
                if st is None:
                    st = {"state": "running", "startTime": now_iso(), "retryCount": 0, "_event": threading.Event(),
                          "_poolId": p.id}
                    holder[node.id] = st
                    owner = True
            if owner:
                if kind == "start":
                    directory = os.path.join(node.root, "startup")
                    retries = spec.get("maxTaskRetryCount") or 0
                    max_wall = None
                else:
                    directory = os.path.join(node.root, "workitems", j.id, "job-1", "jobpreparation")
                    c = spec.get("constraints") or {}
                    retries = c.get("maxTaskRetryCount") or 0
                    max_wall = parse_duration(c["maxWallClockTime"]) if c.get("maxWallClockTime") else None
                st["taskRootDirectory"] = directory
                attempt = 0
                while True:
                    rc, fi = self._run_aux(r, "start" if kind == "start" else "jobpreparation", spec, j, node,
                                           directory, spec.get("id") or ("jobpreparation" if kind == "prep" else "starttask"),
                                           max_wall)
                    if r.reason is not None and rc is None and fi is None:
                        break
                    if (rc == 0 and fi is None) or attempt >= retries != -1 or fi is not None:
                        break
                    attempt += 1
                    st["retryCount"] = attempt
                    st["lastRetryTime"] = now_iso()
                with self.lock:
                    if r.reason is not None and rc is None and fi is None:
                        holder.pop(node.id, None)  # interrupted: run it again next time
                    else:
                        st["state"] = "completed"
                        st["endTime"] = now_iso()
                        if rc is not None:
                            st["exitCode"] = rc
                        st["result"] = "success" if rc == 0 and fi is None else "failure"
                        if fi is None and rc not in (0, None):
                            fi = {"category": "usererror", "code": "FailureExitCode",
                                  "message": f"The task exited with an exit code representing a failure ({rc})"}
                        if fi:
                            st["failureInfo"] = fi
                    if kind == "start":
                        self._persist_pool(p)
                    else:
                        self._persist_job(j)
                    st["_event"].set()
            else:
                ev = st.get("_event")
                while ev is not None and not ev.wait(0.2):
                    if r.reason is not None:
                        return None
            if r.reason is not None:
                return None
            with self.lock:
                st = holder.get(node.id) or {}
            if st.get("result") == "failure" and spec.get("waitForSuccess", True):
                code = "StartTaskFailed" if kind == "start" else "JobPreparationTaskFailed"
                what = "pool start task" if kind == "start" else "job preparation task"
                return {"category": "usererror", "code": code,
                        "message": f"The {what} failed on node {node.id} (exit code {st.get('exitCode')}); tasks that "
                                   f"need it cannot run on this node.",
                        "details": [{"name": "NodeId", "value": node.id}]}
        return None

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

    @staticmethod
    def _exit_options(spec: dict, kind: str, exit_code) -> dict:
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

    def _finish(self, r: Run, outcome: dict):
        """Under the lock: record the outcome of a try."""
        t, j = r.task, r.job
        if j.deleted or t.state == "deleted" or self.stopping:
            return
        reason = r.reason
        if reason in ("delete", "shutdown"):
            return
        if reason in ("preempt", "requeue"):
            ts = now_iso()
            t.exec["requeueCount"] = t.exec.get("requeueCount", 0) + 1
            t.exec["lastRequeueTime"] = ts
            self._set_task_state(t, "active")
            if j.state == "active":
                self._enqueue(t, front=True)
            return
        kind = outcome.get("kind")
        rc = outcome.get("exitCode")
        if reason in ("terminate", "jobterminate"):
            self._complete(t, "failure", rc, {"category": "usererror", "code": "TaskEnded",
                                              "message": "Task Was Ended by User Request"})
            return
        if reason == "wallclock":
            self._complete(t, "failure", rc, {
                "category": "usererror", "code": "MaxWallClockTimeExpiry",
                "message": "The task was terminated because it exceeded its maximum wall clock time "
                           f"({t.effective_constraints()['maxWallClockTime']})"})
            return
        if kind == "exited":
            if rc == 0:
                self._complete(t, "success", 0, None)
                return
            max_retry = t.effective_constraints()["maxTaskRetryCount"]
            if max_retry == -1 or t.exec.get("retryCount", 0) < max_retry:
                t.exec["retryCount"] = t.exec.get("retryCount", 0) + 1
                t.exec["lastRetryTime"] = now_iso()
                t.exec["exitCode"] = rc
                self._set_task_state(t, "active")
                if j.state == "active":
                    self._enqueue(t, front=True)
                return
            self._complete(t, "failure", rc, {"category": "usererror", "code": "FailureExitCode",
                                              "message": f"The task exited with an exit code representing a failure",
                                              "details": [{"name": "Message",
                                                           "value": f"The task exited with exit code {rc}"}]},
                           kind="exited")
            return
        fi = outcome.get("failure") or {"category": "servererror", "code": "Unknown", "message": "Unknown error"}
        self._complete(t, "failure", rc, fi, kind=kind)

    def _complete(self, t: Task, result: str, exit_code, failure: dict | None, kind: str = "exited"):
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
        # dependencies
        if result == "success":
            dep_ok = True
            job_action = "none"
        else:
            opts = self._exit_options(t.spec, kind, exit_code)
            dep_ok = (opts.get("dependencyAction") or "block").lower() == "satisfy"
            job_action = (opts.get("jobAction") or "terminate").lower()
        if result == "success":
            opts = self._exit_options(t.spec, kind, exit_code)
            if opts.get("dependencyAction", "satisfy").lower() == "block":
                dep_ok = False
            job_action = (opts.get("jobAction") or "none").lower()
        t.dep_ok = dep_ok
        if dep_ok:
            for dk in j.dependents.pop(t.key, []):
                d = j.tasks.get(dk)
                if d is not None and d.deps_remaining > 0:
                    d.deps_remaining -= 1
                    if d.deps_remaining == 0 and d.state == "active" and j.state == "active":
                        self._enqueue(d)
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

    def _check_all_complete(self, j: Job):
        if j.state != "active" or j.spec.get("onAllTasksComplete") != "terminatejob":
            return
        if j.counts["active"] == 0 and j.counts["running"] == 0:
            self._terminate_job(j, "AllTasksComplete")

    def _run_release_tasks(self, j: Job):
        spec = j.spec.get("jobReleaseTask")
        with self.lock:
            if not spec or j.release_done:
                j.release_done = True
                return
            targets = []
            for node_id, st in j.prep.items():
                pool = self.pools.get((st.get("_poolId") or "").lower()) or self.pools.get(j.pool_key or "")
                if pool is None:
                    continue
                node = next((n for n in pool.nodes if n.id == node_id), None)
                if node is None:
                    # node left the pool; reconstruct its paths
                    for ded in (True, False):
                        for i in range(64):
                            cand = Node(pool, ded, i, self.nodes_root)
                            if cand.id == node_id:
                                node = cand
                                break
                        if node:
                            break
                if node is not None:
                    targets.append(node)
            j.release_done = True
        max_wall = parse_duration(spec["maxWallClockTime"]) if spec.get("maxWallClockTime") else 900.0
        for node in targets:
            directory = os.path.join(node.root, "workitems", j.id, "job-1", "jobrelease")
            dummy = Run(Task(j, {"id": "jobrelease", "commandLine": spec["commandLine"]}, 0), j, node.pool, node)
            st = {"state": "running", "startTime": now_iso(), "taskRootDirectory": directory}
            with self.lock:
                j.release[node.id] = st
            try:
                rc, fi = self._run_aux(dummy, "jobrelease", spec, j, node, directory, spec.get("id") or "jobrelease",
                                       max_wall)
            except Exception as exc:
                rc, fi = None, {"category": "servererror", "code": "InternalError", "message": str(exc)}
            with self.lock:
                st["state"] = "completed"
                st["endTime"] = now_iso()
                if rc is not None:
                    st["exitCode"] = rc
                if fi:
                    st["failureInfo"] = fi
                self._persist_job(j)

    # =========================================================================================== stats helpers
    def summary(self) -> dict:
        with self.lock:
            return {"pools": len(self.pools), "jobs": len(self.jobs),
                    "tasks": sum(len(j.tasks) for j in self.jobs.values()), "runningSlots": self.running_total,
                    "maxConcurrency": self.max_concurrency, "containerMode": self.container_mode}


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

"""Pool API operations: create, read, update, resize, autoscale switches, delete; nodes and node counts.

Guarantees: conditional headers are checked under the lock against the version being read or changed;
create, update, resize and autoscale calls return only once the change is persisted, with the ETag and
Last-Modified of the version they wrote; a pool in state ``deleting`` rejects changes with
``PoolBeingDeleted``; a create beyond the account's pool quota answers ``PoolQuotaReached`` (`quotas`);
deleting a pool requeues the tries running on it and removes its node directories in the background (the
call waits up to ``wait`` seconds). A pool lists as many nodes as its current dedicated + spot counts (node
counts agree); a node is ``running`` while a try runs on it, ``idle`` otherwise (``waitingforstarttask`` /
``starttaskfailed`` around a start task with ``waitForSuccess``), and reports its start task, totals and
recent tasks.
"""
from __future__ import annotations

import os

from . import __version__
from .conditions import NO_CONDITIONS, Conditions
from .core import EngineCore
from .errors import bad_property, err, missing_property
from .model import Json, Node, Pool, Run, Stamp
from .transfer import rmtree_quiet
from .util import check_id, now_iso, parse_duration

POOL_SPEC_KEYS = ("displayName", "vmSize", "virtualMachineConfiguration", "resizeTimeout", "enableAutoScale",
                  "autoScaleFormula", "autoScaleEvaluationInterval", "enableInterNodeCommunication",
                  "networkConfiguration", "startTask", "applicationPackageReferences", "taskSlotsPerNode",
                  "taskSchedulingPolicy", "userAccounts", "metadata", "mountConfiguration", "upgradePolicy",
                  "cloudServiceConfiguration", "certificateReferences", "applicationLicenses",
                  "targetNodeCommunicationMode", "resourceTags", "identity")


PATCHABLE = ("startTask", "applicationPackageReferences", "metadata", "displayName", "vmSize",
             "virtualMachineConfiguration", "enableInterNodeCommunication", "taskSchedulingPolicy",
             "networkConfiguration", "userAccounts", "mountConfiguration", "upgradePolicy",
             "targetNodeCommunicationMode", "certificateReferences", "resourceTags")
REPLACEABLE = ("startTask", "applicationPackageReferences", "metadata", "certificateReferences")
DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")
_IDLE_COUNTS = {"creating": 0, "idle": 0, "offline": 0, "preempted": 0, "rebooting": 0, "reimaging": 0,
                "running": 0, "starting": 0, "startTaskFailed": 0, "leavingPool": 0, "unknown": 0, "unusable": 0,
                "waitingForStartTask": 0, "deallocated": 0, "deallocating": 0, "total": 0, "upgradingOS": 0}
_COUNT_KEYS = {"idle": "idle", "running": "running", "starttaskfailed": "startTaskFailed",
               "waitingforstarttask": "waitingForStartTask", "preempted": "preempted"}


class PoolsMixin(EngineCore):
    """The pool operations of `Engine`."""

    def _validate_pool_spec(self, spec: Json, prefix: str = "") -> None:
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

    def _new_pool(self, pool_id: str, spec: Json, owner_job: str | None = None) -> Pool:
        p = Pool(pool_id, {k: spec[k] for k in POOL_SPEC_KEYS if k in spec})
        p.owner_job = owner_job
        self.pools[p.key] = p
        if spec.get("enableAutoScale"):
            self._run_autoscale(p)
        else:
            self._apply_pool_targets(p, spec.get("targetDedicatedNodes") or 0, spec.get("targetLowPriorityNodes") or 0)
        return p

    def create_pool(self, body: Json) -> Stamp:
        check_id(body.get("id"))
        self._validate_pool_spec(body)
        with self.lock:
            existing = self.pools.get(body["id"].lower())
            if existing is not None:
                raise err("PoolBeingDeleted" if existing.state == "deleting" else "PoolExists")
            self._check_pool_quota()
            p = self._new_pool(body["id"], body)
            stamp, gen = self._stamp(f"pools/{p.id}", p), self._persist_pool(p)
        self.store.wait(gen)
        return stamp

    # ------------------------------------------------------------------------------------------- reads
    def pool_json(self, p: Pool, base: str) -> Json:
        s = p.spec
        d: Json = {"id": p.id, "url": f"{base}/pools/{p.id}", "eTag": p.etag, "lastModified": p.last_modified,
             "creationTime": p.creation_time, "state": p.state, "stateTransitionTime": p.state_time,
             "allocationState": p.alloc_state, "allocationStateTransitionTime": p.alloc_time}
        for k in ("displayName", "vmSize", "virtualMachineConfiguration", "cloudServiceConfiguration"):
            if k in s:
                d[k] = s[k]
        d["resizeTimeout"] = s.get("resizeTimeout") or "PT15M"
        if p.resize_errors:
            d["resizeErrors"] = p.resize_errors
        d["currentDedicatedNodes"], d["targetDedicatedNodes"] = p.alloc_dedicated, p.target_dedicated
        d["currentLowPriorityNodes"], d["targetLowPriorityNodes"] = p.alloc_low, p.target_low
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

    def read_pool(self, pool_id: str, base: str, cond: Conditions = NO_CONDITIONS) -> Json:
        with self.lock:
            p = self.get_pool(pool_id)
            cond.check(p.etag, p.last_modified)
            return self.pool_json(p, base)

    def pool_stamp(self, pool_id: str, cond: Conditions = NO_CONDITIONS) -> Stamp | None:
        """The pool's current version (None if there is no such pool), after the conditions held."""
        with self.lock:
            p = self.pools.get(pool_id.lower())
            if p is None:
                return None
            cond.check(p.etag, p.last_modified)
            return self._stamp(f"pools/{p.id}", p)

    def pool_views(self, base: str) -> list[Json]:
        with self.lock:
            return [self.pool_json(p, base) for p in self.pools.values()]

    def _node_state(self, p: Pool, n: Node) -> str:
        """Lock held: ``starttaskfailed`` / ``waitingforstarttask`` while the pool's start task (with
        ``waitForSuccess``) failed / runs on the node, else ``running`` while a try runs on it, else ``idle``;
        ``preempted`` above all, for a spot node the emulator preempted (`spot`)."""
        if self._is_preempted(n):
            return "preempted"
        start = p.spec.get("startTask")
        st = p.node_setup.get(n.id)
        if start and st is not None and start.get("waitForSuccess", True):
            if st.state == "completed" and st.result == "failure":
                return "starttaskfailed"
            if st.state != "completed":
                return "waitingforstarttask"
        return "running" if n.used else "idle"

    def _runs_by_node(self) -> dict[str, list[Run]]:
        out: dict[str, list[Run]] = {}
        for j in self.jobs.values():
            for r in j.runs:
                out.setdefault(r.node.id, []).append(r)
        return out

    def _node_json(self, p: Pool, n: Node, base: str, running: list[Run]) -> Json:
        url = f"{base}/pools/{p.id}/nodes/{n.id}"
        d: Json = {"id": n.id, "url": url, "state": self._node_state(p, n), "schedulingState": "enabled",
                   "stateTransitionTime": max(n.state_time, p.alloc_time), "lastBootTime": p.alloc_time,
                   "allocationTime": p.alloc_time, "ipAddress": "127.0.0.1", "affinityId": f"TVM:{n.id}",
                   "vmSize": p.spec.get("vmSize"), "totalTasksRun": n.total_run,
                   "runningTasksCount": len(running), "runningTaskSlotsCount": sum(r.slots for r in running),
                   "totalTasksSucceeded": n.total_succeeded}
        recent = [{"taskUrl": f"{base}/{t.path}", "jobId": t.job.id, "taskId": t.id, "taskState": t.state,
                   "executionInfo": dict(t.exec)}
                  for t in reversed(n.recent.values()) if t.state != "deleted" and not t.job.deleted]
        if recent:
            d["recentTasks"] = recent
        if p.spec.get("startTask"):
            d["startTask"] = p.spec["startTask"]
            st = p.node_setup.get(n.id)
            if st is not None:
                d["startTaskInfo"] = {k: v for k, v in st.to_json().items() if k != "taskRootDirectory"}
        d["isDedicated"] = n.dedicated
        d["nodeAgentInfo"] = {"version": f"batchemu-{__version__}", "lastUpdateTime": p.creation_time}
        image = (p.spec.get("virtualMachineConfiguration") or {}).get("imageReference")
        if image:
            d["virtualMachineInfo"] = {"imageReference": image}
        return d

    def node_views(self, pool_id: str, base: str) -> list[Json]:
        """Every node of the pool: as many as its current dedicated + spot nodes."""
        with self.lock:
            p = self.get_pool(pool_id)
            runs = self._runs_by_node()
            return [self._node_json(p, n, base, runs.get(n.id, [])) for n in p.nodes]

    def _get_node(self, pool_id: str, node_id: str) -> tuple[Pool, Node]:
        """Lock held: the pool and its node (node ids are case-insensitive, like every Batch id)."""
        p = self.get_pool(pool_id)
        key = node_id.lower()
        n = next((n for n in p.nodes if n.id.lower() == key), None)
        if n is None:
            raise err("NodeNotFound")
        return p, n

    def read_node(self, pool_id: str, node_id: str, base: str) -> Json:
        with self.lock:
            p, n = self._get_node(pool_id, node_id)
            return self._node_json(p, n, base, self._runs_by_node().get(n.id, []))

    def node_files(self, pool_id: str, node_id: str) -> tuple[str, str]:
        """A node's path under the account URL and its root directory (created with the Batch layout:
        ``shared``, ``startup``, ``workitems``, ``fsmounts``)."""
        with self.lock:
            p, n = self._get_node(pool_id, node_id)
            n.ensure_dirs()
            return f"pools/{p.id}/nodes/{n.id}", n.root

    def node_counts(self) -> list[Json]:
        def counts(p: Pool, dedicated: bool) -> Json:
            out = dict(_IDLE_COUNTS)
            for n in p.nodes:
                if n.dedicated == dedicated:
                    out[_COUNT_KEYS[self._node_state(p, n)]] += 1
                    out["total"] += 1
            return out

        with self.lock:
            return [{"poolId": p.id, "dedicated": counts(p, True), "lowPriority": counts(p, False)}
                    for p in self.pools.values()]

    # ------------------------------------------------------------------------------------------- changes
    def _changeable_pool(self, pool_id: str, cond: Conditions) -> Pool:
        """Lock held: the pool, once the request's conditions hold and it is not being deleted."""
        p = self.get_pool(pool_id)
        cond.check(p.etag, p.last_modified)
        if p.state == "deleting":
            raise err("PoolBeingDeleted")
        return p

    def _pool_written(self, p: Pool) -> tuple[Stamp, int]:
        """Lock held: a new version of the pool, queued for the store; its stamp and store generation."""
        p.touch()
        return self._stamp(f"pools/{p.id}", p), self._persist_pool(p)

    def delete_pool(self, pool_id: str, cond: Conditions = NO_CONDITIONS, wait: float = 2.0) -> None:
        with self.lock:
            p = self.get_pool(pool_id)
            cond.check(p.etag, p.last_modified)
            self._start_pool_delete(p)
            self.state_cv.wait_for(lambda: self.pools.get(p.key) is not p, timeout=wait)

    def _start_pool_delete(self, p: Pool) -> None:
        """Lock held: mark the pool deleting, requeue the tries on it, remove it in the background."""
        if p.state == "deleting":
            return
        p.state, p.state_time = "deleting", now_iso()
        p.touch()
        self._persist_pool(p)
        runs = [r for j in self.jobs.values() for r in j.runs if r.pool is p]
        for r in runs:
            self._kill(r, "requeue")
        p.nodes = []
        self._start_thread(self._finish_pool_delete, p, runs)

    def _finish_pool_delete(self, p: Pool, runs: list[Run]) -> None:
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

    def patch_pool(self, pool_id: str, body: Json, cond: Conditions = NO_CONDITIONS) -> Stamp:
        with self.lock:
            p = self._changeable_pool(pool_id, cond)
            for k in PATCHABLE:
                if k in body:
                    p.spec[k] = body[k]
            if body.get("taskSlotsPerNode") is not None:
                if not 1 <= body["taskSlotsPerNode"] <= 256:
                    raise bad_property("taskSlotsPerNode", body["taskSlotsPerNode"])
                p.spec["taskSlotsPerNode"] = body["taskSlotsPerNode"]
                self._reconcile_nodes(p)
            stamp, gen = self._pool_written(p)
            self._notify_scheduler()
        self.store.wait(gen)
        return stamp

    def replace_pool_properties(self, pool_id: str, body: Json) -> Stamp:
        with self.lock:
            p = self._changeable_pool(pool_id, NO_CONDITIONS)
            for k in REPLACEABLE:
                if k in body and body[k] is not None:
                    p.spec[k] = body[k]
                else:
                    p.spec.pop(k, None)
            stamp, gen = self._pool_written(p)
        self.store.wait(gen)
        return stamp

    def resize_pool(self, pool_id: str, body: Json, cond: Conditions = NO_CONDITIONS) -> Stamp:
        with self.lock:
            p = self._changeable_pool(pool_id, cond)
            if p.spec.get("enableAutoScale"):
                raise err("OperationInvalidForCurrentState",
                          "The pool has auto-scaling enabled; disable auto-scaling before resizing it.")
            for k in ("targetDedicatedNodes", "targetLowPriorityNodes"):
                if body.get(k) is not None and body[k] < 0:
                    raise bad_property(k, body[k])
            if body.get("resizeTimeout"):
                parse_duration(body["resizeTimeout"], "resizeTimeout")
            opt = (body.get("nodeDeallocationOption") or "requeue").lower()
            if opt not in DEALLOCATION_OPTIONS:
                raise bad_property("nodeDeallocationOption", opt)
            ded = body.get("targetDedicatedNodes")
            low = body.get("targetLowPriorityNodes")
            self._apply_pool_targets(p, p.target_dedicated if ded is None else ded,
                                     p.target_low if low is None else low, opt)
            stamp, gen = self._pool_written(p)
        self.store.wait(gen)
        return stamp

    def stop_resize(self, pool_id: str, cond: Conditions = NO_CONDITIONS) -> Stamp:
        with self.lock:
            p = self._changeable_pool(pool_id, cond)
            p.alloc_state, p.alloc_time = "steady", now_iso()
            return self._pool_written(p)[0]

    def enable_autoscale(self, pool_id: str, body: Json, cond: Conditions = NO_CONDITIONS) -> Stamp:
        with self.lock:
            p = self._changeable_pool(pool_id, cond)
            formula = body.get("autoScaleFormula") or p.spec.get("autoScaleFormula")
            self._check_formula(formula)
            self._resolve_interval(body)
            p.spec["enableAutoScale"] = True
            p.spec["autoScaleFormula"] = formula
            if body.get("autoScaleEvaluationInterval"):
                p.spec["autoScaleEvaluationInterval"] = body["autoScaleEvaluationInterval"]
            self._run_autoscale(p)
            stamp, gen = self._pool_written(p)
        self.store.wait(gen)
        return stamp

    def disable_autoscale(self, pool_id: str) -> Stamp:
        with self.lock:
            p = self._changeable_pool(pool_id, NO_CONDITIONS)
            p.spec["enableAutoScale"] = False
            p.spec.pop("autoScaleFormula", None)
            p.spec.pop("autoScaleEvaluationInterval", None)
            p.autoscale_run = None
            stamp, gen = self._pool_written(p)
        self.store.wait(gen)
        return stamp

    def evaluate_autoscale(self, pool_id: str, body: Json) -> Json:
        with self.lock:
            p = self._changeable_pool(pool_id, NO_CONDITIONS)
            if not p.spec.get("enableAutoScale"):
                raise err("InvalidAutoScalingSettings",
                          "Auto-scaling is not enabled on the pool; enable it before evaluating a formula.")
            formula = body.get("autoScaleFormula")
            self._check_formula(formula)
            return self._run_autoscale(p, formula, apply=False)

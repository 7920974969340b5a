"""Pool API operations: create, read, update, resize, autoscale switches, delete.

Guarantees: create, update, resize and autoscale calls return only once the change is persisted; a pool
in state ``deleting`` rejects changes with ``PoolBeingDeleted``; deleting a pool requeues the tries
running on it and removes its node directories in the background (the call waits up to ``wait`` seconds).
"""
from __future__ import annotations

import os

from .errors import bad_property, err, missing_property
from .model import Pool
from .transfer import rmtree_quiet
from .util import check_id, new_etag, now_iso, parse_duration

POOL_SPEC_KEYS = ("displayName", "vmSize", "virtualMachineConfiguration", "resizeTimeout", "enableAutoScale",
                  "autoScaleFormula", "autoScaleEvaluationInterval", "enableInterNodeCommunication",
                  "networkConfiguration", "startTask", "applicationPackageReferences", "taskSlotsPerNode",
                  "taskSchedulingPolicy", "userAccounts", "metadata", "mountConfiguration", "upgradePolicy",
                  "cloudServiceConfiguration", "certificateReferences", "applicationLicenses",
                  "targetNodeCommunicationMode", "resourceTags", "identity")


class PoolsMixin:
    """The pool operations of `Engine`."""

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
                raise err("OperationInvalidForCurrentState",
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
                raise err("InvalidAutoScalingSettings",
                          "Auto-scaling is not enabled on the pool; enable it before evaluating a formula.")
            formula = body.get("autoScaleFormula")
            self._check_formula(formula)
            return self._run_autoscale(p, formula, apply=False)

"""Job API operations: create (including its auto pool and job manager task), read, update, disable/enable.

Guarantees: a job is validated completely before anything is created; create and update calls return
only once the change is persisted; jobs list in creation order. Termination and deletion live in
`job_lifecycle`.
"""
from __future__ import annotations

import time
import uuid

from .errors import bad_property, err, missing_property
from .model import Job
from .util import MAX_DURATION, check_id, new_etag, now_iso, parse_duration
from .validation import check_env, check_resource_files, check_task_constraints


class JobsMixin:
    """The job operations of `Engine` (apart from terminate/delete)."""

    def _validate_job(self, body: dict):
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
                    raise err("JobNotDisabled", "The pool of a job can only be changed while it is disabled.")
                if not pi.get("poolId"):
                    raise err("NotSupportedByEmulator",
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
                raise err("JobNotActive")
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
                raise err("JobNotDisabled")
            self._set_job_state(j, "enabling")
            self._set_job_state(j, "active")
            for t in j.tasks.values():
                if t.state == "active":
                    self._enqueue(t)
            self._wake_flag = True
            self.cv.notify()

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

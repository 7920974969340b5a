"""Job API operations: create (including its auto pool and job manager task), read, update, disable/enable.

Guarantees: a job is validated completely before anything is created; conditional headers are checked
under the lock against the version being read or changed; create and update calls return only once the
change is persisted, with the ETag and Last-Modified of the version they wrote; a create beyond the
account's active job quota answers ``ActiveJobAndScheduleQuotaReached``, and one whose auto pool is beyond
the pool quota completes at once with a scheduling error (`quotas`); jobs list in creation order.
Termination and deletion live in `job_lifecycle`.
"""
from __future__ import annotations

import uuid

from .conditions import NO_CONDITIONS, Conditions
from .core import EngineCore
from .errors import bad_property, err, missing_property
from .model import Job, Json, NodeTaskStatus, Stamp, task_rel_dir
from .quotas import AUTO_POOL_QUOTA_ERROR
from .util import MAX_DURATION, check_id, parse_duration
from .validation import check_env, check_resource_files, check_task_constraints

JOB_MANAGER_TASK_KEYS = ("id", "displayName", "commandLine", "containerSettings", "resourceFiles", "outputFiles",
                         "environmentSettings", "constraints", "requiredSlots", "userIdentity",
                         "applicationPackageReferences")
JOB_PATCHABLE = ("priority", "constraints", "metadata", "maxParallelTasks", "allowTaskPreemption",
                 "networkConfiguration")
JOB_JSON_OPTIONAL = ("jobManagerTask", "jobPreparationTask", "jobReleaseTask", "commonEnvironmentSettings",
                     "networkConfiguration", "metadata")


def _on_node(st: NodeTaskStatus, node_url: str, rel: str) -> Json:
    """A preparation/release task's executionInfo with its directory relative to the node's root and the
    URL of that directory in the node files API (never a host path)."""
    return {**st.to_json(), "taskRootDirectory": rel, "taskRootDirectoryUrl": f"{node_url}/files/{rel}"}


def _check_priority(body: Json) -> None:
    if body.get("priority") is not None and not -1000 <= body["priority"] <= 1000:
        raise bad_property("priority", body["priority"])


class JobsMixin(EngineCore):
    """The job operations of `Engine` (apart from terminate/delete)."""

    # ------------------------------------------------------------------------------------------- create
    def _validate_pool_info(self, pi: Json | None) -> None:
        if not pi:
            raise missing_property("poolInfo")
        if bool(pi.get("poolId")) == bool(pi.get("autoPoolSpecification")):
            raise bad_property("poolInfo", None, "Exactly one of poolId and autoPoolSpecification must be specified")
        if pi.get("poolId"):
            check_id(pi["poolId"], "poolInfo.poolId")
            return
        aps = pi["autoPoolSpecification"]
        where = "poolInfo.autoPoolSpecification"
        opt = (aps.get("poolLifetimeOption") or "").lower()
        if not opt:
            raise missing_property(f"{where}.poolLifetimeOption")
        if opt not in ("job", "jobschedule"):
            raise bad_property(f"{where}.poolLifetimeOption", opt)
        prefix = aps.get("autoPoolIdPrefix")
        if prefix is not None and (len(prefix) > 20 or not all(c.isalnum() or c in "-_" for c in prefix)):
            raise bad_property(f"{where}.autoPoolIdPrefix", prefix)
        if not aps.get("pool"):
            raise missing_property(f"{where}.pool")
        self._validate_pool_spec(aps["pool"], f"{where}.pool.")

    @staticmethod
    def _validate_job_tasks(body: Json) -> None:
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

    def _validate_job(self, body: Json) -> None:
        check_id(body.get("id"))
        self._validate_pool_info(body.get("poolInfo"))
        for k, allowed in (("onAllTasksComplete", ("noaction", "terminatejob")),
                           ("onTaskFailure", ("noaction", "performexitoptionsjobaction"))):
            v = body.get(k)
            if v is not None and v.lower() not in allowed:
                raise bad_property(k, v)
        c = body.get("constraints") or {}
        if c.get("maxWallClockTime"):
            parse_duration(c["maxWallClockTime"], "constraints.maxWallClockTime")
        if c.get("maxTaskRetryCount") is not None and c["maxTaskRetryCount"] < -1:
            raise bad_property("constraints.maxTaskRetryCount", c["maxTaskRetryCount"])
        _check_priority(body)
        mp = body.get("maxParallelTasks")
        if mp is not None and (mp == 0 or mp < -1):
            raise bad_property("maxParallelTasks", mp)
        check_env(body.get("commonEnvironmentSettings"), "commonEnvironmentSettings")
        self._validate_job_tasks(body)

    def create_job(self, body: Json) -> Stamp:
        self._validate_job(body)
        with self.lock:
            existing = self.jobs.get(body["id"].lower())
            if existing is not None:
                raise err("JobBeingDeleted" if existing.state == "deleting" else "JobExists")
            self._check_job_quota()
            spec = dict(body)
            spec["onAllTasksComplete"] = (spec.get("onAllTasksComplete") or "noaction").lower()
            spec["onTaskFailure"] = (spec.get("onTaskFailure") or "noaction").lower()
            j = Job(body["id"], spec)
            self.job_order += 1
            j.order = self.job_order
            gens = self._attach_pool(j)
            self.jobs[j.key] = j
            gens.append(self._persist_job(j))
            if "schedulingError" in j.exec:  # the service completes a job it could not start
                self._complete_job(j)
                gens.append(self._persist_job(j))
            else:
                jm = spec.get("jobManagerTask")
                if jm:
                    t = self._new_task(j, {k: v for k, v in jm.items() if k in JOB_MANAGER_TASK_KEYS})
                    gens.append(self._persist_task(t))
                self._check_all_complete(j)
            stamp = self._stamp(f"jobs/{j.id}", j)
        self.store.wait(max(gens))
        return stamp

    def _attach_pool(self, j: Job) -> list[int]:
        """Lock held: point a new job at its pool, creating its auto pool. Store generations to wait for.

        An auto pool beyond the pool quota is not created: the job gets the service's scheduling error."""
        pi = j.spec["poolInfo"]
        if pi.get("poolId"):
            j.pool_key = pi["poolId"].lower()
            j.exec = {"startTime": j.creation_time, "poolId": pi["poolId"]}
            return []
        if not self._pool_quota_allows():
            j.exec = {"startTime": j.creation_time, "schedulingError": dict(AUTO_POOL_QUOTA_ERROR)}
            return []
        aps = pi["autoPoolSpecification"]
        prefix = aps.get("autoPoolIdPrefix")
        pool_id = f"{prefix}_{uuid.uuid4()}" if prefix else f"autopool-{uuid.uuid4()}"
        p = self._new_pool(pool_id, aps["pool"], owner_job=j.key)
        j.pool_key, j.auto_pool = p.key, True
        j.exec = {"startTime": j.creation_time, "poolId": p.id}
        return [self._persist_pool(p)]

    # ------------------------------------------------------------------------------------------- reads
    def job_json(self, j: Job, base: str) -> Json:
        s = j.spec
        d: Json = {"id": j.id, "url": f"{base}/jobs/{j.id}", "eTag": j.etag, "lastModified": j.last_modified,
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
        for k in JOB_JSON_OPTIONAL:
            if k in s:
                d[k] = s[k]
        d["poolInfo"] = s["poolInfo"]
        d["onAllTasksComplete"] = s.get("onAllTasksComplete") or "noaction"
        d["onTaskFailure"] = s.get("onTaskFailure") or "noaction"
        d["executionInfo"] = dict(j.exec)
        return d

    def read_job(self, job_id: str, base: str, cond: Conditions = NO_CONDITIONS) -> Json:
        with self.lock:
            j = self.get_job(job_id)
            cond.check(j.etag, j.last_modified)
            return self.job_json(j, base)

    def job_views(self, base: str) -> list[Json]:
        """Every job, in creation order."""
        with self.lock:
            return [self.job_json(j, base) for j in sorted(self.jobs.values(), key=lambda j: j.order)]

    def task_counts(self, job_id: str) -> Json:
        with self.lock:
            j = self.get_job(job_id)
            return {"taskCounts": dict(j.counts), "taskSlotCounts": dict(j.slot_counts)}

    def prep_release_status(self, job_id: str, base: str) -> list[Json]:
        with self.lock:
            j = self.get_job(job_id)
            if not j.spec.get("jobPreparationTask"):
                raise err("JobPreparationTaskNotSpecified")
            out = []
            for node_id, st in j.prep.items():
                pool_id = st.pool_id or j.exec.get("poolId")
                node_url = f"{base}/pools/{pool_id}/nodes/{node_id}"
                item = {"poolId": pool_id, "nodeId": node_id, "nodeUrl": node_url,
                        "jobPreparationTaskExecutionInfo": _on_node(st, node_url, task_rel_dir(j.id, "jobpreparation"))}
                rel = j.release.get(node_id)
                if rel:
                    item["jobReleaseTaskExecutionInfo"] = _on_node(rel, node_url, task_rel_dir(j.id, "jobrelease"))
                out.append(item)
            return out

    # ------------------------------------------------------------------------------------------- changes
    def _checked_job(self, job_id: str, cond: Conditions) -> Job:
        """Lock held: the job, once the request's conditions hold."""
        j = self.get_job(job_id)
        cond.check(j.etag, j.last_modified)
        return j

    def _job_written(self, j: Job) -> Stamp:
        """Lock held: a new version of the job (queued for the store); its stamp."""
        j.touch()
        self._persist_job(j)
        return self._stamp(f"jobs/{j.id}", j)

    @staticmethod
    def _job_mutable(j: Job) -> None:
        if j.state == "deleting":
            raise err("JobBeingDeleted")
        if j.state == "terminating":
            raise err("JobBeingTerminated")
        if j.state == "completed":
            raise err("JobCompleted")

    @staticmethod
    def _check_job_update(j: Job, body: Json) -> str | None:
        """The update's onAllTasksComplete (lower case), once the update is valid for this job."""
        oatc = body.get("onAllTasksComplete")
        if oatc is not None:
            oatc = oatc.lower()
            if oatc not in ("noaction", "terminatejob"):
                raise bad_property("onAllTasksComplete", body["onAllTasksComplete"])
            if j.spec.get("onAllTasksComplete") == "terminatejob" and oatc == "noaction":
                raise bad_property("onAllTasksComplete", body["onAllTasksComplete"],
                                   "onAllTasksComplete cannot be changed from terminatejob to noaction")
        _check_priority(body)
        c = body.get("constraints")
        if c and c.get("maxWallClockTime"):
            parse_duration(c["maxWallClockTime"], "constraints.maxWallClockTime")
        pi = body.get("poolInfo")
        if pi is not None and pi != j.spec.get("poolInfo"):
            if j.state != "disabled":
                raise err("JobNotDisabled", "The pool of a job can only be changed while it is disabled.")
            if not pi.get("poolId"):
                raise err("NotSupportedByEmulator", "Changing a job to an auto pool is not supported by the emulator.")
        return oatc

    @staticmethod
    def _replace_job_spec(s: Json, body: Json, oatc: str | None) -> None:
        """PUT: omitted updatable properties revert to their defaults."""
        s["priority"] = body.get("priority") or 0
        s["constraints"] = body.get("constraints") or {}
        s["metadata"] = body.get("metadata") or []
        if not s["metadata"]:
            s.pop("metadata")
        if oatc is not None:
            s["onAllTasksComplete"] = oatc
        elif s.get("onAllTasksComplete") != "terminatejob":  # can't revert terminatejob to noaction
            s["onAllTasksComplete"] = "noaction"
        for k in ("maxParallelTasks", "allowTaskPreemption"):
            if body.get(k) is not None:
                s[k] = body[k]

    @staticmethod
    def _patch_job_spec(s: Json, body: Json, oatc: str | None) -> None:
        for k in JOB_PATCHABLE:
            if body.get(k) is not None:
                s[k] = body[k]
        if oatc is not None:
            s["onAllTasksComplete"] = oatc

    def _update_job(self, job_id: str, body: Json, replace: bool, cond: Conditions) -> Stamp:
        with self.lock:
            j = self._checked_job(job_id, cond)
            self._job_mutable(j)
            oatc = self._check_job_update(j, body)
            pi = body.get("poolInfo")
            if pi is not None and pi != j.spec.get("poolInfo"):
                j.spec["poolInfo"] = pi
                j.pool_key = pi["poolId"].lower()
                j.exec["poolId"] = pi["poolId"]
            (self._replace_job_spec if replace else self._patch_job_spec)(j.spec, body, oatc)
            j.touch()
            gen = self._persist_job(j)
            self._check_all_complete(j)
            self._notify_scheduler()
            stamp = self._stamp(f"jobs/{j.id}", j)
        self.store.wait(gen)
        return stamp

    def patch_job(self, job_id: str, body: Json, cond: Conditions = NO_CONDITIONS) -> Stamp:
        return self._update_job(job_id, body, False, cond)

    def replace_job(self, job_id: str, body: Json, cond: Conditions = NO_CONDITIONS) -> Stamp:
        return self._update_job(job_id, body, True, cond)

    def disable_job(self, job_id: str, body: Json, cond: Conditions = NO_CONDITIONS) -> Stamp:
        with self.lock:
            j = self._checked_job(job_id, cond)
            opt = (body.get("disableTasks") or "").lower()
            if not opt:
                raise missing_property("disableTasks")
            if opt not in ("requeue", "terminate", "wait"):
                raise bad_property("disableTasks", opt)
            self._job_mutable(j)
            if j.state in ("disabled", "disabling"):
                raise err("JobNotActive")
            self._set_job_state(j, "disabling")
            if opt != "wait":
                for r in list(j.runs):
                    self._kill(r, opt)
            self._set_job_state(j, "disabled")
            return self._job_written(j)

    def enable_job(self, job_id: str, cond: Conditions = NO_CONDITIONS) -> Stamp:
        with self.lock:
            j = self._checked_job(job_id, cond)
            if j.state == "deleting":
                raise err("JobBeingDeleted")
            if j.state not in ("disabled", "disabling"):
                raise err("JobNotDisabled")
            self._set_job_state(j, "enabling")
            self._set_job_state(j, "active")
            for t in j.tasks.values():
                if t.state == "active":
                    self._enqueue(t)
            self._notify_scheduler()
            return self._stamp(f"jobs/{j.id}", j)

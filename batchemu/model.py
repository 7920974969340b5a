"""In-memory model objects (the source of truth while running; persisted through store.Store)."""
from __future__ import annotations

import collections
import hashlib
import os
import threading

from .util import MAX_DURATION

DEFAULT_USER_IDENTITY = {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
TASK_OPTIONAL = ("exitConditions", "containerSettings", "resourceFiles", "outputFiles", "environmentSettings",
                 "affinityInfo", "multiInstanceSettings", "dependsOn", "applicationPackageReferences")


def _bucket(state: str) -> str:
    if state == "active":
        return "active"
    if state in ("preparing", "running"):
        return "running"
    return "completed"


class Node:
    __slots__ = ("id", "pool", "dedicated", "used", "root", "setup", "dirs_ready")

    def __init__(self, pool, dedicated: bool, index: int, nodes_root: str):
        kind = "d" if dedicated else "p"
        digest = hashlib.sha1(f"{pool.key}/{kind}/{index}".encode()).hexdigest()
        self.id = f"tvmps_{digest}_{kind}"
        self.pool = pool
        self.dedicated = dedicated
        self.used = 0
        self.root = os.path.join(nodes_root, pool.id, self.id)
        self.setup = None  # start-task status dict for this node
        self.dirs_ready = False

    def ensure_dirs(self):
        if not self.dirs_ready:
            for sub in ("shared", "startup", "workitems", "fsmounts"):
                os.makedirs(os.path.join(self.root, sub), exist_ok=True)
            self.dirs_ready = True

    @property
    def shared_dir(self):
        return os.path.join(self.root, "shared")


class Pool:
    __slots__ = ("key", "id", "spec", "state", "state_time", "alloc_state", "alloc_time", "creation_time", "etag",
                 "last_modified", "target_dedicated", "target_low", "autoscale_run", "resize_errors", "nodes",
                 "used", "owner_job", "node_setup", "deallocation")

    def __init__(self, pool_id: str, spec: dict):
        self.key = pool_id.lower()
        self.id = pool_id
        self.spec = spec
        self.state = "active"
        self.alloc_state = "steady"
        self.target_dedicated = 0
        self.target_low = 0
        self.autoscale_run = None
        self.resize_errors = None
        self.nodes: list[Node] = []
        self.used = 0
        self.owner_job = None  # job key for auto pools
        self.node_setup: dict = {}  # node id -> start task status
        self.deallocation = "requeue"

    @property
    def slots(self) -> int:
        return int(self.spec.get("taskSlotsPerNode") or 1)

    def doc(self) -> dict:
        return {"id": self.id, "spec": self.spec, "state": self.state, "stateTime": self.state_time,
                "allocState": self.alloc_state, "allocTime": self.alloc_time, "creationTime": self.creation_time,
                "etag": self.etag, "lastModified": self.last_modified, "targetDedicated": self.target_dedicated,
                "targetLow": self.target_low, "autoscaleRun": self.autoscale_run, "ownerJob": self.owner_job,
                "nodeSetup": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")}
                              for k, v in self.node_setup.items()}}


class Job:
    __slots__ = ("key", "id", "spec", "state", "state_time", "prev_state", "prev_state_time", "creation_time",
                 "etag", "last_modified", "exec", "pool_key", "auto_pool", "tasks", "next_seq", "counts",
                 "slot_counts", "ready", "runs", "prep", "release", "dependents", "deleted", "release_done",
                 "order", "created_ts")

    def __init__(self, job_id: str, spec: dict):
        self.key = job_id.lower()
        self.id = job_id
        self.spec = spec
        self.state = "active"
        self.prev_state = None
        self.prev_state_time = None
        self.exec: dict = {}
        self.pool_key = None
        self.auto_pool = False
        self.tasks: dict[str, Task] = {}
        self.next_seq = 1
        self.counts = {"active": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
        self.slot_counts = {"active": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
        self.ready: collections.deque = collections.deque()
        self.runs: set = set()
        self.prep: dict = {}      # node id -> job preparation task status (dict)
        self.release: dict = {}   # node id -> job release task status (dict)
        self.dependents: dict = {}  # task key -> [dependent task keys]
        self.deleted = False
        self.release_done = False
        self.order = 0
        self.created_ts = 0.0

    def doc(self) -> dict:
        return {"id": self.id, "spec": self.spec, "state": self.state, "stateTime": self.state_time,
                "prevState": self.prev_state, "prevStateTime": self.prev_state_time,
                "creationTime": self.creation_time, "etag": self.etag, "lastModified": self.last_modified,
                "exec": self.exec, "poolKey": self.pool_key, "autoPool": self.auto_pool, "nextSeq": self.next_seq,
                "prep": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in self.prep.items()},
                "release": self.release, "releaseDone": self.release_done, "order": self.order,
                "createdTs": self.created_ts}

    def count_in(self, task: "Task", sign: int):
        b = _bucket(task.state)
        self.counts[b] += sign
        self.slot_counts[b] += sign * task.slots
        if b == "completed":
            r = "succeeded" if task.exec.get("result") == "success" else "failed"
            self.counts[r] += sign
            self.slot_counts[r] += sign * task.slots


class Task:
    __slots__ = ("job", "id", "key", "seq", "spec", "state", "state_time", "prev_state", "prev_state_time",
                 "creation_time", "etag", "last_modified", "exec", "node_info", "constraints", "deps_remaining",
                 "dep_ok", "container_mode", "run", "queued", "slots")

    def __init__(self, job: Job, spec: dict, seq: int):
        self.job = job
        self.id = spec["id"]
        self.key = self.id.lower()
        self.seq = seq
        self.spec = spec
        self.state = "active"
        self.prev_state = None
        self.prev_state_time = None
        self.exec: dict = {"retryCount": 0, "requeueCount": 0}
        self.node_info = None
        self.constraints = spec.get("constraints") or {}
        self.deps_remaining = 0
        self.dep_ok = False
        self.container_mode = None
        self.run = None
        self.queued = False
        self.slots = int(spec.get("requiredSlots") or 1)

    def doc(self) -> dict:
        return {"spec": self.spec, "state": self.state, "stateTime": self.state_time, "prevState": self.prev_state,
                "prevStateTime": self.prev_state_time, "creationTime": self.creation_time, "etag": self.etag,
                "lastModified": self.last_modified, "exec": self.exec, "nodeInfo": self.node_info,
                "constraints": self.constraints, "containerMode": self.container_mode, "depOk": self.dep_ok}

    def effective_constraints(self) -> dict:
        job_c = self.job.spec.get("constraints") or {}
        c = self.constraints or {}
        retries = c.get("maxTaskRetryCount")
        if retries is None:
            retries = job_c.get("maxTaskRetryCount", 0) or 0
        return {"maxWallClockTime": c.get("maxWallClockTime") or MAX_DURATION,
                "retentionTime": c.get("retentionTime") or "P7D",
                "maxTaskRetryCount": retries}

    def to_json(self, base: str) -> dict:
        spec = self.spec
        d = {"id": self.id, "url": f"{base}/jobs/{self.job.id}/tasks/{self.id}", "eTag": self.etag,
             "creationTime": self.creation_time, "lastModified": self.last_modified}
        if "displayName" in spec:
            d["displayName"] = spec["displayName"]
        d["state"] = self.state
        d["stateTransitionTime"] = self.state_time
        if self.prev_state:
            d["previousState"] = self.prev_state
            d["previousStateTransitionTime"] = self.prev_state_time
        d["commandLine"] = spec["commandLine"]
        for k in TASK_OPTIONAL:
            if k in spec:
                d[k] = spec[k]
        d["userIdentity"] = spec.get("userIdentity") or DEFAULT_USER_IDENTITY
        d["constraints"] = self.effective_constraints()
        d["requiredSlots"] = self.slots
        d["executionInfo"] = dict(self.exec)
        if self.node_info:
            d["nodeInfo"] = self.node_info
        if self.container_mode:
            d["emulatorContainerMode"] = self.container_mode
        return d

    def get(self, path: str, base: str = ""):
        """Property lookup for $filter (fast paths for the common ones)."""
        if path == "state":
            return self.state
        if path == "id":
            return self.id
        if path.startswith("executionInfo/"):
            rest = path[14:]
            if "/" not in rest:
                return self.exec.get(rest)
        if path == "commandLine":
            return self.spec.get("commandLine")
        if path == "displayName":
            return self.spec.get("displayName")
        if path == "creationTime":
            return self.creation_time
        if path == "stateTransitionTime":
            return self.state_time
        if path == "previousState":
            return self.prev_state
        cur = self.to_json(base)
        for part in path.split("/"):
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
        return cur


class Run:
    """One try of a task on a node."""
    __slots__ = ("task", "job", "pool", "node", "reason", "killed", "proc", "lock", "thread", "slots",
                 "container_name", "started", "done")

    def __init__(self, task, job, pool, node):
        self.task = task
        self.job = job
        self.pool = pool
        self.node = node
        self.reason = None
        self.killed = threading.Event()
        self.proc = None
        self.lock = threading.Lock()
        self.thread = None
        self.slots = task.slots
        self.container_name = None
        self.started = False
        self.done = threading.Event()  # set when the worker has finished its bookkeeping

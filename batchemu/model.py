"""In-memory model objects (the source of truth while running; persisted through store.Store).

Guarantees: every persisted object has a ``doc()`` and a matching ``from_doc()`` that rebuilds it from
that document (``from_doc(doc())`` keeps every persisted field); a node's directories follow the Batch
layout, built by `Node.task_dir` / `task_rel_dir` only.
"""
from __future__ import annotations

import collections
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .util import MAX_DURATION, new_etag, now_iso

DEFAULT_USER_IDENTITY = {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}}
TASK_OPTIONAL = ("exitConditions", "containerSettings", "resourceFiles", "outputFiles", "environmentSettings",
                 "affinityInfo", "multiInstanceSettings", "dependsOn", "applicationPackageReferences")

Json = dict[str, Any]


def _bucket(state: str) -> str:
    if state == "active":
        return "active"
    if state in ("preparing", "running"):
        return "running"
    return "completed"


def task_rel_dir(job_id: str, name: str) -> str:
    """A task's directory relative to its node's root: ``workitems/<job>/job-1/<name>`` (as in Batch).

    `name` is a task id, or ``jobpreparation`` / ``jobrelease``."""
    return f"workitems/{job_id}/job-1/{name}"


def node_root(nodes_root: str, pool_id: str, node_id: str) -> str:
    """A node's root directory (``AZ_BATCH_NODE_ROOT_DIR``)."""
    return os.path.join(nodes_root, pool_id, node_id)


TRASH_DIR = "trash"  # under the data directory: what deletions moved aside, removed behind them (and at start)


def job_dir(root: str, job_id: str) -> str:
    """Everything of a job on the node with root directory `root`."""
    return os.path.join(root, "workitems", job_id)


def task_dir(root: str, job_id: str, name: str) -> str:
    """The directory of a task (or ``jobpreparation`` / ``jobrelease``) of a job on the node at `root`."""
    return os.path.join(root, *task_rel_dir(job_id, name).split("/"))


@dataclass(frozen=True)
class Stamp:
    """What a write answers with: the resource's path (under the account URL), ETag and Last-Modified."""
    path: str
    etag: str
    last_modified: str


class Versioned:
    """A resource with an ETag and a Last-Modified time, both renewed by every change."""
    __slots__ = ("etag", "last_modified")
    etag: str
    last_modified: str

    def touch(self, ts: str | None = None) -> None:
        self.etag = new_etag()
        self.last_modified = ts or now_iso()


@dataclass
class NodeTaskStatus:
    """A start task, job preparation task or job release task on one node (its executionInfo)."""
    state: str = "running"
    start_time: str = ""
    task_root_directory: str | None = None
    retry_count: int | None = None
    last_retry_time: str | None = None
    end_time: str | None = None
    exit_code: int | None = None
    result: str | None = None
    failure_info: Json | None = None
    pool_id: str | None = None  # the pool the node belonged to when it ran (not part of the executionInfo)
    done: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    _JSON = (("state", "state"), ("start_time", "startTime"), ("task_root_directory", "taskRootDirectory"),
             ("retry_count", "retryCount"), ("last_retry_time", "lastRetryTime"), ("end_time", "endTime"),
             ("exit_code", "exitCode"), ("result", "result"), ("failure_info", "failureInfo"))

    def to_json(self) -> Json:
        """The executionInfo as the service reports it (unset fields left out)."""
        return {name: getattr(self, attr) for attr, name in self._JSON if getattr(self, attr) is not None}

    def doc(self) -> Json:
        return {**self.to_json(), "poolId": self.pool_id}

    @classmethod
    def from_doc(cls, d: Json) -> NodeTaskStatus:
        st = cls(pool_id=d.get("poolId"), **{attr: d[name] for attr, name in cls._JSON if name in d})
        if st.state == "completed":
            st.done.set()
        return st

    def complete(self, exit_code: int | None, failure: Json | None, result: str | None = None) -> None:
        self.state, self.end_time = "completed", now_iso()
        if exit_code is not None:
            self.exit_code = exit_code
        if result is not None:
            self.result = result
        if failure:
            self.failure_info = failure


def _completed(statuses: Json | None) -> dict[str, NodeTaskStatus]:
    """Setup statuses worth keeping across a restart: an interrupted one runs again."""
    out = {}
    for node_id, d in (statuses or {}).items():
        st = NodeTaskStatus.from_doc(d)
        if st.state == "completed":
            out[node_id] = st
    return out


RECENT_TASKS = 10  # how many recent tasks a node reports (the service does not document its number)


class Node:
    """One of a pool's nodes: as many as the pool has (current dedicated + spot); the host-wide slot cap
    decides how many tasks run at once, not how many nodes exist. Its counters and recent tasks live in
    memory only (a restart starts them from zero, like a reimaged node)."""
    __slots__ = ("id", "pool", "dedicated", "used", "root", "dirs_ready", "state_time", "total_run",
                 "total_succeeded", "recent")

    def __init__(self, pool: Pool, dedicated: bool, index: int, nodes_root: str):
        kind = "d" if dedicated else "p"
        digest = hashlib.sha1(f"{pool.key}/{kind}/{index}".encode()).hexdigest()
        self.id = f"tvmps_{digest}_{kind}"
        self.pool = pool
        self.dedicated = dedicated
        self.used = 0
        self.root = node_root(nodes_root, pool.id, self.id)
        self.dirs_ready = False
        self.state_time = now_iso()
        self.total_run = 0
        self.total_succeeded = 0
        # task key (job key, task key) -> the task, most recent last: tasks that ran here lately
        self.recent: collections.OrderedDict[tuple[str, str], Task] = collections.OrderedDict()

    def remember(self, task: Task) -> None:
        """Lock held: the task ran (or runs) here; the oldest beyond `RECENT_TASKS` are forgotten."""
        key = (task.job.key, task.key)
        self.recent.pop(key, None)
        self.recent[key] = task
        while len(self.recent) > RECENT_TASKS:
            self.recent.popitem(last=False)

    def ensure_dirs(self) -> None:
        if not self.dirs_ready:
            for sub in ("shared", "startup", "workitems", "fsmounts"):
                os.makedirs(os.path.join(self.root, sub), exist_ok=True)
            self.dirs_ready = True

    @property
    def shared_dir(self) -> str:
        return os.path.join(self.root, "shared")

    @property
    def startup_dir(self) -> str:
        return os.path.join(self.root, "startup")

    def task_dir(self, job_id: str, name: str) -> str:
        return task_dir(self.root, job_id, name)


class Pool(Versioned):
    __slots__ = ("key", "id", "spec", "state", "state_time", "alloc_state", "alloc_time", "creation_time",
                 "target_dedicated", "target_low", "alloc_dedicated", "alloc_low", "fallback", "autoscale_run",
                 "resize_errors", "nodes", "used", "owner_job", "node_setup", "deallocation")

    def __init__(self, pool_id: str, spec: Json):
        self.key = pool_id.lower()
        self.id = pool_id
        self.spec = spec
        self.state = "active"
        self.alloc_state = "steady"
        self.target_dedicated = 0
        self.target_low = 0
        # nodes allocated (the pool's current nodes): its targets as far as the account's core quotas allowed
        self.alloc_dedicated = 0
        self.alloc_low = 0
        self.fallback = (0, 0)  # the emulator's pending-tasks node of an autoscale pool at zero (not persisted)
        self.autoscale_run: Json | None = None
        self.resize_errors: list[Json] | None = None
        self.nodes: list[Node] = []
        self.used = 0
        self.owner_job: str | None = None  # job key for auto pools
        self.node_setup: dict[str, NodeTaskStatus] = {}  # node id -> start task status
        self.deallocation = "requeue"
        ts = now_iso()
        self.state_time = self.alloc_time = self.creation_time = ts
        self.touch(ts)

    @property
    def slots(self) -> int:
        return int(self.spec.get("taskSlotsPerNode") or 1)

    def doc(self) -> Json:
        return {"id": self.id, "spec": self.spec, "state": self.state, "stateTime": self.state_time,
                "allocState": self.alloc_state, "allocTime": self.alloc_time, "creationTime": self.creation_time,
                "etag": self.etag, "lastModified": self.last_modified, "targetDedicated": self.target_dedicated,
                "targetLow": self.target_low, "allocDedicated": self.alloc_dedicated, "allocLow": self.alloc_low,
                "resizeErrors": self.resize_errors, "autoscaleRun": self.autoscale_run, "ownerJob": self.owner_job,
                "nodeSetup": {k: v.doc() for k, v in self.node_setup.items()}}

    @classmethod
    def from_doc(cls, d: Json) -> Pool:
        p = cls(d["id"], d["spec"])
        p.state, p.state_time = d["state"], d["stateTime"]
        p.alloc_state, p.alloc_time = "steady", d.get("allocTime") or d["stateTime"]
        p.creation_time, p.etag, p.last_modified = d["creationTime"], d["etag"], d["lastModified"]
        p.target_dedicated, p.target_low = d["targetDedicated"], d["targetLow"]
        p.alloc_dedicated = d.get("allocDedicated", p.target_dedicated)  # stored before quotas: all allocated
        p.alloc_low = d.get("allocLow", p.target_low)
        p.resize_errors = d.get("resizeErrors")
        p.autoscale_run, p.owner_job = d.get("autoscaleRun"), d.get("ownerJob")
        p.node_setup = _completed(d.get("nodeSetup"))
        return p


class Job(Versioned):
    __slots__ = ("key", "id", "spec", "state", "state_time", "prev_state", "prev_state_time", "creation_time",
                 "exec", "pool_key", "auto_pool", "tasks", "next_seq", "counts",
                 "slot_counts", "ready", "runs", "prep", "release", "dependents", "deleted", "release_done",
                 "order", "created_ts", "id_order")

    def __init__(self, job_id: str, spec: Json):
        self.key = job_id.lower()
        self.id = job_id
        self.spec = spec
        self.state = "active"
        self.prev_state: str | None = None
        self.prev_state_time: str | None = None
        self.exec: Json = {}
        self.pool_key: str | None = None
        self.auto_pool = False
        self.tasks: dict[str, Task] = {}
        self.id_order: list[str] | None = None  # task keys in id order (the list order), built when first asked
        self.next_seq = 1
        self.counts = {"active": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
        self.slot_counts = {"active": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
        self.ready: collections.deque[Task] = collections.deque()
        self.runs: set[Run] = set()
        self.prep: dict[str, NodeTaskStatus] = {}      # node id -> job preparation task status
        self.release: dict[str, NodeTaskStatus] = {}   # node id -> job release task status
        self.dependents: dict[str, list[str]] = {}  # task key -> [dependent task keys]
        self.deleted = False
        self.release_done = False
        self.order = 0
        self.created_ts = time.time()
        ts = now_iso()
        self.state_time = self.creation_time = ts
        self.touch(ts)

    def doc(self) -> Json:
        return {"id": self.id, "spec": self.spec, "state": self.state, "stateTime": self.state_time,
                "prevState": self.prev_state, "prevStateTime": self.prev_state_time,
                "creationTime": self.creation_time, "etag": self.etag, "lastModified": self.last_modified,
                "exec": self.exec, "poolKey": self.pool_key, "autoPool": self.auto_pool, "nextSeq": self.next_seq,
                "prep": {k: v.doc() for k, v in self.prep.items()},
                "release": {k: v.doc() for k, v in self.release.items()}, "releaseDone": self.release_done,
                "order": self.order, "createdTs": self.created_ts}

    @classmethod
    def from_doc(cls, d: Json) -> Job:
        j = cls(d["id"], d["spec"])
        j.state, j.state_time = d["state"], d["stateTime"]
        j.prev_state, j.prev_state_time = d.get("prevState"), d.get("prevStateTime")
        j.creation_time, j.etag, j.last_modified = d["creationTime"], d["etag"], d["lastModified"]
        j.exec, j.pool_key, j.auto_pool = d.get("exec") or {}, d.get("poolKey"), d.get("autoPool", False)
        j.next_seq = d.get("nextSeq", 1)
        j.prep = _completed(d.get("prep"))
        j.release = {k: NodeTaskStatus.from_doc(v) for k, v in (d.get("release") or {}).items()}
        j.release_done = d.get("releaseDone", False)
        j.order = d.get("order", 0)
        j.created_ts = d.get("createdTs", time.time())
        return j

    def count_in(self, task: Task, sign: int) -> None:
        b = _bucket(task.state)
        self.counts[b] += sign
        self.slot_counts[b] += sign * task.slots
        if b == "completed":
            r = "succeeded" if task.exec.get("result") == "success" else "failed"
            self.counts[r] += sign
            self.slot_counts[r] += sign * task.slots


class Task(Versioned):
    __slots__ = ("job", "id", "key", "seq", "spec", "state", "state_time", "prev_state", "prev_state_time",
                 "creation_time", "exec", "node_info", "constraints", "deps_remaining",
                 "dep_ok", "container_mode", "run", "queued", "slots")

    def __init__(self, job: Job, spec: Json, seq: int):
        self.job = job
        self.id: str = spec["id"]
        self.key = self.id.lower()
        self.seq = seq
        self.spec = spec
        self.state = "active"
        self.prev_state: str | None = None
        self.prev_state_time: str | None = None
        self.exec: Json = {"retryCount": 0, "requeueCount": 0}
        self.node_info: Json | None = None
        self.constraints: Json = spec.get("constraints") or {}
        self.deps_remaining = 0
        self.dep_ok = False
        self.container_mode: str | None = None
        self.run: Run | None = None
        self.queued = False
        self.slots = int(spec.get("requiredSlots") or 1)
        ts = now_iso()
        self.state_time = self.creation_time = ts
        self.touch(ts)

    def doc(self) -> Json:
        return {"spec": self.spec, "state": self.state, "stateTime": self.state_time, "prevState": self.prev_state,
                "prevStateTime": self.prev_state_time, "creationTime": self.creation_time, "etag": self.etag,
                "lastModified": self.last_modified, "exec": self.exec, "nodeInfo": self.node_info,
                "constraints": self.constraints, "containerMode": self.container_mode, "depOk": self.dep_ok}

    @classmethod
    def from_doc(cls, job: Job, d: Json, seq: int) -> Task:
        t = cls(job, d["spec"], seq)
        t.state, t.state_time = d["state"], d["stateTime"]
        t.prev_state, t.prev_state_time = d.get("prevState"), d.get("prevStateTime")
        t.creation_time, t.etag, t.last_modified = d["creationTime"], d["etag"], d["lastModified"]
        t.exec, t.node_info, t.constraints = d["exec"], d.get("nodeInfo"), d.get("constraints") or {}
        t.container_mode, t.dep_ok = d.get("containerMode"), d.get("depOk", False)
        return t

    @property
    def path(self) -> str:
        """The task's path under the account URL."""
        return f"jobs/{self.job.id}/tasks/{self.id}"

    def effective_constraints(self) -> Json:
        job_c = self.job.spec.get("constraints") or {}
        c = self.constraints or {}
        retries = c.get("maxTaskRetryCount")
        if retries is None:
            retries = job_c.get("maxTaskRetryCount", 0) or 0
        return {"maxWallClockTime": c.get("maxWallClockTime") or MAX_DURATION,
                "retentionTime": c.get("retentionTime") or "P7D",
                "maxTaskRetryCount": retries}

    def to_json(self, base: str) -> Json:
        spec = self.spec
        d: Json = {"id": self.id, "url": f"{base}/{self.path}", "eTag": self.etag,
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

    _FAST = {"state": "state", "id": "id", "creationTime": "creation_time", "stateTransitionTime": "state_time",
             "previousState": "prev_state"}

    def get(self, path: str, base: str = "") -> Any:
        """Property lookup for $filter (fast paths for the common ones)."""
        attr = self._FAST.get(path)
        if attr is not None:
            return getattr(self, attr)
        if path.startswith("executionInfo/") and "/" not in path[14:]:
            return self.exec.get(path[14:])
        if path in ("commandLine", "displayName"):
            return self.spec.get(path)
        cur: Any = self.to_json(base)
        for part in path.split("/"):
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
        return cur


@dataclass(frozen=True)
class Outcome:
    """How one try of a task ended, before it is judged (retry, requeue, complete...)."""
    kind: str  # exited | killed | preproc (before the command) | uploadfail | error (the runner crashed)
    exit_code: int | None = None
    failure: Json | None = None


class Run:
    """One try of a task on a node."""
    __slots__ = ("task", "job", "pool", "node", "reason", "killed", "proc", "lock", "thread", "slots",
                 "container_name", "started", "done")

    def __init__(self, task: Task, job: Job, pool: Pool, node: Node):
        self.task = task
        self.job = job
        self.pool = pool
        self.node = node
        self.reason: str | None = None
        self.killed = threading.Event()
        self.proc: Any = None  # subprocess.Popen[bytes] while the command runs
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.slots = task.slots
        self.container_name: str | None = None
        self.started = False
        self.done = threading.Event()  # set when the worker has finished its bookkeeping

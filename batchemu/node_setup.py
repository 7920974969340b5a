"""Auxiliary tasks on a node: the pool start task, job preparation tasks and job release tasks.

Guarantees: the start task runs once per node and the preparation task once per node per job, before any
task of that job runs there; concurrent tries on the same node wait for the one that runs it; an
interrupted setup runs again next time; a failed setup with ``waitForSuccess`` fails the task with
``StartTaskFailed``/``JobPreparationTaskFailed``. Release tasks run once per job on every node that ran its
preparation task, even if the node has since left the pool.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .core import EngineCore
from .model import Job, Json, Node, NodeTaskStatus, Pool, Run, Task, task_rel_dir
from .transfer import TransferError, download_resource_files
from .util import now_iso, parse_duration

FORMER_NODE_SEARCH = 4096  # node indexes tried when rebuilding a node that has left its pool


@dataclass(frozen=True)
class _Setup:
    """One kind of node setup for a try: the pool start task or the job's preparation task."""
    kind: str  # "start" | "prep"
    spec: Json
    holder: dict[str, NodeTaskStatus]  # node id -> status (the pool's or the job's)
    directory: str
    rel_dir: str  # the directory relative to the node's root: what the API reports, never a host path
    retries: int
    max_wall: float | None

    @property
    def env_id(self) -> str:
        return self.spec.get("id") or ("starttask" if self.kind == "start" else "jobpreparation")


def _setup_for(kind: str, r: Run) -> _Setup | None:
    if kind == "start":
        spec = r.pool.spec.get("startTask")
        if not spec:
            return None
        return _Setup(kind, spec, r.pool.node_setup, r.node.startup_dir, "startup", spec.get("maxTaskRetryCount") or 0,
                      None)
    spec = r.job.spec.get("jobPreparationTask")
    if not spec:
        return None
    c = spec.get("constraints") or {}
    max_wall = parse_duration(c["maxWallClockTime"]) if c.get("maxWallClockTime") else None
    return _Setup(kind, spec, r.job.prep, r.node.task_dir(r.job.id, "jobpreparation"),
                  task_rel_dir(r.job.id, "jobpreparation"), c.get("maxTaskRetryCount") or 0, max_wall)


def _setup_failure(setup: _Setup, st: NodeTaskStatus, node: Node) -> Json:
    code = "StartTaskFailed" if setup.kind == "start" else "JobPreparationTaskFailed"
    what = "pool start task" if setup.kind == "start" else "job preparation task"
    return {"category": "usererror", "code": code,
            "message": f"The {what} failed on node {node.id} (exit code {st.exit_code}); tasks that "
                       f"need it cannot run on this node.",
            "details": [{"name": "NodeId", "value": node.id}]}


class NodeSetupMixin(EngineCore):
    """Start, preparation and release tasks for `Engine`."""

    def _run_aux(self, r: Run, kind: str, spec: Json, j: Job, node: Node, directory: str, env_id: str,
                 max_wall: float | None) -> tuple[int | None, Json | None]:
        """Runs a job preparation/release or start task (for a try of a task of job `j`: a start task sees
        that job's variables too). Returns (exit_code, failure_info)."""
        wd = self._prepare_dir(directory)
        if kind != "jobrelease":
            os.makedirs(node.shared_dir, exist_ok=True)
        try:
            download_resource_files(spec.get("resourceFiles"), wd, self.storage, lambda: r.reason is not None)
        except TransferError as exc:
            return None, exc.failure_info()
        if spec.get("containerSettings") is not None and self.container_mode == "fail":
            return None, self._container_failure()
        env = self._env(j, node, spec.get("environmentSettings"), env_id, directory, wd)
        deadline = time.monotonic() + max_wall if max_wall else None
        return self._exec(r, spec["commandLine"], wd, env, os.path.join(directory, "stdout.txt"),
                          os.path.join(directory, "stderr.txt"), deadline, spec.get("containerSettings"), node)

    def _ensure_node_setup(self, r: Run) -> Json | None:
        """Pool start task (once per node) then job preparation task (once per node per job).

        Returns None when the task may run, or a failureInfo dict."""
        for kind in ("start", "prep"):
            setup = _setup_for(kind, r)
            if setup is None:
                continue
            with self.lock:
                st = setup.holder.get(r.node.id)
                owner = st is None
                if st is None:
                    st = setup.holder[r.node.id] = NodeTaskStatus(start_time=now_iso(), retry_count=0,
                                                                  task_root_directory=setup.rel_dir,
                                                                  pool_id=r.pool.id)
            if owner:
                self._run_setup(r, setup, st)
            else:
                while not st.done.wait(0.2):
                    if r.reason is not None:
                        return None
            if r.reason is not None:
                return None
            with self.lock:
                current = setup.holder.get(r.node.id)
            if current is not None and current.result == "failure" and setup.spec.get("waitForSuccess", True):
                return _setup_failure(setup, current, r.node)
        return None

    def _run_setup(self, r: Run, setup: _Setup, st: NodeTaskStatus) -> None:
        """Run a setup task (with its retries) for the try `r` and record how it ended."""
        attempt = 0
        while True:
            rc, fi = self._run_aux(r, "start" if setup.kind == "start" else "jobpreparation", setup.spec, r.job,
                                   r.node, setup.directory, setup.env_id, setup.max_wall)
            interrupted = r.reason is not None and rc is None and fi is None
            if interrupted or (rc == 0 and fi is None) or attempt >= setup.retries != -1 or fi is not None:
                break
            attempt += 1
            st.retry_count = attempt
            st.last_retry_time = now_iso()
        with self.lock:
            if interrupted:
                setup.holder.pop(r.node.id, None)  # run it again next time
            else:
                if fi is None and rc not in (0, None):
                    fi = {"category": "usererror", "code": "FailureExitCode",
                          "message": f"The task exited with an exit code representing a failure ({rc})"}
                st.complete(rc, fi, "success" if rc == 0 and fi is None else "failure")
            if setup.kind == "start":
                self._persist_pool(r.pool)
            else:
                self._persist_job(r.job)
            st.done.set()

    def _release_targets(self, j: Job) -> list[Node]:
        """Lock held: every node that ran the job's preparation task (rebuilt if it has left its pool)."""
        targets = []
        for node_id, st in j.prep.items():
            pool = self.pools.get((st.pool_id or "").lower()) or self.pools.get(j.pool_key or "")
            if pool is None:
                continue
            node = next((n for n in pool.nodes if n.id == node_id), None) or self._former_node(pool, node_id)
            if node is not None:
                targets.append(node)
        return targets

    def _former_node(self, pool: Pool, node_id: str) -> Node | None:
        """A node that has left the pool, with its paths (node ids are derived from pool, kind and index)."""
        for dedicated in (True, False):
            for i in range(max(FORMER_NODE_SEARCH, pool.target_dedicated, pool.target_low)):
                cand = Node(pool, dedicated, i, self.nodes_root)
                if cand.id == node_id:
                    return cand
        return None

    def _run_release_tasks(self, j: Job) -> None:
        spec = j.spec.get("jobReleaseTask")
        with self.lock:
            due = bool(spec) and not j.release_done
            targets = self._release_targets(j) if due else []
            j.release_done = True
        if not spec or not due:
            return
        max_wall = parse_duration(spec["maxWallClockTime"]) if spec.get("maxWallClockTime") else 900.0
        for node in targets:
            directory = node.task_dir(j.id, "jobrelease")
            dummy = Run(Task(j, {"id": "jobrelease", "commandLine": spec["commandLine"]}, 0), j, node.pool, node)
            st = NodeTaskStatus(start_time=now_iso(), task_root_directory=task_rel_dir(j.id, "jobrelease"),
                                pool_id=node.pool.id)
            with self.lock:
                j.release[node.id] = st
            try:
                rc, fi = self._run_aux(dummy, "jobrelease", spec, j, node, directory, spec.get("id") or "jobrelease",
                                       max_wall)
            except Exception as exc:
                rc, fi = None, {"category": "servererror", "code": "InternalError", "message": str(exc)}
            with self.lock:
                st.complete(rc, fi)
                self._persist_job(j)
                st.done.set()

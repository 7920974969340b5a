"""Auxiliary tasks on a node: the pool start task, job preparation tasks and job release tasks.

Guarantees: the start task runs once per node and the preparation task once per node per job, before any
task of that job runs there; concurrent tries on the same node wait for the one that runs it; an
interrupted setup runs again next time; a failed setup with ``waitForSuccess`` fails the task with
``StartTaskFailed``/``JobPreparationTaskFailed``. Release tasks run once per job on every node that ran its
preparation task, even if the node has since left the pool.
"""
from __future__ import annotations

import os
import threading
import time

from .model import Job, Node, Run, Task
from .transfer import TransferError, download_resource_files
from .util import now_iso, parse_duration


class NodeSetupMixin:
    """Start, preparation and release tasks for `Engine`."""

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

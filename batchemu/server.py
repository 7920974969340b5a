"""HTTP front end: a ThreadingHTTPServer (HTTP/1.1 keep-alive) speaking the Batch REST API.

Every request is answered; any unexpected exception becomes a 500 InternalError in the Batch error format
and is logged, so a bad request can never take the server down.
"""
from __future__ import annotations

import json
import logging
import mimetypes
import os
import re
import socket
import stat
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__
from .auth import SharedKeyVerifier
from .engine import Engine, dumps
from .errors import BatchError, bad_query, err
from .odata import apply_select, compile_filter, dict_getter, parse_select
from .util import http_date, now_iso, parse_iso
from . import validation as V

log = logging.getLogger("batchemu.server")

MAX_BODY = 1024 * 1024          # the service's limit for request bodies (RequestBodyTooLarge above it)
MAX_DRAIN = 16 * 1024 * 1024    # bigger bodies are not drained: the connection is closed instead
API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.\d+(\.\d+)?)?(-preview)?$")
MAX_RESULTS_DEFAULT = 1000
JSON_CT = "application/json;odata=minimalmetadata"


class Response:
    __slots__ = ("status", "headers", "body", "stream")

    def __init__(self, status=200, body=None, headers=None, stream=None):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.stream = stream


def _json(status, obj, headers=None) -> Response:
    h = {"Content-Type": JSON_CT}
    if headers:
        h.update(headers)
    return Response(status, dumps(obj), h)


def _empty(status, headers=None) -> Response:
    return Response(status, b"", headers or {})


def _lm(iso: str | None) -> str:
    ts = parse_iso(iso) if iso else None
    return http_date(ts)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.since = now_iso()

    def add(self, key: str, status: int):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            s = str(status)
            self.statuses[s] = self.statuses.get(s, 0) + 1

    def snapshot(self):
        with self.lock:
            return {"requests": dict(sorted(self.counts.items())), "total": sum(self.counts.values()),
                    "statusCodes": dict(self.statuses), "since": self.since}

    def reset(self):
        with self.lock:
            self.counts.clear()
            self.statuses.clear()
            self.since = now_iso()


class Router:
    def __init__(self):
        self.routes = []

    def add(self, method, template, fn):
        pattern = "^" + re.sub(r"\{[^}/]+\}", "([^/]+)", template) + "$"
        if template.endswith("{path}"):
            pattern = "^" + re.sub(r"\{[^}/]+\}", "([^/]+)", template[:-6]) + "(.+)$"
        key_tpl = re.sub(r"\{(jobId|poolId|taskId|nodeId)\}", "{id}", template)
        self.routes.append((method, re.compile(pattern), key_tpl, fn))

    def match(self, method, path):
        allowed = False
        for m, rx, tpl, fn in self.routes:
            mt = rx.match(path)
            if mt:
                if m == method:
                    return tpl, fn, [urllib.parse.unquote(g) for g in mt.groups()]
                allowed = True
        if allowed:
            raise BatchError(405, "UnsupportedHttpVerb")
        raise err("InvalidUri", 404, "The requested URI does not represent any resource on the server.")


class App:
    def __init__(self, engine: Engine, account: str, key: str):
        self.engine = engine
        self.account = account
        self.verifier = SharedKeyVerifier(account, key)
        self.stats = Stats()
        self.started = time.time()
        r = self.router = Router()
        # pools
        r.add("POST", "/pools", self.create_pool)
        r.add("GET", "/pools", self.list_pools)
        r.add("GET", "/pools/{poolId}", self.get_pool)
        r.add("HEAD", "/pools/{poolId}", self.pool_exists)
        r.add("PATCH", "/pools/{poolId}", self.patch_pool)
        r.add("DELETE", "/pools/{poolId}", self.delete_pool)
        r.add("POST", "/pools/{poolId}/updateproperties", self.replace_pool)
        r.add("POST", "/pools/{poolId}/resize", self.resize_pool)
        r.add("POST", "/pools/{poolId}/stopresize", self.stop_resize)
        r.add("POST", "/pools/{poolId}/enableautoscale", self.enable_autoscale)
        r.add("POST", "/pools/{poolId}/disableautoscale", self.disable_autoscale)
        r.add("POST", "/pools/{poolId}/evaluateautoscale", self.evaluate_autoscale)
        r.add("GET", "/pools/{poolId}/nodes", self.list_nodes)
        r.add("GET", "/pools/{poolId}/nodes/{nodeId}", self.get_node)
        r.add("GET", "/nodecounts", self.node_counts)
        # jobs
        r.add("POST", "/jobs", self.create_job)
        r.add("GET", "/jobs", self.list_jobs)
        r.add("GET", "/jobs/{jobId}", self.get_job)
        r.add("PATCH", "/jobs/{jobId}", self.patch_job)
        r.add("PUT", "/jobs/{jobId}", self.replace_job)
        r.add("DELETE", "/jobs/{jobId}", self.delete_job)
        r.add("POST", "/jobs/{jobId}/disable", self.disable_job)
        r.add("POST", "/jobs/{jobId}/enable", self.enable_job)
        r.add("POST", "/jobs/{jobId}/terminate", self.terminate_job)
        r.add("GET", "/jobs/{jobId}/taskcounts", self.task_counts)
        r.add("GET", "/jobs/{jobId}/jobpreparationandreleasetaskstatus", self.prep_status)
        # job schedules: not emulated
        r.add("GET", "/jobschedules", self.list_empty)
        r.add("POST", "/jobschedules", self.not_supported)
        r.add("GET", "/jobschedules/{id}", self.schedule_not_found)
        r.add("HEAD", "/jobschedules/{id}", self.schedule_not_found)
        r.add("GET", "/jobschedules/{id}/jobs", self.schedule_not_found)
        # tasks
        r.add("POST", "/jobs/{jobId}/tasks", self.create_task)
        r.add("GET", "/jobs/{jobId}/tasks", self.list_tasks)
        r.add("POST", "/jobs/{jobId}/addtaskcollection", self.add_collection)
        r.add("GET", "/jobs/{jobId}/tasks/{taskId}", self.get_task)
        r.add("PUT", "/jobs/{jobId}/tasks/{taskId}", self.update_task)
        r.add("DELETE", "/jobs/{jobId}/tasks/{taskId}", self.delete_task)
        r.add("POST", "/jobs/{jobId}/tasks/{taskId}/terminate", self.terminate_task)
        r.add("POST", "/jobs/{jobId}/tasks/{taskId}/reactivate", self.reactivate_task)
        r.add("GET", "/jobs/{jobId}/tasks/{taskId}/subtasksinfo", self.subtasks)
        r.add("GET", "/jobs/{jobId}/tasks/{taskId}/files", self.list_files)
        r.add("GET", "/jobs/{jobId}/tasks/{taskId}/files/{path}", self.get_file)
        r.add("HEAD", "/jobs/{jobId}/tasks/{taskId}/files/{path}", self.file_props)
        r.add("DELETE", "/jobs/{jobId}/tasks/{taskId}/files/{path}", self.delete_file)
        # emulator control plane (no auth)
        c = self.control = Router()
        c.add("GET", "/_emulator/health", self.health)
        c.add("GET", "/_emulator/stats", self.get_stats)
        c.add("POST", "/_emulator/stats/reset", self.reset_stats)
        c.add("GET", "/_emulator/faults", self.list_faults)
        c.add("POST", "/_emulator/jobs/{jobId}/tasks/{taskId}/preempt", self.fault_preempt)
        c.add("POST", "/_emulator/jobs/{jobId}/tasks/{taskId}/fail-next", self.fault_fail_next)
        c.add("POST", "/_emulator/jobs/{jobId}/tasks/{taskId}/slow", self.fault_slow)
        c.add("POST", "/_emulator/jobs/{jobId}/tasks/{taskId}/fail-upload", self.fault_fail_upload)
        c.add("DELETE", "/_emulator/jobs/{jobId}/tasks/{taskId}/faults", self.fault_clear)

    # ------------------------------------------------------------------------------------------- plumbing
    @staticmethod
    def parse_body(req, schema, required=True):
        raw = req.body
        if not raw:
            if required:
                raise BatchError(400, "InvalidRequestBody", None, [{"key": "Reason", "value": "The request body is empty"}])
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BatchError(400, "InvalidRequestBody", None, [{"key": "Reason", "value": f"Malformed JSON: {exc}"}])
        return V.validate(body, schema)

    @staticmethod
    def conditions(req, etag: str, last_modified: str | None):
        h = req.headers

        def tags(v):
            out = []
            for x in v.split(","):
                x = x.strip()
                if x.startswith("W/"):
                    x = x[2:]
                out.append(x.strip('"'))
            return out
        im = h.get("if-match")
        if im and im.strip() != "*" and etag not in tags(im):
            raise err("ConditionNotMet", 412)
        inm = h.get("if-none-match")
        if inm and (inm.strip() == "*" or etag in tags(inm)):
            if req.method in ("GET", "HEAD"):
                raise BatchError(304, "ConditionNotMet")
            raise err("ConditionNotMet", 412)
        lm = parse_iso(last_modified) if last_modified else None
        for name, modified_test in (("if-modified-since", True), ("if-unmodified-since", False)):
            v = h.get(name)
            if v and lm is not None:
                try:
                    import email.utils
                    since = email.utils.parsedate_to_datetime(v).timestamp()
                except Exception:
                    raise BatchError(400, "InvalidHeaderValue", None, [{"key": "HeaderName", "value": name}])
                modified = int(lm) > int(since)
                if modified_test and not modified:
                    if req.method in ("GET", "HEAD"):
                        raise BatchError(304, "ConditionNotMet")
                    raise err("ConditionNotMet", 412)
                if not modified_test and modified:
                    raise err("ConditionNotMet", 412)

    @staticmethod
    def max_results(req) -> int:
        v = req.query.get("maxresults")
        if v is None:
            return MAX_RESULTS_DEFAULT
        try:
            n = int(v)
        except ValueError:
            raise bad_query("maxresults", v)
        if not 1 <= n <= 1000:
            raise bad_query("maxresults", v, "maxresults must be between 1 and 1000", code="OutOfRangeQueryParameterValue")
        return n

    @staticmethod
    def next_link(req, token) -> str:
        params = {k: v for k, v in req.query.items() if k not in ("$skiptoken",)}
        params["$skiptoken"] = str(token)
        return f"{req.base}{req.path}?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)

    # ------------------------------------------------------------------------------------------- pools
    def create_pool(self, req):
        body = self.parse_body(req, V.POOL_CREATE)
        p = self.engine.create_pool(body)
        url = f"{req.base}/pools/{p.id}"
        return _empty(201, {"ETag": p.etag, "Last-Modified": _lm(p.last_modified), "Location": url,
                            "DataServiceId": url})

    def list_pools(self, req):
        eng = self.engine
        with eng.lock:
            items = [eng.pool_json(p, req.base) for p in eng.pools.values()]
        return self._dict_page(req, items, "pools")

    def _dict_page(self, req, items, odata):
        """items: list of dicts already rendered. Filter/select/paging by position."""
        pred = compile_filter(req.query.get("$filter"))
        select = parse_select(req.query.get("$select"))
        n = self.max_results(req)
        tok = req.query.get("$skiptoken")
        start = 0
        if tok is not None:
            try:
                start = int(tok)
            except ValueError:
                raise bad_query("$skiptoken", tok)
        out, more = [], None
        for i, d in enumerate(items):
            if i < start:
                continue
            if pred is not None and not pred(dict_getter(d)):
                continue
            if len(out) == n:
                more = i
                break
            out.append(apply_select(d, select))
        body = {"odata.metadata": f"{req.base}/$metadata#{odata}", "value": out}
        if more is not None:
            body["odata.nextLink"] = self.next_link(req, more)
        return _json(200, body)

    def get_pool(self, req, pool_id):
        with self.engine.lock:
            p = self.engine.get_pool(pool_id)
            self.conditions(req, p.etag, p.last_modified)
            d = self.engine.pool_json(p, req.base)
        return _json(200, apply_select(d, parse_select(req.query.get("$select"))),
                     {"ETag": d["eTag"], "Last-Modified": _lm(d["lastModified"])})

    def pool_exists(self, req, pool_id):
        with self.engine.lock:
            p = self.engine.pools.get(pool_id.lower())
            if p is None:
                return _empty(404)
            self.conditions(req, p.etag, p.last_modified)
            return _empty(200, {"ETag": p.etag, "Last-Modified": _lm(p.last_modified)})

    def _pool_cond(self, req, pool_id):
        with self.engine.lock:
            p = self.engine.get_pool(pool_id)
            self.conditions(req, p.etag, p.last_modified)
            return p

    def _pool_headers(self, req, pool_id, status):
        with self.engine.lock:
            p = self.engine.pools.get(pool_id.lower())
            h = {"DataServiceId": f"{req.base}/pools/{pool_id}"}
            if p is not None:
                h.update({"ETag": p.etag, "Last-Modified": _lm(p.last_modified)})
        return _empty(status, h)

    def patch_pool(self, req, pool_id):
        body = self.parse_body(req, V.POOL_PATCH)
        self._pool_cond(req, pool_id)
        self.engine.patch_pool(pool_id, body)
        return self._pool_headers(req, pool_id, 200)

    def replace_pool(self, req, pool_id):
        body = self.parse_body(req, V.POOL_REPLACE)
        self.engine.replace_pool_properties(pool_id, body)
        return self._pool_headers(req, pool_id, 204)

    def delete_pool(self, req, pool_id):
        self._pool_cond(req, pool_id)
        self.engine.delete_pool(pool_id)
        return _empty(202)

    def resize_pool(self, req, pool_id):
        body = self.parse_body(req, V.POOL_RESIZE)
        self._pool_cond(req, pool_id)
        self.engine.resize_pool(pool_id, body)
        return self._pool_headers(req, pool_id, 202)

    def stop_resize(self, req, pool_id):
        self._pool_cond(req, pool_id)
        self.engine.stop_resize(pool_id)
        return self._pool_headers(req, pool_id, 202)

    def enable_autoscale(self, req, pool_id):
        body = self.parse_body(req, V.POOL_ENABLE_AS)
        self._pool_cond(req, pool_id)
        self.engine.enable_autoscale(pool_id, body)
        return self._pool_headers(req, pool_id, 200)

    def disable_autoscale(self, req, pool_id):
        self.engine.disable_autoscale(pool_id)
        return self._pool_headers(req, pool_id, 200)

    def evaluate_autoscale(self, req, pool_id):
        body = self.parse_body(req, V.POOL_EVAL_AS)
        run = self.engine.evaluate_autoscale(pool_id, body)
        return _json(200, run, {"DataServiceId": f"{req.base}/pools/{pool_id}/evaluateautoscale"})

    def _node_json(self, req, p, n):
        eng = self.engine
        running = [r for j in eng.jobs.values() for r in j.runs if r.node.id == n.id]
        return {"id": n.id, "url": f"{req.base}/pools/{p.id}/nodes/{n.id}",
                "state": "running" if running else "idle", "schedulingState": "enabled",
                "stateTransitionTime": p.alloc_time, "lastBootTime": p.creation_time, "allocationTime": p.alloc_time,
                "ipAddress": "127.0.0.1", "affinityId": f"TVM:{n.id}", "vmSize": p.spec.get("vmSize"),
                "runningTasksCount": len(running), "runningTaskSlotsCount": sum(r.slots for r in running),
                "isDedicated": n.dedicated,
                "recentTasks": [{"taskUrl": f"{req.base}/jobs/{r.job.id}/tasks/{r.task.id}", "jobId": r.job.id,
                                 "taskId": r.task.id, "taskState": r.task.state} for r in running]}

    def list_nodes(self, req, pool_id):
        with self.engine.lock:
            p = self.engine.get_pool(pool_id)
            items = [self._node_json(req, p, n) for n in p.nodes]
        return self._dict_page(req, items, "nodes")

    def get_node(self, req, pool_id, node_id):
        with self.engine.lock:
            p = self.engine.get_pool(pool_id)
            n = next((n for n in p.nodes if n.id == node_id), None)
            if n is None:
                raise err("NodeNotFound")
            d = self._node_json(req, p, n)
        return _json(200, apply_select(d, parse_select(req.query.get("$select"))))

    def node_counts(self, req):
        with self.engine.lock:
            items = []
            for p in self.engine.pools.values():
                def counts(ded):
                    nodes = [n for n in p.nodes if n.dedicated == ded]
                    busy = sum(1 for n in nodes if n.used)
                    return {"creating": 0, "idle": len(nodes) - busy, "offline": 0, "preempted": 0, "rebooting": 0,
                            "reimaging": 0, "running": busy, "starting": 0, "startTaskFailed": 0, "leavingPool": 0,
                            "unknown": 0, "unusable": 0, "waitingForStartTask": 0, "deallocated": 0,
                            "deallocating": 0, "total": len(nodes), "upgradingOS": 0}
                items.append({"poolId": p.id, "dedicated": counts(True), "lowPriority": counts(False)})
        return self._dict_page(req, items, "nodecounts")

    # ------------------------------------------------------------------------------------------- jobs
    def create_job(self, req):
        body = self.parse_body(req, V.JOB_CREATE)
        j = self.engine.create_job(body)
        url = f"{req.base}/jobs/{j.id}"
        return _empty(201, {"ETag": j.etag, "Last-Modified": _lm(j.last_modified), "Location": url,
                            "DataServiceId": url})

    def list_jobs(self, req):
        eng = self.engine
        with eng.lock:
            items = [eng.job_json(j, req.base) for j in sorted(eng.jobs.values(), key=lambda j: j.order)]
        return self._dict_page(req, items, "jobs")

    def get_job(self, req, job_id):
        with self.engine.lock:
            j = self.engine.get_job(job_id)
            self.conditions(req, j.etag, j.last_modified)
            d = self.engine.job_json(j, req.base)
        return _json(200, apply_select(d, parse_select(req.query.get("$select"))),
                     {"ETag": d["eTag"], "Last-Modified": _lm(d["lastModified"])})

    def _job_cond(self, req, job_id):
        with self.engine.lock:
            j = self.engine.get_job(job_id)
            self.conditions(req, j.etag, j.last_modified)
            return j

    def _job_headers(self, req, job_id, status):
        with self.engine.lock:
            j = self.engine.jobs.get(job_id.lower())
            h = {"DataServiceId": f"{req.base}/jobs/{job_id}"}
            if j is not None:
                h.update({"ETag": j.etag, "Last-Modified": _lm(j.last_modified)})
        return _empty(status, h)

    def patch_job(self, req, job_id):
        body = self.parse_body(req, V.JOB_PATCH)
        self._job_cond(req, job_id)
        self.engine.patch_job(job_id, body)
        return self._job_headers(req, job_id, 200)

    def replace_job(self, req, job_id):
        body = self.parse_body(req, V.JOB_UPDATE)
        self._job_cond(req, job_id)
        self.engine.replace_job(job_id, body)
        return self._job_headers(req, job_id, 200)

    def delete_job(self, req, job_id):
        self._job_cond(req, job_id)
        self.engine.delete_job(job_id)
        return _empty(202)

    def disable_job(self, req, job_id):
        body = self.parse_body(req, V.JOB_DISABLE)
        self._job_cond(req, job_id)
        self.engine.disable_job(job_id, body)
        return self._job_headers(req, job_id, 202)

    def enable_job(self, req, job_id):
        self._job_cond(req, job_id)
        self.engine.enable_job(job_id)
        return self._job_headers(req, job_id, 202)

    def terminate_job(self, req, job_id):
        body = self.parse_body(req, V.JOB_TERMINATE, required=False)
        self._job_cond(req, job_id)
        self.engine.terminate_job(job_id, body.get("terminateReason"))
        return self._job_headers(req, job_id, 202)

    def task_counts(self, req, job_id):
        return _json(200, self.engine.task_counts(job_id))

    def prep_status(self, req, job_id):
        return self._dict_page(req, self.engine.prep_release_status(job_id, req.base),
                               "jobpreparationandreleasetaskstatuslist")

    def list_empty(self, req, *args):
        return _json(200, {"value": []})

    def not_supported(self, req, *args):
        raise err("NotSupportedByEmulator", 400)

    def schedule_not_found(self, req, *args):
        if req.method == "HEAD":
            return _empty(404)
        raise err("JobScheduleNotFound")

    # ------------------------------------------------------------------------------------------- tasks
    def create_task(self, req, job_id):
        body = self.parse_body(req, V.TASK_CREATE)
        t = self.engine.add_task(job_id, body)
        url = f"{req.base}/jobs/{t.job.id}/tasks/{t.id}"
        return _empty(201, {"ETag": t.etag, "Last-Modified": _lm(t.last_modified), "Location": url,
                            "DataServiceId": url})

    def add_collection(self, req, job_id):
        body = self.parse_body(req, V.TASK_GROUP)
        tasks = body.get("value")
        if tasks is None:
            raise V.missing_property("value")
        if len(tasks) > 100:
            raise BatchError(400, "InvalidPropertyValue", "The number of tasks in a collection exceeds the limit of 100.",
                             [{"key": "PropertyName", "value": "value"}, {"key": "PropertyValue", "value": str(len(tasks))},
                              {"key": "Reason", "value": "A task collection can contain at most 100 tasks"}])
        results = self.engine.add_tasks(job_id, tasks, req.base)
        return _json(200, {"odata.metadata": f"{req.base}/$metadata#taskaddresult", "value": results})

    def list_tasks(self, req, job_id):
        eng = self.engine
        pred = compile_filter(req.query.get("$filter"))
        select = parse_select(req.query.get("$select"))
        n = self.max_results(req)
        tok = req.query.get("$skiptoken")
        start = -1
        if tok is not None:
            try:
                start = int(tok)
            except ValueError:
                raise bad_query("$skiptoken", tok)
        base = req.base
        out, more = [], None
        with eng.lock:
            j = eng.get_job(job_id)
            for t in j.tasks.values():
                if t.seq <= start:
                    continue
                if pred is not None and not pred(lambda path, t=t: t.get(path, base)):
                    continue
                if len(out) == n:
                    more = out[-1].seq
                    break
                out.append(t)
            value = [apply_select(t.to_json(base), select) for t in out]
        body = {"odata.metadata": f"{base}/$metadata#tasks", "value": value}
        if more is not None:
            body["odata.nextLink"] = self.next_link(req, more)
        return _json(200, body)

    def get_task(self, req, job_id, task_id):
        with self.engine.lock:
            t = self.engine.get_task(job_id, task_id)
            self.conditions(req, t.etag, t.last_modified)
            d = t.to_json(req.base)
        return _json(200, apply_select(d, parse_select(req.query.get("$select"))),
                     {"ETag": d["eTag"], "Last-Modified": _lm(d["lastModified"])})

    def _task_cond(self, req, job_id, task_id):
        with self.engine.lock:
            t = self.engine.get_task(job_id, task_id)
            self.conditions(req, t.etag, t.last_modified)
            return t

    def _task_headers(self, req, job_id, task_id, status):
        with self.engine.lock:
            j = self.engine.jobs.get(job_id.lower())
            t = j.tasks.get(task_id.lower()) if j else None
            h = {"DataServiceId": f"{req.base}/jobs/{job_id}/tasks/{task_id}"}
            if t is not None:
                h.update({"ETag": t.etag, "Last-Modified": _lm(t.last_modified)})
        return _empty(status, h)

    def update_task(self, req, job_id, task_id):
        body = self.parse_body(req, V.TASK_UPDATE)
        self._task_cond(req, job_id, task_id)
        self.engine.update_task(job_id, task_id, body)
        return self._task_headers(req, job_id, task_id, 200)

    def delete_task(self, req, job_id, task_id):
        self._task_cond(req, job_id, task_id)
        self.engine.delete_task(job_id, task_id)
        return _empty(200)

    def terminate_task(self, req, job_id, task_id):
        self._task_cond(req, job_id, task_id)
        self.engine.terminate_task(job_id, task_id)
        return self._task_headers(req, job_id, task_id, 204)

    def reactivate_task(self, req, job_id, task_id):
        self._task_cond(req, job_id, task_id)
        self.engine.reactivate_task(job_id, task_id)
        return self._task_headers(req, job_id, task_id, 204)

    def subtasks(self, req, job_id, task_id):
        self.engine.get_task(job_id, task_id)
        return _json(200, {"odata.metadata": f"{req.base}/$metadata#subtaskinfo", "value": []})

    # ---- files ----
    def _task_dir(self, job_id, task_id):
        with self.engine.lock:
            t = self.engine.get_task(job_id, task_id)
            return t, self.engine.task_dir(t)

    @staticmethod
    def _resolve(root: str, rel: str) -> str:
        rel = rel.replace("\\", "/").lstrip("/")
        path = os.path.normpath(os.path.join(root, rel))
        if path != root and not path.startswith(root + os.sep):
            raise err("FileNotFound")
        return path

    @staticmethod
    def _props(path: str, st) -> dict:
        return {"creationTime": now_iso(st.st_ctime), "lastModified": now_iso(st.st_mtime),
                "contentLength": st.st_size, "contentType": mimetypes.guess_type(path)[0] or "application/octet-stream",
                "fileMode": oct(stat.S_IMODE(st.st_mode))[2:].rjust(4, "0")[-4:]}

    def list_files(self, req, job_id, task_id):
        t, root = self._task_dir(job_id, task_id)
        recursive = (req.query.get("recursive") or "").lower() == "true"
        items = []
        if root and os.path.isdir(root):
            base_url = f"{req.base}/jobs/{t.job.id}/tasks/{t.id}/files/"
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, root)
                for name in dirnames + sorted(filenames):
                    full = os.path.join(dirpath, name)
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                    try:
                        st = os.stat(full)
                    except OSError:
                        continue
                    isdir = stat.S_ISDIR(st.st_mode)
                    d = {"name": rel, "url": base_url + urllib.parse.quote(rel, safe=""), "isDirectory": isdir}
                    if not isdir:
                        d["properties"] = self._props(full, st)
                    items.append(d)
                if not recursive:
                    break
        return self._dict_page(req, items, "files")

    def _file(self, req, job_id, task_id, rel):
        t, root = self._task_dir(job_id, task_id)
        if not root or not os.path.isdir(root):
            raise err("FileNotFound")
        path = self._resolve(root, rel)
        try:
            st = os.stat(path)
        except OSError:
            raise err("FileNotFound")
        return t, path, st

    def _file_headers(self, req, t, rel, path, st) -> dict:
        isdir = stat.S_ISDIR(st.st_mode)
        return {"ocp-creation-time": http_date(st.st_ctime), "Last-Modified": http_date(st.st_mtime),
                "ocp-batch-file-isdirectory": "true" if isdir else "false",
                "ocp-batch-file-url": f"{req.base}/jobs/{t.job.id}/tasks/{t.id}/files/{urllib.parse.quote(rel, safe='')}",
                "ocp-batch-file-mode": oct(stat.S_IMODE(st.st_mode))[2:].rjust(4, "0")[-4:],
                "Content-Type": "application/octet-stream" if isdir else (mimetypes.guess_type(path)[0] or "application/octet-stream"),
                "ETag": "0x%X" % int(st.st_mtime_ns // 100)}

    def file_props(self, req, job_id, task_id, rel):
        try:
            t, path, st = self._file(req, job_id, task_id, rel)
        except BatchError as e:
            return _empty(e.status)
        h = self._file_headers(req, t, rel, path, st)
        h["Content-Length"] = "0" if stat.S_ISDIR(st.st_mode) else str(st.st_size)
        return Response(200, None, h)

    def get_file(self, req, job_id, task_id, rel):
        t, path, st = self._file(req, job_id, task_id, rel)
        if stat.S_ISDIR(st.st_mode):
            raise err("FileNotFound", 404, "The specified path is a directory.")
        h = self._file_headers(req, t, rel, path, st)
        size = st.st_size
        start, end = 0, size - 1
        rng = req.headers.get("ocp-range") or req.headers.get("range")
        if rng:
            m = re.match(r"^\s*bytes=(\d*)-(\d*)\s*$", rng)
            if not m or (not m.group(1) and not m.group(2)):
                raise BatchError(416, "InvalidRange")
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
            else:
                start = max(0, size - int(m.group(2)))
            end = min(end, size - 1)
            if start > end and size > 0:
                raise BatchError(416, "InvalidRange")
        length = max(0, end - start + 1)
        h["Content-Length"] = str(length)
        return Response(200, None, h, stream=(path, start, length))

    def delete_file(self, req, job_id, task_id, rel):
        t, path, st = self._file(req, job_id, task_id, rel)
        if stat.S_ISDIR(st.st_mode):
            if (req.query.get("recursive") or "").lower() != "true":
                if os.listdir(path):
                    raise err("DirectoryNotEmpty", 409, "The directory is not empty; use recursive=true.")
                os.rmdir(path)
            else:
                import shutil
                shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
        return _empty(200)

    # ------------------------------------------------------------------------------------------- control plane
    def health(self, req):
        return _json(200, {"status": "ok", "version": __version__, "account": self.account,
                           "uptimeSeconds": round(time.time() - self.started, 3), **self.engine.summary()})

    def get_stats(self, req):
        return _json(200, self.stats.snapshot())

    def reset_stats(self, req):
        self.stats.reset()
        return _json(200, self.stats.snapshot())

    def list_faults(self, req):
        with self.engine.lock:
            items = [{"jobId": jk, "taskId": tk, **f} for (jk, tk), f in self.engine.faults.items()]
        return _json(200, {"value": items})

    @staticmethod
    def _control_body(req) -> dict:
        if not req.body:
            return {}
        try:
            body = json.loads(req.body)
        except ValueError as exc:
            raise BatchError(400, "InvalidRequestBody", None, [{"key": "Reason", "value": f"Malformed JSON: {exc}"}])
        if not isinstance(body, dict):
            raise BatchError(400, "InvalidRequestBody", None, [{"key": "Reason", "value": "Expected a JSON object"}])
        return body

    @staticmethod
    def _int(body, name, default):
        v = body.get(name, default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise BatchError(400, "InvalidPropertyValue", None, [{"key": "PropertyName", "value": name}])
        return v

    def fault_preempt(self, req, job_id, task_id):
        body = self._control_body(req)
        res = self.engine.preempt(job_id, task_id, self._int(body, "count", 1))
        return _json(200 if res.get("preempted") else 202, res)

    def fault_fail_next(self, req, job_id, task_id):
        body = self._control_body(req)
        n = self._int(body, "count", 1)
        f = self.engine.set_fault(job_id, task_id, "fail_next", {"count": n} if n else None)
        return _json(200, {"jobId": job_id, "taskId": task_id, "faults": f})

    def fault_slow(self, req, job_id, task_id):
        body = self._control_body(req)
        secs = body.get("seconds", 1)
        if not isinstance(secs, (int, float)) or isinstance(secs, bool) or secs < 0:
            raise BatchError(400, "InvalidPropertyValue", None, [{"key": "PropertyName", "value": "seconds"}])
        n = self._int(body, "count", 1)
        f = self.engine.set_fault(job_id, task_id, "slow", {"seconds": secs, "count": n} if n and secs else None)
        return _json(200, {"jobId": job_id, "taskId": task_id, "faults": f})

    def fault_fail_upload(self, req, job_id, task_id):
        body = self._control_body(req)
        n = self._int(body, "count", 1)
        f = self.engine.set_fault(job_id, task_id, "fail_upload", {"count": n} if n else None)
        return _json(200, {"jobId": job_id, "taskId": task_id, "faults": f})

    def fault_clear(self, req, job_id, task_id):
        for kind in ("fail_next", "slow", "fail_upload", "preempt"):
            self.engine.set_fault(job_id, task_id, kind, None)
        return _json(200, {"jobId": job_id, "taskId": task_id, "faults": {}})


class Request:
    __slots__ = ("method", "path", "raw_path", "query", "raw_query", "headers", "body", "base")


def _read_chunked(rfile, limit):
    data = bytearray()
    while True:
        line = rfile.readline(1024)
        if not line:
            raise ValueError("truncated chunked body")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:
                trailer = rfile.readline(1024)
                if trailer in (b"\r\n", b"\n", b""):
                    break
            return bytes(data), False
        if len(data) + size > limit:
            return None, True
        data += rfile.read(size)
        rfile.readline(4)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"batchemu/{__version__}"
    sys_version = ""
    timeout = 300
    app: App = None  # set by make_server

    def setup(self):
        super().setup()
        try:  # responses are small: don't let Nagle + delayed ACK add 40 ms per request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):  # quiet by default; never log query strings (may carry SAS)
        log.debug("%s %s", self.command, self.path.split("?", 1)[0])

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _handle(self):
        rid = str(uuid.uuid4())
        crid = self.headers.get("client-request-id")
        stat_key = None
        status = 500
        try:
            req = Request()
            req.method = self.command
            raw_path, _, raw_query = self.path.partition("?")
            if raw_path.startswith("http://") or raw_path.startswith("https://"):
                raw_path = "/" + raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else "/"
            req.raw_path, req.raw_query = raw_path, raw_query
            req.path = raw_path.rstrip("/") or "/"
            try:
                q = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
            except ValueError:
                q = {}
            req.query = {k: v[0] for k, v in q.items()}
            req.headers = {k.lower(): v for k, v in self.headers.items()}
            host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            req.base = f"http://{host}"
            req.body = b""
            # body
            body_error = None
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                try:
                    data, too_big = _read_chunked(self.rfile, MAX_BODY)
                except ValueError:
                    self.close_connection = True
                    raise BatchError(400, "InvalidRequestBody", None,
                                     [{"key": "Reason", "value": "Malformed chunked transfer encoding"}])
                if too_big:
                    self.close_connection = True
                    body_error = BatchError(413, "RequestBodyTooLarge")
                else:
                    req.body = data
            else:
                cl = self.headers.get("Content-Length")
                if cl:
                    try:
                        n = int(cl)
                        if n < 0:
                            raise ValueError
                    except ValueError:
                        self.close_connection = True
                        raise BatchError(400, "InvalidHeaderValue", None, [{"key": "HeaderName", "value": "Content-Length"}])
                    if n > MAX_BODY:
                        body_error = BatchError(413, "RequestBodyTooLarge", None,
                                                [{"key": "MaxLimit", "value": str(MAX_BODY)}])
                        if n <= MAX_DRAIN:
                            remaining = n
                            while remaining > 0:
                                chunk = self.rfile.read(min(remaining, 1 << 16))
                                if not chunk:
                                    break
                                remaining -= len(chunk)
                        else:
                            self.close_connection = True
                    elif n:
                        req.body = self.rfile.read(n)
            app = self.app
            if req.path.startswith("/_emulator/"):
                tpl, fn, args = app.control.match(req.method, req.path)
                if body_error:
                    raise body_error
                resp = fn(req, *args)
            else:
                route_error = None
                try:
                    tpl, fn, args = app.router.match(req.method, req.path)
                    stat_key = f"{req.method} {tpl}"
                except BatchError as e:
                    route_error = e
                app.verifier.verify(req.method, raw_path, raw_query, list(self.headers.items()))
                if route_error is not None:
                    raise route_error
                api = req.query.get("api-version")
                if api is None:
                    raise BatchError(400, "MissingRequiredQueryParameter", None,
                                     [{"key": "QueryParameterName", "value": "api-version"}])
                if not API_VERSION_RE.match(api):
                    raise bad_query("api-version", api, "The api-version is not in a supported format",
                                    code="InvalidQueryParameterValue")
                if req.query.get("timeout") is not None:
                    try:
                        int(req.query["timeout"])
                    except ValueError:
                        raise bad_query("timeout", req.query["timeout"])
                if body_error:
                    raise body_error
                resp = fn(req, *args)
        except BatchError as e:
            if e.status == 304:
                resp = _empty(304)
            elif self.command == "HEAD":
                resp = _empty(e.status)
            else:
                resp = _json(e.status, e.body(rid))
        except Exception as exc:  # never let a request kill the server
            log.exception("unhandled error for %s %s", self.command, self.path.split("?", 1)[0])
            resp = _json(500, BatchError(500, "InternalError", f"Internal error in the emulator: {type(exc).__name__}").body(rid))
        status = resp.status
        if stat_key is None and not self.path.startswith("/_emulator/"):
            stat_key = f"{self.command} (unmatched)"
        if stat_key:
            self.app.stats.add(stat_key, status)
        try:
            self._send(resp, rid, crid)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, resp: Response, rid: str, crid: str | None):
        self.send_response(resp.status)
        self.send_header("request-id", rid)
        if crid:
            self.send_header("client-request-id", crid)
        self.send_header("DataServiceVersion", "3.0")
        headers = dict(resp.headers)
        if resp.stream is None:
            body = resp.body or b""
            if self.command == "HEAD":
                headers.setdefault("Content-Length", str(len(body)))
            else:
                headers["Content-Length"] = str(len(body))
        for k, v in headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        if resp.stream is None and resp.body and self.command != "HEAD":
            # one write for headers + body
            self._headers_buffer.append(b"\r\n")
            self._headers_buffer.append(resp.body)
            self.flush_headers()
            return
        self.end_headers()
        if self.command == "HEAD":
            return
        if resp.stream is not None:
            path, start, length = resp.stream
            with open(path, "rb") as f:
                f.seek(start)
                remaining = length
                while remaining > 0:
                    chunk = f.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
                if remaining > 0:  # file shrank: pad so the framing stays valid
                    self.wfile.write(b"\0" * remaining)
        elif resp.body:
            self.wfile.write(resp.body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # connection-level errors: log, keep serving
        log.debug("connection error from %s", client_address, exc_info=True)


def make_server(engine: Engine, host: str, port: int, account: str, key: str) -> Server:
    app = App(engine, account, key)
    handler = type("BoundHandler", (Handler,), {"app": app})
    return Server((host, port), handler)

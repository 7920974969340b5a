"""The Batch REST API as one `App`: the route table, plus request plumbing every handler shares.

Guarantees: bodies are parsed as JSON and validated against the operation's schema before any handler
acts; conditional headers (If-Match, If-None-Match, If-(Un)Modified-Since) answer 412, or 304 for
GET/HEAD; list operations page with ``maxresults`` (1-1000, default 1000) and an opaque ``$skiptoken``
carried in ``odata.nextLink``, after ``$filter`` and before ``$select``. Handlers live in one mixin per
resource (`api_pools`, `api_jobs`, `api_tasks`, `api_files`, `api_control`).
"""
from __future__ import annotations

import json
import time
import urllib.parse

from .api_control import ControlApiMixin
from .api_files import FilesApiMixin
from .api_jobs import JobsApiMixin
from .api_pools import PoolsApiMixin
from .api_tasks import TasksApiMixin
from .auth import SharedKeyVerifier
from .engine import Engine
from .errors import NotModified, bad_header, bad_query, err, invalid_body
from .odata import apply_select, compile_filter, dict_getter, parse_select
from .responses import _empty, _json, _lm
from .routing import Router, Stats
from .util import parse_iso
from . import validation as V

MAX_RESULTS_DEFAULT = 1000


class App(PoolsApiMixin, JobsApiMixin, TasksApiMixin, FilesApiMixin, ControlApiMixin):
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
                raise invalid_body("The request body is empty")
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_body(f"Malformed JSON: {exc}") from exc
        return V.validate(body, schema)

    def checked(self, req, get, resource_id):
        """The resource, after the request's If-Match/If-None-Match/If-(Un)Modified-Since held."""
        with self.engine.lock:
            resource = get(resource_id)
            self.conditions(req, resource.etag, resource.last_modified)
            return resource

    def written(self, req, collection: dict, kind: str, resource_id: str, status: int):
        """The empty answer to a change: DataServiceId, and the new ETag/Last-Modified if it still exists."""
        with self.engine.lock:
            resource = collection.get(resource_id.lower())
            headers = {"DataServiceId": f"{req.base}/{kind}/{resource_id}"}
            if resource is not None:
                headers.update({"ETag": resource.etag, "Last-Modified": _lm(resource.last_modified)})
        return _empty(status, headers)

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
            raise err("ConditionNotMet")
        inm = h.get("if-none-match")
        if inm and (inm.strip() == "*" or etag in tags(inm)):
            if req.method in ("GET", "HEAD"):
                raise NotModified()
            raise err("ConditionNotMet")
        lm = parse_iso(last_modified) if last_modified else None
        for name, modified_test in (("if-modified-since", True), ("if-unmodified-since", False)):
            v = h.get(name)
            if v and lm is not None:
                try:
                    import email.utils
                    since = email.utils.parsedate_to_datetime(v).timestamp()
                except Exception:
                    raise bad_header(name)
                modified = int(lm) > int(since)
                if modified_test and not modified:
                    if req.method in ("GET", "HEAD"):
                        raise NotModified()
                    raise err("ConditionNotMet")
                if not modified_test and modified:
                    raise err("ConditionNotMet")

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

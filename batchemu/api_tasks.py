"""REST handlers for tasks: add (one or a collection of at most 100), list, read, update, terminate,
reactivate, delete.

Guarantees: task lists page by task sequence number, so a page boundary stays stable while tasks are
added; conditional headers are checked before a change is made.
"""
from __future__ import annotations

from .errors import BatchError, bad_query
from .odata import apply_select, compile_filter, parse_select
from .responses import _empty, _json, _lm
from . import validation as V


class TasksApiMixin:
    """Task handlers of `App`."""

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
            raise BatchError("InvalidPropertyValue", "The number of tasks in a collection exceeds the limit of 100.",
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

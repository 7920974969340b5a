"""REST handlers for tasks: add (one or a collection of at most 100), list, read, update, terminate,
reactivate, delete.

Guarantees: tasks are listed in id order, paged by the last id (a page boundary stays put while tasks are
added); conditional headers are handed to the engine, which checks them under its lock against the
version it changes.
"""
from __future__ import annotations

from . import validation as V
from .api_core import AppCore
from .errors import BatchError
from .odata import apply_select, compile_filter, parse_select
from .request import Request
from .responses import Response, _empty, _json

MAX_COLLECTION = 100


class TasksApiMixin(AppCore):
    """Task handlers of `App`."""

    def create_task(self, req: Request, job_id: str) -> Response:
        return self.created(req, self.engine.add_task(job_id, self.parse_body(req, V.TASK_CREATE)))

    def add_collection(self, req: Request, job_id: str) -> Response:
        tasks = self.parse_body(req, V.TASK_GROUP).get("value")
        if tasks is None:
            raise V.missing_property("value")
        if len(tasks) > MAX_COLLECTION:
            raise BatchError("InvalidPropertyValue", "The number of tasks in a collection exceeds the limit of 100.",
                             [{"key": "PropertyName", "value": "value"},
                              {"key": "PropertyValue", "value": str(len(tasks))},
                              {"key": "Reason", "value": "A task collection can contain at most 100 tasks"}])
        results = self.engine.add_tasks(job_id, tasks, req.base)
        return _json(200, {"odata.metadata": f"{req.base}/$metadata#taskaddresult", "value": results})

    def list_tasks(self, req: Request, job_id: str) -> Response:
        pred = compile_filter(req.query.get("$filter"))
        select = parse_select(req.query.get("$select"))
        items, more = self.engine.task_page(job_id, req.query.get("$skiptoken"), pred, self.max_results(req),
                                            req.base)
        return self.page(req, [apply_select(d, select) for d in items], "tasks", more)

    def get_task(self, req: Request, job_id: str, task_id: str) -> Response:
        return self.resource(req, self.engine.read_task(job_id, task_id, req.base, self.conditions(req)))

    def update_task(self, req: Request, job_id: str, task_id: str) -> Response:
        body = self.parse_body(req, V.TASK_UPDATE)
        return self.written(req, self.engine.update_task(job_id, task_id, body, self.conditions(req)), 200)

    def delete_task(self, req: Request, job_id: str, task_id: str) -> Response:
        self.engine.delete_task(job_id, task_id, self.conditions(req))
        return _empty(200)

    def terminate_task(self, req: Request, job_id: str, task_id: str) -> Response:
        stamp = self.engine.terminate_task(job_id, task_id, self.conditions(req))
        return self.written(req, stamp, 204, f"jobs/{job_id}/tasks/{task_id}")

    def reactivate_task(self, req: Request, job_id: str, task_id: str) -> Response:
        return self.written(req, self.engine.reactivate_task(job_id, task_id, self.conditions(req)), 204)

    def subtasks(self, req: Request, job_id: str, task_id: str) -> Response:
        value = self.engine.subtasks(job_id, task_id)
        return _json(200, {"odata.metadata": f"{req.base}/$metadata#subtaskinfo", "value": value})

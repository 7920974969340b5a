"""REST handlers for jobs, task counts, preparation/release status, and the job schedule stubs.

Guarantees: conditional headers are handed to the engine, which checks them under its lock against the
version it changes; responses carry the ETag/Last-Modified of the version written. Job schedules are not
emulated: listing returns nothing, reading answers ``JobScheduleNotFound`` (the changes answer
``NotSupportedByEmulator``, see `api.NOT_EMULATED`).
"""
from __future__ import annotations

from . import validation as V
from .api_core import AppCore
from .errors import err
from .request import Request
from .responses import Response, _empty, _json


class JobsApiMixin(AppCore):
    """Job handlers of `App`."""

    def create_job(self, req: Request) -> Response:
        return self.created(req, self.engine.create_job(self.parse_body(req, V.JOB_CREATE)))

    def list_jobs(self, req: Request) -> Response:
        return self.dict_page(req, self.engine.job_views(req.base), "jobs")

    def get_job(self, req: Request, job_id: str) -> Response:
        return self.resource(req, self.engine.read_job(job_id, req.base, self.conditions(req)))

    def patch_job(self, req: Request, job_id: str) -> Response:
        body = self.parse_body(req, V.JOB_PATCH)
        return self.written(req, self.engine.patch_job(job_id, body, self.conditions(req)), 200)

    def replace_job(self, req: Request, job_id: str) -> Response:
        body = self.parse_body(req, V.JOB_UPDATE)
        return self.written(req, self.engine.replace_job(job_id, body, self.conditions(req)), 200)

    def delete_job(self, req: Request, job_id: str) -> Response:
        self.engine.delete_job(job_id, self.conditions(req))
        return _empty(202)

    def disable_job(self, req: Request, job_id: str) -> Response:
        body = self.parse_body(req, V.JOB_DISABLE)
        return self.written(req, self.engine.disable_job(job_id, body, self.conditions(req)), 202)

    def enable_job(self, req: Request, job_id: str) -> Response:
        return self.written(req, self.engine.enable_job(job_id, self.conditions(req)), 202)

    def terminate_job(self, req: Request, job_id: str) -> Response:
        body = self.parse_body(req, V.JOB_TERMINATE, required=False)
        stamp = self.engine.terminate_job(job_id, body.get("terminateReason"), self.conditions(req))
        return self.written(req, stamp, 202)

    def task_counts(self, req: Request, job_id: str) -> Response:
        return _json(200, self.engine.task_counts(job_id))

    def prep_status(self, req: Request, job_id: str) -> Response:
        return self.dict_page(req, self.engine.prep_release_status(job_id, req.base),
                              "jobpreparationandreleasetaskstatuslist")

    def list_empty(self, req: Request, *args: str) -> Response:
        return _json(200, {"value": []})


    def schedule_not_found(self, req: Request, *args: str) -> Response:
        if req.method == "HEAD":
            return _empty(404)
        raise err("JobScheduleNotFound")

"""REST handlers for jobs, task counts, preparation/release status, and the job schedule stubs.

Guarantees: conditional headers are checked before a job is changed; responses carry the job's current
ETag/Last-Modified. Job schedules are not emulated: listing returns nothing, creating answers
``NotSupportedByEmulator``, reading answers ``JobScheduleNotFound``.
"""
from __future__ import annotations

from .errors import err
from .odata import apply_select, parse_select
from .responses import _empty, _json, _lm
from . import validation as V


class JobsApiMixin:
    """Job handlers of `App`."""

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

    def patch_job(self, req, job_id):
        body = self.parse_body(req, V.JOB_PATCH)
        self.checked(req, self.engine.get_job, job_id)
        self.engine.patch_job(job_id, body)
        return self.written(req, self.engine.jobs, "jobs", job_id, 200)

    def replace_job(self, req, job_id):
        body = self.parse_body(req, V.JOB_UPDATE)
        self.checked(req, self.engine.get_job, job_id)
        self.engine.replace_job(job_id, body)
        return self.written(req, self.engine.jobs, "jobs", job_id, 200)

    def delete_job(self, req, job_id):
        self.checked(req, self.engine.get_job, job_id)
        self.engine.delete_job(job_id)
        return _empty(202)

    def disable_job(self, req, job_id):
        body = self.parse_body(req, V.JOB_DISABLE)
        self.checked(req, self.engine.get_job, job_id)
        self.engine.disable_job(job_id, body)
        return self.written(req, self.engine.jobs, "jobs", job_id, 202)

    def enable_job(self, req, job_id):
        self.checked(req, self.engine.get_job, job_id)
        self.engine.enable_job(job_id)
        return self.written(req, self.engine.jobs, "jobs", job_id, 202)

    def terminate_job(self, req, job_id):
        body = self.parse_body(req, V.JOB_TERMINATE, required=False)
        self.checked(req, self.engine.get_job, job_id)
        self.engine.terminate_job(job_id, body.get("terminateReason"))
        return self.written(req, self.engine.jobs, "jobs", job_id, 202)

    def task_counts(self, req, job_id):
        return _json(200, self.engine.task_counts(job_id))

    def prep_status(self, req, job_id):
        return self._dict_page(req, self.engine.prep_release_status(job_id, req.base),
                               "jobpreparationandreleasetaskstatuslist")

    def list_empty(self, req, *args):
        return _json(200, {"value": []})

    def not_supported(self, req, *args):
        raise err("NotSupportedByEmulator")

    def schedule_not_found(self, req, *args):
        if req.method == "HEAD":
            return _empty(404)
        raise err("JobScheduleNotFound")

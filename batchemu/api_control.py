"""The emulator's own control plane under ``/_emulator/`` (no authentication): health, request stats, faults.

Guarantees: control requests are never counted in the stats; fault bodies are optional JSON objects whose
``count`` must be an integer (a count of 0 clears a fail-next, slow or fail-upload fault).
"""
from __future__ import annotations

import json
import time

from . import __version__
from .errors import bad_property, invalid_body
from .responses import _json


class ControlApiMixin:
    """Control-plane handlers of `App`."""

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
            raise invalid_body(f"Malformed JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise invalid_body("Expected a JSON object")
        return body

    @staticmethod
    def _int(body, name, default):
        v = body.get(name, default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise bad_property(name, v)
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
            raise bad_property("seconds", secs)
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

"""The emulator's own control plane under ``/_emulator/`` (no authentication): health, request and transfer
stats, faults, account quotas, spot capacity.

Guarantees: control requests are never counted in the stats; fault bodies are optional JSON objects whose
``count`` must be an integer (a count of 0 clears a fail-next, slow or fail-upload fault); a storage
outage needs ``seconds``, a number from 0 (ends it) to ``MAX_OUTAGE_SECONDS``; a quota body is a JSON object
of ``QUOTA_NAMES``, each a non-negative integer or null (unlimited): PUT replaces all quotas (the ones not
given become unlimited), POST changes only the ones given; an invalid body changes nothing.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from . import __version__
from .api_core import AppCore
from .errors import bad_property, invalid_body
from .model import Json
from .quotas import Quotas
from .request import Request
from .responses import Response, _json
from .spot import MAX_RECOVERY_SECONDS

FAULT_KINDS = ("fail_next", "slow", "fail_upload", "preempt")
MAX_OUTAGE_SECONDS = 3600  # an outage is a blip for tests, not a way to wedge the emulator
QUOTA_NAMES = tuple(name for _, name in Quotas.NAMES)


class ControlApiMixin(AppCore):
    """Control-plane handlers of `App`."""

    def health(self, req: Request) -> Response:
        return _json(200, {"status": "ok", "version": __version__, "account": self.account, "pid": os.getpid(),
                           "uptimeSeconds": round(time.time() - self.started, 3), **self.engine.summary()})

    def _stats(self) -> Json:
        return {**self.stats.snapshot(), "transfers": self.engine.transfer_stats()}

    def get_stats(self, req: Request) -> Response:
        return _json(200, self._stats())

    def reset_stats(self, req: Request) -> Response:
        self.stats.reset()
        self.engine.reset_transfer_stats()
        return _json(200, self._stats())

    def list_faults(self, req: Request) -> Response:
        return _json(200, {"value": self.engine.list_faults()})

    @staticmethod
    def _control_body(req: Request) -> Json:
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
    def _int(body: Json, name: str, default: int) -> int:
        v = body.get(name, default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise bad_property(name, v)
        return v

    def _faults_answer(self, job_id: str, task_id: str, faults: Any) -> Response:
        return _json(200, {"jobId": job_id, "taskId": task_id, "faults": faults})

    def fault_preempt(self, req: Request, job_id: str, task_id: str) -> Response:
        body = self._control_body(req)
        res = self.engine.preempt(job_id, task_id, self._int(body, "count", 1))
        return _json(200 if res.get("preempted") else 202, res)

    def fault_fail_next(self, req: Request, job_id: str, task_id: str) -> Response:
        n = self._int(self._control_body(req), "count", 1)
        f = self.engine.set_fault(job_id, task_id, "fail_next", {"count": n} if n else None)
        return self._faults_answer(job_id, task_id, f)

    def fault_slow(self, req: Request, job_id: str, task_id: str) -> Response:
        body = self._control_body(req)
        secs = body.get("seconds", 1)
        if not isinstance(secs, (int, float)) or isinstance(secs, bool) or secs < 0:
            raise bad_property("seconds", secs)
        n = self._int(body, "count", 1)
        f = self.engine.set_fault(job_id, task_id, "slow", {"seconds": secs, "count": n} if n and secs else None)
        return self._faults_answer(job_id, task_id, f)

    def fault_fail_upload(self, req: Request, job_id: str, task_id: str) -> Response:
        n = self._int(self._control_body(req), "count", 1)
        f = self.engine.set_fault(job_id, task_id, "fail_upload", {"count": n} if n else None)
        return self._faults_answer(job_id, task_id, f)

    def start_storage_outage(self, req: Request) -> Response:
        secs = self._control_body(req).get("seconds")
        if not isinstance(secs, (int, float)) or isinstance(secs, bool) or not 0 <= secs <= MAX_OUTAGE_SECONDS:
            raise bad_property("seconds", secs, f"a number of seconds from 0 to {MAX_OUTAGE_SECONDS}")
        return _json(200, self.engine.storage_outage(secs))

    def end_storage_outage(self, req: Request) -> Response:
        return _json(200, self.engine.storage_outage(None))

    def get_storage_outage(self, req: Request) -> Response:
        return _json(200, self.engine.storage_outage_status())

    def fault_clear(self, req: Request, job_id: str, task_id: str) -> Response:
        for kind in FAULT_KINDS:
            self.engine.set_fault(job_id, task_id, kind, None)
        return self._faults_answer(job_id, task_id, {})

    def get_spot_capacity(self, req: Request) -> Response:
        return _json(200, self.engine.spot_status())

    def set_spot_capacity(self, req: Request) -> Response:
        body = self._control_body(req)
        available = body.get("available")
        if not isinstance(available, bool):
            raise bad_property("available", available, "true (spot nodes are allocated) or false (they never come)")
        secs = body.get("recoverySeconds")
        if secs is not None and (not isinstance(secs, (int, float)) or isinstance(secs, bool)
                                 or not 0 <= secs <= MAX_RECOVERY_SECONDS):
            raise bad_property("recoverySeconds", secs, f"a number of seconds from 0 to {MAX_RECOVERY_SECONDS:g}")
        return _json(200, self.engine.set_spot_capacity(available, None if secs is None else float(secs)))

    def get_quotas(self, req: Request) -> Response:
        return _json(200, self.engine.quota_status())

    def _quota_body(self, req: Request) -> Json:
        body = self._control_body(req)
        for name, v in body.items():
            if name not in QUOTA_NAMES:
                raise invalid_body(f"Could not find member '{name}' on object of type 'Quotas'")
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise bad_property(name, v, "a non-negative integer, or null for no limit")
        return body

    def replace_quotas(self, req: Request) -> Response:
        return _json(200, self.engine.set_quotas(self._quota_body(req), replace_all=True))

    def update_quotas(self, req: Request) -> Response:
        return _json(200, self.engine.set_quotas(self._quota_body(req)))

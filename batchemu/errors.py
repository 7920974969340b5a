"""Batch-service-shaped errors: ``{"code", "message": {"lang", "value"}, "values": [{"key", "value"}]}``."""
from __future__ import annotations

import datetime
import uuid

_MESSAGES = {
    "AuthenticationFailed": "Server failed to authenticate the request. Make sure the value of Authorization header "
    "is formed correctly including the signature.",
    "MissingRequiredQueryParameter": "A query parameter that's mandatory for this request is not specified.",
    "InvalidQueryParameterValue": "Value for one of the query parameters specified in the request URI is invalid.",
    "UnsupportedQueryParameter": "One of the query parameters specified in the request URI is not supported.",
    "InvalidRequestBody": "The specified Request Body is not syntactically valid.",
    "MissingRequiredProperty": "A required property was not specified in the request body.",
    "InvalidPropertyValue": "The value provided for one of the properties in the request body is invalid.",
    "UnsupportedProperty": "One of the properties specified in the request body is not supported.",
    "RequestBodyTooLarge": "The request body is too large and exceeds the maximum permissible limit.",
    "InvalidUri": "The requested URI does not represent any resource on the server.",
    "UnsupportedHttpVerb": "The resource doesn't support the specified HTTP verb.",
    "InvalidHeaderValue": "The value for one of the HTTP headers is not in the correct format.",
    "InvalidRange": "The range specified is invalid for the current size of the resource.",
    "ConditionNotMet": "The condition specified using HTTP conditional header(s) is not met.",
    "PoolNotFound": "The specified pool does not exist.",
    "JobNotFound": "The specified job does not exist.",
    "TaskNotFound": "The specified task does not exist.",
    "FileNotFound": "The specified file does not exist.",
    "NodeNotFound": "The specified node does not exist.",
    "JobScheduleNotFound": "The specified job schedule does not exist.",
    "PoolExists": "The specified pool already exists.",
    "JobExists": "The specified job already exists.",
    "TaskExists": "The specified task already exists.",
    "PoolBeingDeleted": "The specified pool has been marked for deletion and is being reclaimed.",
    "JobBeingDeleted": "The specified job has been marked for deletion and is being garbage collected.",
    "JobBeingTerminated": "The specified job is being terminated.",
    "JobCompleted": "The specified job is already in a completed state.",
    "JobNotActive": "The specified job is not in active state.",
    "JobDisabled": "The specified job is disabled.",
    "TaskCompleted": "The specified task is already in a completed state.",
    "TaskNotCompleted": "The specified task is not in a completed state.",
    "TaskSucceeded": "The specified task has already completed successfully.",
    "OperationInvalidForCurrentState": "The specified operation is not valid for the current state of the resource.",
    "AutoScalingFormulaSyntaxError": "The specified auto-scaling formula has a syntax error.",
    "InvalidAutoScalingSettings": "The specified auto-scaling settings are not valid.",
    "TaskDependenciesNotSpecifiedOnJob": "A task was specified as depending on other tasks, but the job did not "
    "specify that it would use task dependencies.",
    "JobPreparationTaskNotSpecified": "The specified job does not have a job preparation task.",
    "NotSupportedByEmulator": "This operation is not supported by the local Batch emulator (batchemu).",
    "InternalError": "The server encountered an internal error. Please retry the request.",
}

STATUS = {
    "AuthenticationFailed": 403,
    "RequestBodyTooLarge": 413,
    "InvalidRange": 416,
    "UnsupportedHttpVerb": 405,
    "ConditionNotMet": 412,
    "InternalError": 500,
}


class BatchError(Exception):
    """An error answered to the client in the Batch error format."""

    def __init__(self, status: int, code: str, message: str | None = None, values: list | dict | None = None,
                 headers: dict | None = None):
        self.status = status
        self.code = code
        self.message = message or _MESSAGES.get(code, code)
        if isinstance(values, dict):
            values = [{"key": k, "value": str(v)} for k, v in values.items()]
        self.values = values or []
        self.headers = headers or {}
        super().__init__(f"{status} {code}: {self.message}")

    def body(self, request_id: str | None = None) -> dict:
        rid = request_id or str(uuid.uuid4())
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
        out = {
            "code": self.code,
            "message": {"lang": "en-US", "value": f"{self.message}\nRequestId:{rid}\nTime:{now}"},
        }
        if self.values:
            out["values"] = self.values
        return out


def err(code: str, status: int | None = None, message: str | None = None, **values) -> BatchError:
    if status is None:
        status = STATUS.get(code)
        if status is None:
            if code.endswith("NotFound"):
                status = 404
            elif code.endswith("Exists") or code.startswith(("JobBeing", "PoolBeing", "Task", "Job")):
                status = 409
            else:
                status = 400
    return BatchError(status, code, message, values or None)


def bad_property(name: str, value=None, reason: str | None = None, code: str = "InvalidPropertyValue") -> BatchError:
    vals = [{"key": "PropertyName", "value": name}]
    if value is not None:
        vals.append({"key": "PropertyValue", "value": str(value)[:512]})
    if reason:
        vals.append({"key": "Reason", "value": reason})
    return BatchError(400, code, None, vals)


def missing_property(name: str) -> BatchError:
    return BatchError(400, "MissingRequiredProperty", None, [{"key": "PropertyName", "value": name}])


def bad_query(name: str, value=None, reason: str | None = None, code: str = "InvalidQueryParameterValue") -> BatchError:
    vals = [{"key": "QueryParameterName", "value": name}]
    if value is not None:
        vals.append({"key": "QueryParameterValue", "value": str(value)[:512]})
    if reason:
        vals.append({"key": "Reason", "value": reason})
    return BatchError(400, code, None, vals)

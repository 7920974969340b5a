"""Batch-service-shaped errors: ``{"code", "message": {"lang", "value"}, "values": [{"key", "value"}]}``.

Guarantees: every error code the emulator answers with is a row of ``ERRORS``, which fixes its HTTP status
and default message (as moto has one exception class per error and Azurite one factory method per code);
a status is never inferred from a code's name, and an unknown code is a programming error (``KeyError``
when the error is built). ``NotModified`` is not an error: it answers a conditional GET/HEAD with 304.
"""
from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    status: int
    message: str


ERRORS: dict[str, ErrorCode] = {
    # 400 Bad Request
    "MissingRequiredQueryParameter": ErrorCode(400, "A query parameter that's mandatory for this request is not "
                                                   "specified."),
    "InvalidQueryParameterValue": ErrorCode(400, "Value for one of the query parameters specified in the request URI "
                                                 "is invalid."),
    "OutOfRangeQueryParameterValue": ErrorCode(400, "A query parameter specified in the request URI is outside the "
                                                    "permissible range."),
    "InvalidRequestBody": ErrorCode(400, "The specified Request Body is not syntactically valid."),
    "MissingRequiredProperty": ErrorCode(400, "A required property was not specified in the request body."),
    "InvalidPropertyValue": ErrorCode(400, "The value provided for one of the properties in the request body is "
                                           "invalid."),
    "InvalidHeaderValue": ErrorCode(400, "The value for one of the HTTP headers is not in the correct format."),
    "AutoScalingFormulaSyntaxError": ErrorCode(400, "The specified auto-scaling formula has a syntax error."),
    "TaskDependenciesNotSpecifiedOnJob": ErrorCode(400, "A task was specified as depending on other tasks, but the job "
                                                        "did not specify that it would use task dependencies."),
    "NotSupportedByEmulator": ErrorCode(400, "This operation is not supported by the local Batch emulator "
                                             "(batchemu)."),
    # 403 Forbidden
    "AuthenticationFailed": ErrorCode(403, "Server failed to authenticate the request. Make sure the value of "
                                           "Authorization header is formed correctly including the signature."),
    # 404 Not Found
    "InvalidUri": ErrorCode(404, "The requested URI does not represent any resource on the server."),
    "PoolNotFound": ErrorCode(404, "The specified pool does not exist."),
    "JobNotFound": ErrorCode(404, "The specified job does not exist."),
    "TaskNotFound": ErrorCode(404, "The specified task does not exist."),
    "FileNotFound": ErrorCode(404, "The specified file does not exist."),
    "NodeNotFound": ErrorCode(404, "The specified node does not exist."),
    "JobScheduleNotFound": ErrorCode(404, "The specified job schedule does not exist."),
    # 405 Method Not Allowed
    "UnsupportedHttpVerb": ErrorCode(405, "The resource doesn't support the specified HTTP verb."),
    # 409 Conflict
    "PoolExists": ErrorCode(409, "The specified pool already exists."),
    "JobExists": ErrorCode(409, "The specified job already exists."),
    "TaskExists": ErrorCode(409, "The specified task already exists."),
    "PoolBeingDeleted": ErrorCode(409, "The specified pool has been marked for deletion and is being reclaimed."),
    "JobBeingDeleted": ErrorCode(409, "The specified job has been marked for deletion and is being garbage "
                                      "collected."),
    "JobBeingTerminated": ErrorCode(409, "The specified job is being terminated."),
    "JobCompleted": ErrorCode(409, "The specified job is already in a completed state."),
    "JobNotActive": ErrorCode(409, "The specified job is not in active state."),
    "JobNotDisabled": ErrorCode(409, "The specified job is not in disabled state."),
    "JobPreparationTaskNotSpecified": ErrorCode(409, "The specified job does not have a job preparation task."),
    "TaskCompleted": ErrorCode(409, "The specified task is already in a completed state."),
    "TaskNotCompleted": ErrorCode(409, "The specified task is not in a completed state."),
    "TaskSucceeded": ErrorCode(409, "The specified task has already completed successfully."),
    "OperationInvalidForCurrentState": ErrorCode(409, "The specified operation is not valid for the current state of "
                                                      "the resource."),
    "InvalidAutoScalingSettings": ErrorCode(409, "The specified auto-scaling settings are not valid."),
    "DirectoryNotEmpty": ErrorCode(409, "The specified directory is not empty."),
    # account quotas (status and message: "Batch Status and Error Codes", Batch service error codes)
    "ActiveJobAndScheduleQuotaReached": ErrorCode(409, "Active job and schedule quota for the account has been "
                                                       "reached."),
    "PoolQuotaReached": ErrorCode(409, "Pool quota for the account has been reached."),
    # 412 Precondition Failed
    "ConditionNotMet": ErrorCode(412, "The condition specified using HTTP conditional header(s) is not met."),
    # 413 Request Entity Too Large
    "RequestBodyTooLarge": ErrorCode(413, "The request body is too large and exceeds the maximum permissible limit."),
    # 416 Range Not Satisfiable
    "InvalidRange": ErrorCode(416, "The range specified is invalid for the current size of the resource."),
    # 500 Internal Server Error
    "InternalError": ErrorCode(500, "The server encountered an internal error. Please retry the request."),
}

Values = list[dict[str, str]]


class BatchError(Exception):
    """An error answered to the client in the Batch error format, with the status ``ERRORS`` gives its code."""

    def __init__(self, code: str, message: str | None = None, values: Values | dict[str, object] | None = None):
        spec = ERRORS[code]
        self.status = spec.status
        self.code = code
        self.message = message or spec.message
        if isinstance(values, dict):
            values = [{"key": k, "value": str(v)} for k, v in values.items()]
        self.values: Values = values or []
        super().__init__(f"{self.status} {code}: {self.message}")

    def body(self, request_id: str | None = None) -> dict[str, object]:
        rid = request_id or str(uuid.uuid4())
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
        out: dict[str, object] = {
            "code": self.code,
            "message": {"lang": "en-US", "value": f"{self.message}\nRequestId:{rid}\nTime:{now}"},
        }
        if self.values:
            out["values"] = self.values
        return out


class NotModified(Exception):
    """A conditional GET/HEAD whose If-None-Match / If-Modified-Since says the client's copy is current (304)."""


def err(code: str, message: str | None = None, **values: object) -> BatchError:
    return BatchError(code, message, values or None)


def _named(key: str, name: str, value: object = None, reason: str | None = None) -> Values:
    vals = [{"key": f"{key}Name", "value": name}]
    if value is not None:
        vals.append({"key": f"{key}Value", "value": str(value)[:512]})
    if reason:
        vals.append({"key": "Reason", "value": reason})
    return vals


def bad_property(name: str, value: object = None, reason: str | None = None) -> BatchError:
    return BatchError("InvalidPropertyValue", None, _named("Property", name, value, reason))


def missing_property(name: str) -> BatchError:
    return BatchError("MissingRequiredProperty", None, _named("Property", name))


def bad_query(name: str, value: object = None, reason: str | None = None,
              code: str = "InvalidQueryParameterValue") -> BatchError:
    return BatchError(code, None, _named("QueryParameter", name, value, reason))


def invalid_body(reason: str) -> BatchError:
    return BatchError("InvalidRequestBody", None, [{"key": "Reason", "value": reason}])


def bad_header(name: str) -> BatchError:
    return BatchError("InvalidHeaderValue", None, [{"key": "HeaderName", "value": name}])

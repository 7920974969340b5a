"""Request body validation: unknown members, JSON types, required properties, ids.

Like the service (which deserialises strictly), a member the API does not define is rejected with
400 InvalidRequestBody ("Could not find member 'x' on object of type 'Y'"). A few legacy members sent by
older api-versions are tolerated (and ignored).
"""
from __future__ import annotations

import re
from typing import Any

from .errors import BatchError, bad_property, invalid_body, missing_property
from .util import check_id, parse_duration

S, INT, B, N, ANY = "string", "int", "bool", "number", "any"

# a JSON type name (S, INT, ...), ("list", item schema) or (TypeName, {member: schema})
Schema = str | tuple[str, Any]


def L(item: Schema) -> Schema:
    return ("list", item)


ENV = ("EnvironmentSetting", {"name": S, "value": S})
NAME_VALUE = ("MetadataItem", {"name": S, "value": S})
RESOURCE_FILE = ("ResourceFile", {
    "autoStorageContainerName": S, "storageContainerUrl": S, "httpUrl": S, "blobPrefix": S, "filePath": S,
    "fileMode": S, "identityReference": ANY})
OUTPUT_FILE = ("OutputFile", {
    "filePattern": S,
    "destination": ("OutputFileDestination", {"container": ("OutputFileBlobContainerDestination", {
        "path": S, "containerUrl": S, "identityReference": ANY,
        "uploadHeaders": L(("HttpHeader", {"name": S, "value": S}))})}),
    "uploadOptions": ("OutputFileUploadOptions", {"uploadCondition": S})})
CONTAINER_SETTINGS = ("TaskContainerSettings", {
    "containerRunOptions": S, "imageName": S, "registry": ANY, "workingDirectory": S,
    "containerHostBatchBindMounts": L(ANY)})
TASK_CONSTRAINTS = ("TaskConstraints", {"maxWallClockTime": S, "retentionTime": S, "maxTaskRetryCount": INT})
JOB_CONSTRAINTS = ("JobConstraints", {"maxWallClockTime": S, "maxTaskRetryCount": INT})
DEPENDS = ("TaskDependencies", {"taskIds": L(S), "taskIdRanges": L(("TaskIdRange", {"start": INT, "end": INT}))})
USER_IDENTITY = ("UserIdentity", {"username": S, "userName": S,
                                  "autoUser": ("AutoUserSpecification", {"scope": S, "elevationLevel": S})})
EXIT_OPTIONS = ("ExitOptions", {"jobAction": S, "dependencyAction": S})
EXIT_CONDITIONS = ("ExitConditions", {
    "exitCodes": L(("ExitCodeMapping", {"code": INT, "exitOptions": EXIT_OPTIONS})),
    "exitCodeRanges": L(("ExitCodeRangeMapping", {"start": INT, "end": INT, "exitOptions": EXIT_OPTIONS})),
    "preProcessingError": EXIT_OPTIONS, "fileUploadError": EXIT_OPTIONS, "default": EXIT_OPTIONS})

TASK_FIELDS = {
    "id": S, "displayName": S, "exitConditions": EXIT_CONDITIONS, "commandLine": S,
    "containerSettings": CONTAINER_SETTINGS, "resourceFiles": L(RESOURCE_FILE), "outputFiles": L(OUTPUT_FILE),
    "environmentSettings": L(ENV), "affinityInfo": ("AffinityInformation", {"affinityId": S}),
    "constraints": TASK_CONSTRAINTS, "requiredSlots": INT, "userIdentity": USER_IDENTITY,
    "multiInstanceSettings": ANY, "dependsOn": DEPENDS, "applicationPackageReferences": L(ANY),
    "authenticationTokenSettings": ANY,  # legacy (removed in 2024+ api-versions)
}
TASK_CREATE = ("TaskAddParameter", TASK_FIELDS)
TASK_GROUP = ("TaskAddCollectionParameter", {"value": L(TASK_CREATE)})
TASK_UPDATE = ("TaskUpdateParameter", {"constraints": TASK_CONSTRAINTS, **{k: ANY for k in (
    "id", "displayName", "url", "eTag", "lastModified", "creationTime", "exitConditions", "state",
    "stateTransitionTime", "previousState", "previousStateTransitionTime", "commandLine", "containerSettings",
    "resourceFiles", "outputFiles", "environmentSettings", "affinityInfo", "requiredSlots", "userIdentity",
    "executionInfo", "nodeInfo", "multiInstanceSettings", "stats", "dependsOn", "applicationPackageReferences",
    "emulatorContainerMode")}})

PREP_TASK = ("JobPreparationTask", {
    "id": S, "commandLine": S, "containerSettings": CONTAINER_SETTINGS, "resourceFiles": L(RESOURCE_FILE),
    "environmentSettings": L(ENV), "constraints": TASK_CONSTRAINTS, "waitForSuccess": B,
    "userIdentity": USER_IDENTITY, "rerunOnNodeRebootAfterSuccess": B})
RELEASE_TASK = ("JobReleaseTask", {
    "id": S, "commandLine": S, "containerSettings": CONTAINER_SETTINGS, "resourceFiles": L(RESOURCE_FILE),
    "environmentSettings": L(ENV), "maxWallClockTime": S, "retentionTime": S, "userIdentity": USER_IDENTITY})
JOB_MANAGER = ("JobManagerTask", {
    "id": S, "displayName": S, "commandLine": S, "containerSettings": CONTAINER_SETTINGS,
    "resourceFiles": L(RESOURCE_FILE), "outputFiles": L(OUTPUT_FILE), "environmentSettings": L(ENV),
    "constraints": TASK_CONSTRAINTS, "requiredSlots": INT, "killJobOnCompletion": B, "userIdentity": USER_IDENTITY,
    "runExclusive": B, "applicationPackageReferences": L(ANY), "allowLowPriorityNode": B,
    "authenticationTokenSettings": ANY})
START_TASK = ("StartTask", {
    "commandLine": S, "containerSettings": CONTAINER_SETTINGS, "resourceFiles": L(RESOURCE_FILE),
    "environmentSettings": L(ENV), "userIdentity": USER_IDENTITY, "maxTaskRetryCount": INT, "waitForSuccess": B})

_POOL_COMMON = {
    "displayName": S, "vmSize": S, "virtualMachineConfiguration": ANY, "resizeTimeout": S,
    "targetDedicatedNodes": INT, "targetLowPriorityNodes": INT, "enableAutoScale": B, "autoScaleFormula": S,
    "autoScaleEvaluationInterval": S, "enableInterNodeCommunication": B, "networkConfiguration": ANY,
    "startTask": START_TASK, "applicationPackageReferences": L(ANY), "taskSlotsPerNode": INT,
    "taskSchedulingPolicy": ("TaskSchedulingPolicy", {"nodeFillType": S, "jobDefaultOrder": S}),
    "userAccounts": L(ANY), "metadata": L(NAME_VALUE), "mountConfiguration": L(ANY), "upgradePolicy": ANY,
    # legacy members of older api-versions: accepted and stored
    "cloudServiceConfiguration": ANY, "certificateReferences": L(ANY), "applicationLicenses": L(ANY),
    "targetNodeCommunicationMode": S, "resourceTags": ANY, "identity": ANY,
}
POOL_CREATE = ("PoolAddParameter", {"id": S, **_POOL_COMMON})
POOL_SPEC = ("PoolSpecification", dict(_POOL_COMMON))
POOL_INFO = ("PoolInformation", {"poolId": S, "autoPoolSpecification": ("AutoPoolSpecification", {
    "autoPoolIdPrefix": S, "poolLifetimeOption": S, "keepAlive": B, "pool": POOL_SPEC})})

JOB_CREATE = ("JobAddParameter", {
    "id": S, "displayName": S, "usesTaskDependencies": B, "priority": INT, "allowTaskPreemption": B,
    "maxParallelTasks": INT, "constraints": JOB_CONSTRAINTS, "jobManagerTask": JOB_MANAGER,
    "jobPreparationTask": PREP_TASK, "jobReleaseTask": RELEASE_TASK, "commonEnvironmentSettings": L(ENV),
    "poolInfo": POOL_INFO, "onAllTasksComplete": S, "onTaskFailure": S, "networkConfiguration": ANY,
    "metadata": L(NAME_VALUE)})
JOB_PATCH = ("JobPatchParameter", {
    "priority": INT, "allowTaskPreemption": B, "maxParallelTasks": INT, "constraints": JOB_CONSTRAINTS,
    "poolInfo": POOL_INFO, "onAllTasksComplete": S, "metadata": L(NAME_VALUE), "networkConfiguration": ANY,
    "onTaskFailure": S})
_JOB_READONLY = {k: ANY for k in ("id", "displayName", "usesTaskDependencies", "url", "eTag", "lastModified",
                                  "creationTime", "state", "stateTransitionTime", "previousState",
                                  "previousStateTransitionTime", "jobManagerTask", "jobPreparationTask",
                                  "jobReleaseTask", "commonEnvironmentSettings", "executionInfo", "stats",
                                  "onTaskFailure")}
JOB_UPDATE = ("JobUpdateParameter", {**JOB_PATCH[1], **_JOB_READONLY})
POOL_PATCH = ("PoolPatchParameter", {k: v for k, v in _POOL_COMMON.items()})
POOL_REPLACE = ("PoolUpdatePropertiesParameter", {
    "startTask": START_TASK, "applicationPackageReferences": L(ANY), "metadata": L(NAME_VALUE),
    "certificateReferences": L(ANY), "targetNodeCommunicationMode": S})
POOL_RESIZE = ("PoolResizeParameter", {"targetDedicatedNodes": INT, "targetLowPriorityNodes": INT, "resizeTimeout": S,
                                       "nodeDeallocationOption": S})
POOL_ENABLE_AS = ("PoolEnableAutoScaleParameter", {"autoScaleFormula": S, "autoScaleEvaluationInterval": S})
POOL_EVAL_AS = ("PoolEvaluateAutoScaleParameter", {"autoScaleFormula": S})
JOB_DISABLE = ("JobDisableParameter", {"disableTasks": S})
JOB_TERMINATE = ("JobTerminateParameter", {"terminateReason": S})


# .NET's int.TryParse with NumberStyles.Integer (Json.NET's default for a string read as an int): optional
# white space around an optional sign and ASCII digits; nothing else (no decimal point, no exponent, no '_')
_NET_INT = re.compile(r"^[\t\n\v\f\r ]*[+-]?[0-9]+[\t\n\v\f\r ]*$")
_NET_WS = "\t\n\v\f\r \x00"
_INT32 = (-(2 ** 31), 2 ** 31 - 1)


def _token(value) -> str:
    """The first character Json.NET would have met, for its "Unexpected character" messages."""
    if isinstance(value, dict):
        return "{"
    if isinstance(value, list):
        return "["
    if isinstance(value, bool):
        return "t" if value else "f"
    return "\""


def _to_int(value, path: str) -> int | None:
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise _invalid_body(f"Unexpected character encountered while parsing value: {_token(value)}. Path '{path}'.")
    if isinstance(value, str):
        if value == "":
            return None  # Json.NET reads an empty string as null
        if not _NET_INT.match(value):
            raise _invalid_body(f"Could not convert string to integer: {value[:100]}. Path '{path}'.")
        n = int(value.strip(_NET_WS))
    elif isinstance(value, float):
        raise _invalid_body(f"Input string '{value!r}' is not a valid integer. Path '{path}'.")
    else:
        n = value
    if not _INT32[0] <= n <= _INT32[1]:
        raise _invalid_body(f"JSON integer {n} is too large or small for an Int32. Path '{path}'.")
    return n


def _to_bool(value, path: str) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0  # Convert.ToBoolean: any non-zero number is true
    if isinstance(value, str):
        if value == "":
            return None
        word = value.strip(_NET_WS).lower()  # bool.TryParse: "True"/"False", any case, trimmed
        if word in ("true", "false"):
            return word == "true"
        raise _invalid_body(f"Could not convert string to boolean: {value[:100]}. Path '{path}'.")
    raise _invalid_body(f"Unexpected character encountered while parsing value: {_token(value)}. Path '{path}'.")


def _to_str(value, path: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"  # Json.NET reads the literal's text
    if isinstance(value, (int, float)):
        return str(value)
    raise _invalid_body(f"Unexpected character encountered while parsing value: {_token(value)}. Path '{path}'.")


def _to_number(value, path: str) -> float | int | None:
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise _invalid_body(f"Unexpected character encountered while parsing value: {_token(value)}. Path '{path}'.")
    if isinstance(value, str):
        if value == "":
            return None
        try:
            return float(value.strip(_NET_WS))
        except ValueError as exc:
            raise _invalid_body(f"Could not convert string to double: {value[:100]}. Path '{path}'.") from exc
    return value


_SCALARS = {S: _to_str, INT: _to_int, B: _to_bool, N: _to_number}


def _invalid_body(reason: str) -> BatchError:
    return invalid_body(reason)


def validate(body, schema, path: str = "") -> dict:
    """Deserialise ``body`` as the service's Json.NET does against ``schema`` (a (TypeName, {member: type})
    pair): unknown members are rejected; scalars are converted where Json.NET converts them (``"1"`` to an
    int, ``"true"``/``"False"`` to a bool, a number or boolean to its text for a string, an empty string to
    null) and rejected with its messages where it does not (``"abc"`` for an int). Returns the converted
    body."""
    if body is None:
        raise _invalid_body("The request body is null.")
    return _check(body, schema, path)


def _check(value, schema, path):
    if value is None:
        return None
    if isinstance(schema, str):
        convert = _SCALARS.get(schema)
        return value if convert is None else convert(value, path)
    if schema[0] == "list":
        if not isinstance(value, list):
            raise _invalid_body(f"Expected an array at path '{path}'.")
        return [_check(item, schema[1], f"{path}[{i}]") for i, item in enumerate(value)]
    type_name, members = schema
    if not isinstance(value, dict):
        raise _invalid_body(f"Expected an object of type '{type_name}' at path '{path or '$'}'.")
    out = {}
    for key, item in value.items():
        if key.startswith("odata."):
            continue
        sub = members.get(key)
        where = f"{path}.{key}" if path else key
        if sub is None:
            raise _invalid_body(f"Could not find member '{key}' on object of type '{type_name}'. Path '{where}'.")
        converted = _check(item, sub, where)
        if converted is not None or item is None:
            out[key] = converted
    return out


# ---- semantic checks shared by create paths ---------------------------------------------------------

def check_env(settings, prop: str):
    for i, e in enumerate(settings or []):
        if not e.get("name"):
            raise missing_property(f"{prop}[{i}].name")


def check_resource_files(files, prop: str = "resourceFiles"):
    for i, rf in enumerate(files or []):
        sources = [k for k in ("httpUrl", "storageContainerUrl", "autoStorageContainerName") if rf.get(k)]
        if len(sources) != 1:
            raise bad_property(f"{prop}[{i}]", None, "Exactly one of httpUrl, storageContainerUrl or "
                                                     "autoStorageContainerName must be specified")
        if rf.get("httpUrl") and not rf.get("filePath"):
            raise missing_property(f"{prop}[{i}].filePath")
        fp = rf.get("filePath") or ""
        if fp.startswith("/") or ".." in fp.replace("\\", "/").split("/"):
            raise bad_property(f"{prop}[{i}].filePath", fp, "filePath must be relative and may not break out of "
                                                           "the working directory")
        if rf.get("fileMode"):
            try:
                int(rf["fileMode"], 8)
            except ValueError as exc:
                raise bad_property(f"{prop}[{i}].fileMode", rf["fileMode"], "fileMode must be an octal string") from exc


def check_output_files(files, prop: str = "outputFiles"):
    for i, of in enumerate(files or []):
        if not of.get("filePattern"):
            raise missing_property(f"{prop}[{i}].filePattern")
        cont = ((of.get("destination") or {}).get("container") or {})
        if not cont.get("containerUrl"):
            raise missing_property(f"{prop}[{i}].destination.container.containerUrl")
        cond = ((of.get("uploadOptions") or {}).get("uploadCondition") or "")
        if not cond:
            raise missing_property(f"{prop}[{i}].uploadOptions.uploadCondition")
        if cond.lower() not in ("tasksuccess", "taskfailure", "taskcompletion"):
            raise bad_property(f"{prop}[{i}].uploadOptions.uploadCondition", cond)


def check_task_constraints(c, prop: str = "constraints"):
    if not c:
        return
    for k in ("maxWallClockTime", "retentionTime"):
        if c.get(k) is not None:
            parse_duration(c[k], f"{prop}.{k}")
    r = c.get("maxTaskRetryCount")
    if r is not None and r < -1:
        raise bad_property(f"{prop}.maxTaskRetryCount", r)


def check_task(body: dict, job, prop_prefix: str = "") -> None:
    """Semantic checks of a task-create body (after schema validation)."""
    check_id(body.get("id"), prop_prefix + "id")
    if not body.get("commandLine"):
        raise missing_property(prop_prefix + "commandLine")
    check_env(body.get("environmentSettings"), prop_prefix + "environmentSettings")
    check_resource_files(body.get("resourceFiles"), prop_prefix + "resourceFiles")
    check_output_files(body.get("outputFiles"), prop_prefix + "outputFiles")
    check_task_constraints(body.get("constraints"), prop_prefix + "constraints")
    rs = body.get("requiredSlots")
    if rs is not None and rs < 1:
        raise bad_property(prop_prefix + "requiredSlots", rs)
    cs = body.get("containerSettings")
    if cs is not None and not cs.get("imageName"):
        raise missing_property(prop_prefix + "containerSettings.imageName")
    dep = body.get("dependsOn")
    if dep:
        if job is not None and not job.spec.get("usesTaskDependencies"):
            raise BatchError("TaskDependenciesNotSpecifiedOnJob")
        for tid in dep.get("taskIds") or []:
            check_id(tid, prop_prefix + "dependsOn.taskIds")
        for r in dep.get("taskIdRanges") or []:
            if r.get("start") is None or r.get("end") is None or r["start"] > r["end"] or r["start"] < 0:
                raise bad_property(prop_prefix + "dependsOn.taskIdRanges", r)

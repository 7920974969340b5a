"""Azure Batch: job, pool and task construction; submission; counts; cleanup.

Construction is pure (plain data in, SDK models out); the functions that call the service
translate its errors into domain errors, and treat "already exists" / "already gone" as success
so that every step can be repeated safely.
"""
from __future__ import annotations

import logging
import math
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from azure.batch import BatchClient
from azure.batch import models as bm
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError

from shared.errors import BatchError, BatchQuotaError
from shared.settings import PoolDefaults, Settings
from shared.storage import scrub

log = logging.getLogger(__name__)

QUOTA_CODES = {"ActiveJobAndScheduleQuotaReached", "PoolQuotaReached", "AccountCoreQuotaReached",
               "AccountLowPriorityCoreQuotaReached", "AccountVMSeriesCoreQuotaReached"}
MAX_TASKS_PER_CALL = 100
API_VERSION = "2025-06-01"  # the version azure-batch 15.x speaks


def batch_client(settings: Settings) -> BatchClient:
    """Shared key when BATCH_ACCOUNT_KEY is set (the emulator, key-based accounts), else the app's one
    identity (shared.identity: the same as Storage, Event Grid and Key Vault use)."""
    access = settings.batch
    if access.account_key is not None:  # Settings refuses a key without an account name
        from azure.core.credentials import AzureNamedKeyCredential

        key = AzureNamedKeyCredential(access.account_name or "", access.account_key.reveal())
        return BatchClient(endpoint=access.account_url, credential=key)
    from shared.identity import credential

    return BatchClient(endpoint=access.account_url, credential=credential(settings))


def translate(error: HttpResponseError, what: str) -> BatchError:
    """SDK error -> domain error. The message names the operation and the service's code (its first
    line only: the rest is request ids), never a URL. Server-side and throttling errors are marked
    transient: the caller lets the trigger retry instead of failing the run."""
    code = getattr(getattr(error, "error", None), "code", None)
    message = getattr(getattr(error, "error", None), "message", None) or error.reason or "request failed"
    message = scrub(str(message).strip().splitlines()[0] if str(message).strip() else "request failed")
    if code in QUOTA_CODES:
        return BatchQuotaError(f"{what}: Azure Batch quota reached ({code}); raise the quota or wait for other "
                               f"jobs to finish", code=code)
    status = error.status_code or 0
    transient = status >= 500 or status in (408, 429) or code in ("ServerBusy", "OperationTimedOut")
    return BatchError(f"{what}: {message}", code=code, transient=transient)


def _first_line(message: Mapping[str, Any] | None) -> str:
    """The first line of a Batch error message (a {lang, value} object, not a string), scrubbed."""
    text = str((message or {}).get("value") or "")
    return scrub(text.strip().splitlines()[0]) if text.strip() else "refused"


def error_code(error: HttpResponseError) -> str | None:
    return getattr(getattr(error, "error", None), "code", None)


# ----------------------------------------------------------------------------- construction


@dataclass(frozen=True)
class TaskSpec:
    """One task as the pipeline plans it; turned into its REST body by `task_body`."""

    task_id: str
    index: int
    input_url: str  # read-only SAS URL of this task's input blob (a secret: never logged)
    input_file: str  # file name in the working directory, e.g. input.jsonl


@dataclass(frozen=True)
class JobPlan:
    """Everything about the Batch job that does not vary per task."""

    job_id: str
    run_id: str
    command: str
    image: str | None
    output_file: str  # e.g. output.jsonl
    output_container_url: str  # write-only SAS URL (a secret)
    task_count: int
    retries: int
    task_timeout: timedelta
    job_timeout: timedelta
    config_url: str | None  # read-only SAS URL of config.json
    resource_urls: tuple[tuple[str, str, bool], ...]  # (url, file name, unzip)
    pool_id: str | None  # an existing pool; None: auto pool
    owner: str  # which deployment made the job (its results container URL), for the orphan sweep
    vm_size: str
    max_nodes: int
    spot: bool
    slots_per_node: int
    registry: bm.ContainerRegistryReference | None = None
    fallback: SpotFallback | None = None  # a spot pool that may add dedicated nodes (autoscale_formula)
    gpus: int = 0  # GPUs per node of vm_size (shared.gpus): a GPU image, GPU access in containers, TASK_GPUS


@dataclass(frozen=True)
class SpotFallback:
    """When a spot pool adds dedicated nodes: spot nodes missing `wait` after `since` (the pool's
    creation), or `preempted` of its spot nodes seen preempted at once."""

    since: datetime
    wait: timedelta
    preempted: int


def task_wrapper(plan: JobPlan, input_file: str) -> str:
    """The command line every task runs: set the app contract's variables, run the user's command
    and exit with its exit status; after a 0, record OUTPUT_DIR in the output manifest first
    (shared/manifest.py).

    Batch runs command lines without a shell, so the wrapper is `/bin/sh -c`; the user's command
    travels in an environment variable to avoid a second layer of quoting.
    """
    from shared.manifest import wrapper_tail
    from shared.naming import MANIFEST_FILE

    lines = [
        'wd="$AZ_BATCH_TASK_WORKING_DIR"',
        f'export INPUT_PATH="$wd/{input_file}" OUTPUT_DIR="$wd/output"',
        f'export OUTPUT_PATH="$OUTPUT_DIR/{plan.output_file}"',
    ]
    if plan.config_url:
        lines.append('export CONFIG_PATH="$wd/config.json"')
    if plan.resource_urls:
        lines.append('export RESOURCES_DIR="$AZ_BATCH_JOB_PREP_WORKING_DIR"')
    # a retry starts from an empty output directory, so a failed try leaves nothing behind
    lines += ['[ ! -e "$OUTPUT_DIR" ] && [ ! -L "$OUTPUT_DIR" ] || rm -rf "$OUTPUT_DIR"', 'mkdir -p "$OUTPUT_DIR"',
              *wrapper_tail(MANIFEST_FILE)]
    return "/bin/sh -c " + shlex.quote("; ".join(lines))


GPU_RUN_OPTIONS = "--gpus all"  # every GPU of the node to the task's container (docs/jobfile.md, GPU pools)


def container_run_options(gpus: int) -> str:
    return f"--rm {GPU_RUN_OPTIONS}" if gpus else "--rm"


def _container_settings(image: str | None, run_options: str,
                        registry: bm.ContainerRegistryReference | None) -> dict[str, Any] | None:
    if not image:
        return None
    settings: dict[str, Any] = {"imageName": image, "containerRunOptions": run_options,
                                "workingDirectory": "taskWorkingDirectory"}
    if registry is not None:
        settings["registry"] = registry.as_dict()
    return settings


def _upload(container_url: str, pattern: str, path: str, condition: str) -> dict[str, Any]:
    """An outputFiles entry: what matches `pattern` goes to `path` in the container, on `condition`."""
    return {"filePattern": pattern, "uploadOptions": {"uploadCondition": condition},
            "destination": {"container": {"containerUrl": container_url, "path": path}}}


def iso_duration(span: timedelta) -> str:
    """An ISO 8601 duration as the REST API takes it, e.g. PT3600S."""
    return f"PT{span.total_seconds():g}S"


def task_body(plan: JobPlan, task: TaskSpec) -> dict[str, Any]:
    """One task as the REST API adds it (camelCase JSON, Batch's BatchTaskCreateContent). Plain JSON,
    not the SDK's models: building those costs about 1 ms a task, a tenth of a 100,000-task run's
    intake; `add_tasks` sends the bodies through the SDK's own client."""
    from shared.naming import MANIFEST_FILE, task_manifest

    resource_files = [{"httpUrl": task.input_url, "filePath": task.input_file}]
    if plan.config_url:
        resource_files.append({"httpUrl": plan.config_url, "filePath": "config.json"})
    body: dict[str, Any] = {
        "id": task.task_id,
        "commandLine": task_wrapper(plan, task.input_file),
        "resourceFiles": resource_files,
        "environmentSettings": [{"name": "TASK_INDEX", "value": str(task.index)}],
        "outputFiles": [
            _upload(plan.output_container_url, "output/**/*", f"tasks/{task.task_id}", "taskSuccess"),
            _upload(plan.output_container_url, "../std*.txt", f"logs/{task.task_id}", "taskFailure"),
            # no wildcard: `path` is the blob's whole name
            _upload(plan.output_container_url, MANIFEST_FILE, task_manifest(task.task_id), "taskSuccess"),
        ],
        "constraints": {"maxWallClockTime": iso_duration(plan.task_timeout), "maxTaskRetryCount": plan.retries},
    }
    container = _container_settings(plan.image, container_run_options(plan.gpus), plan.registry)
    if container is not None:
        body["containerSettings"] = container
    return body


def autoscale_formula(max_nodes: int, slots_per_node: int, spot: bool, task_count: int,
                      fallback: SpotFallback | None = None) -> str:
    """Nodes follow pending tasks, capped at max_nodes; nodes leave only when their tasks finish.

    The first evaluation happens when the pool is created, before any sample exists; it sizes
    from the known task count instead of waiting five minutes for the next evaluation.

    With `fallback` (spot pools only), dedicated nodes stand in for the spot nodes that are not
    there: once spot nodes are missing `fallback.wait` after the pool was made, or `fallback.preempted`
    spot nodes were seen preempted at once in the last five minutes, the pool keeps the spot nodes it
    has (those not preempted, never more) and asks dedicated nodes for the rest. A formula has no
    memory but the targets it set: a dedicated target above zero is what keeps the pool in that mode
    at the next evaluations (docs/jobfile.md, "Spot with fallback").
    """
    head = [
        "$sampled = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 5) > 0;",
        f"$pending = $sampled ? max(0, $PendingTasks.GetSample(1)) : {task_count};",
    ]
    if spot and fallback is not None:
        since = fallback.since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        minutes = f"{fallback.wait.total_seconds() / 60:g}"
        return "\n".join([
            *head,
            f"$wanted = min({max_nodes}, ($pending + {slots_per_node} - 1) / {slots_per_node});",
            "$preemptedSampled = $PreemptedNodeCount.GetSamplePercent(TimeInterval_Minute * 5) > 0;",
            "$preemptedNow = $preemptedSampled ? max(0, $PreemptedNodeCount.GetSample(1)) : 0;",
            "$preemptedPeak = $preemptedSampled ? max($PreemptedNodeCount.GetSample(TimeInterval_Minute * 5)) : 0;",
            # $CurrentLowPriorityNodes counts preempted nodes too
            "$spotUp = max(0, $CurrentLowPriorityNodes - $preemptedNow);",
            f'$waited = time() - time("{since}") > {minutes} * TimeInterval_Minute;',
            f"$fallback = $TargetDedicatedNodes > 0 || $preemptedPeak >= {fallback.preempted}"
            " || ($waited && $spotUp < $wanted);",
            "$TargetLowPriorityNodes = $fallback ? min($wanted, $spotUp) : $wanted;",
            "$TargetDedicatedNodes = $fallback ? $wanted - $TargetLowPriorityNodes : 0;",
            "$NodeDeallocationOption = taskcompletion;",
        ])
    target = "$TargetLowPriorityNodes" if spot else "$TargetDedicatedNodes"
    other = "$TargetDedicatedNodes" if spot else "$TargetLowPriorityNodes"
    return "\n".join([
        *head,
        f"$wanted = ($pending + {slots_per_node} - 1) / {slots_per_node};",
        f"{target} = min({max_nodes}, $wanted);",
        f"{other} = 0;",
        "$NodeDeallocationOption = taskcompletion;",
    ])


def pool_image(gpus: int, defaults: PoolDefaults) -> tuple[bm.BatchVmImageReference, str]:
    """The node image and node agent SKU: GPU sizes get the GPU image (drivers, container toolkit)."""
    if gpus:
        return (bm.BatchVmImageReference(publisher=defaults.gpu_image_publisher, offer=defaults.gpu_image_offer,
                                         sku=defaults.gpu_image_sku, version="latest"),
                defaults.gpu_node_agent_sku_id)
    return (bm.BatchVmImageReference(publisher=defaults.image_publisher, offer=defaults.image_offer,
                                     sku=defaults.image_sku, version="latest"),
            defaults.node_agent_sku_id)


def _pool_spec(plan: JobPlan, defaults: PoolDefaults) -> bm.BatchPoolSpecification:
    container = None
    if plan.image:
        container = bm.BatchContainerConfiguration(
            type="dockerCompatible", container_image_names=[plan.image],
            container_registries=[plan.registry] if plan.registry else None,
        )
    image, agent = pool_image(plan.gpus, defaults)
    return bm.BatchPoolSpecification(
        vm_size=plan.vm_size,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=image, node_agent_sku_id=agent, container_configuration=container,
        ),
        task_slots_per_node=plan.slots_per_node,
        enable_auto_scale=True,
        auto_scale_formula=autoscale_formula(plan.max_nodes, plan.slots_per_node, plan.spot, plan.task_count,
                                             plan.fallback),
        auto_scale_evaluation_interval=timedelta(minutes=5),
        metadata=[bm.BatchMetadataItem(name="batchdrop-run", value=plan.run_id)],
    )


def job_model(plan: JobPlan, defaults: PoolDefaults) -> bm.BatchJobCreateOptions:
    """Created with onAllTasksComplete=noaction: a job with no tasks yet would otherwise complete at once."""
    if plan.pool_id:
        pool_info = bm.BatchPoolInfo(pool_id=plan.pool_id)
    else:
        pool_info = bm.BatchPoolInfo(auto_pool_specification=bm.BatchAutoPoolSpecification(
            auto_pool_id_prefix="bd", pool_lifetime_option="job", keep_alive=False,
            pool=_pool_spec(plan, defaults)))
    prep = None
    if plan.resource_urls:
        unzip = [name for _, name, z in plan.resource_urls if z]
        script = "set -e; " + "".join(
            f"if command -v unzip >/dev/null 2>&1; then unzip -oq {shlex.quote(n)}; "
            f"else python3 -m zipfile -e {shlex.quote(n)} .; fi; "
            # defence in depth (intake refuses such zips): both drop '../' and leading '/', but unzip makes links
            'if [ -n "$(find . -type l)" ]; then '
            'echo "batchdrop: a resource zip holds a symbolic link" >&2; exit 1; fi; '
            for n in unzip) + "true"
        prep = bm.BatchJobPreparationTask(
            command_line="/bin/sh -c " + shlex.quote(script),
            resource_files=[bm.ResourceFile(http_url=url, file_path=name) for url, name, _ in plan.resource_urls],
            wait_for_success=True,
        )
    return bm.BatchJobCreateOptions(
        id=plan.job_id,
        pool_info=pool_info,
        all_tasks_complete_mode="noaction",
        constraints=bm.BatchJobConstraints(max_wall_clock_time=plan.job_timeout),
        job_preparation_task=prep,
        # the same for every task, so said once here rather than in each task (add-task bodies stay small)
        common_environment_settings=[bm.EnvironmentSetting(name="TASK_COUNT", value=str(plan.task_count)),
                                     bm.EnvironmentSetting(name="TASK_GPUS", value=str(plan.gpus)),
                                     bm.EnvironmentSetting(name="BATCHDROP_COMMAND", value=plan.command)],
        metadata=[bm.BatchMetadataItem(name="batchdrop-run", value=plan.run_id),
                  bm.BatchMetadataItem(name="batchdrop-owner", value=plan.owner)],
    )


def job_timeout(task_count: int, capacity: int, retries: int, task_timeout: timedelta) -> timedelta:
    """Upper bound of a run's life: waves of tasks times tries, plus an hour; at most 7 days
    (the longest a user delegation SAS can live)."""
    waves = math.ceil(task_count / max(1, capacity))
    bound = task_timeout * waves * (retries + 1) + timedelta(hours=1)
    return min(bound, timedelta(days=7))


# ----------------------------------------------------------------------------- service calls


_T = TypeVar("_T")
# About 30 s in all: enough for a restart or a network blip; an outage is left to the trigger's retries.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def reconnecting(call: Callable[[], _T], delays: Sequence[float] = RECONNECT_DELAYS) -> _T:
    """Run a service call, trying again while Batch cannot be reached at all (connection refused
    or reset). azure-core does not retry a POST after a connection error, and a blob trigger's own
    retries come back to back, so one short outage would otherwise poison an intake. Only for calls
    that are idempotent by design (an existing job or task counts as created)."""
    for delay in delays:
        try:
            return call()
        except (ServiceRequestError, ServiceResponseError) as e:
            log.warning("Batch unreachable (%s); trying again in %.1f s", type(e).__name__, delay)
            time.sleep(delay)
    return call()


def create_job(client: BatchClient, job: bm.BatchJobCreateOptions) -> bool:
    """Idempotent: returns False when the job already existed (a repeated delivery or a retry)."""
    try:
        reconnecting(lambda: client.create_job(job))
        return True
    except HttpResponseError as e:
        if error_code(e) == "JobExists":
            return False
        raise translate(e, f"creating job {job.id}") from None


def add_tasks(client: BatchClient, job_id: str, tasks: Sequence[Mapping[str, Any]], _tries: int = 3) -> None:
    """Add up to 100 tasks (`task_body`) in one call. Idempotent: tasks that already exist count as
    added. A body over the service's 1 MB limit is split in half and sent again; tasks the service
    could not add for a server-side reason are sent again (a few times)."""
    from urllib.parse import quote

    from azure.core.rest import HttpRequest

    request = HttpRequest("POST", f"/jobs/{quote(job_id, safe='')}/addtaskcollection",
                          params={"api-version": API_VERSION}, json={"value": list(tasks)},
                          headers={"content-type": "application/json; odata=minimalmetadata"})
    try:
        response = reconnecting(lambda: client.send_request(request))
        response.raise_for_status()
    except HttpResponseError as e:
        if error_code(e) == "RequestBodyTooLarge" and len(tasks) > 1:
            half = len(tasks) // 2
            add_tasks(client, job_id, tasks[:half])
            add_tasks(client, job_id, tasks[half:])
            return
        raise translate(e, f"adding tasks to job {job_id}") from None
    results = response.json().get("value") or []
    retry = {r.get("taskId") for r in results if r.get("status") == "serverError"}
    failed = [r for r in results
              if r.get("status") == "clientError" and (r.get("error") or {}).get("code") != "TaskExists"]
    if failed:
        first = failed[0]
        error = first.get("error") or {}
        message = _first_line(error.get("message"))
        raise BatchError(f"adding tasks to job {job_id}: {len(failed)} task(s) refused, e.g. {first.get('taskId')}: "
                         f"{message}", code=error.get("code"))
    if retry:
        if _tries <= 1:
            raise BatchError(f"adding tasks to job {job_id}: the service kept failing {len(retry)} task(s)",
                             code="ServerError", transient=True)
        add_tasks(client, job_id, [t for t in tasks if t["id"] in retry], _tries - 1)


def seal_job(client: BatchClient, job_id: str) -> None:
    """All tasks are in: let the job terminate itself when they complete (cannot be undone)."""
    try:
        sealed = bm.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob")
        reconnecting(lambda: client.update_job(job_id, sealed))
    except HttpResponseError as e:
        raise translate(e, f"sealing job {job_id}") from None


def get_job(client: BatchClient, job_id: str) -> bm.BatchJob | None:
    try:
        return client.get_job(job_id)
    except ResourceNotFoundError:
        return None
    except HttpResponseError as e:
        if error_code(e) == "JobNotFound":
            return None
        raise translate(e, f"reading job {job_id}") from None


def get_pool(client: BatchClient, pool_id: str) -> bm.BatchPool | None:
    """None when there is no such pool."""
    try:
        return client.get_pool(pool_id)
    except ResourceNotFoundError:
        return None
    except HttpResponseError as e:
        if error_code(e) == "PoolNotFound" or e.status_code == 404:
            return None
        raise translate(e, f"reading pool {pool_id}") from None


def task_counts(client: BatchClient, job_id: str) -> bm.BatchTaskCounts | None:
    """One call; None when the job is gone (deleted by someone else: the run is cancelled)."""
    try:
        return client.get_job_task_counts(job_id).task_counts
    except HttpResponseError as e:
        if error_code(e) == "JobNotFound" or e.status_code == 404:
            return None
        raise translate(e, f"counting tasks of job {job_id}") from None


def list_tasks(client: BatchClient, job_id: str, filter: str | None = None,
               select: Iterable[str] | None = None) -> list[bm.BatchTask]:
    try:
        return list(client.list_tasks(job_id, filter=filter, select=list(select) if select else None))
    except HttpResponseError as e:
        raise translate(e, f"listing tasks of job {job_id}") from None


def delete_job(client: BatchClient, job_id: str) -> bool:
    """Idempotent; deleting a job with an auto pool deletes the pool too. Returns False when it
    was already gone. Does not wait for the deletion to finish (the SDK's begin_delete_job would
    keep a thread polling each job until it is gone)."""
    from urllib.parse import quote

    from azure.core.rest import HttpRequest

    request = HttpRequest("DELETE", f"/jobs/{quote(job_id, safe='')}", params={"api-version": API_VERSION})
    try:
        client.send_request(request).raise_for_status()  # the SDK's policy raises Batch errors itself
        return True
    except HttpResponseError as e:
        if error_code(e) in ("JobNotFound", "JobBeingDeleted") or e.status_code == 404:
            return False
        raise translate(e, f"deleting job {job_id}") from None


MERGE_TASK_ID = "merge"


@dataclass(frozen=True)
class MergeTaskPlan:
    """The user's own recombiner: one task that sees every task output under $OUTPUTS_DIR."""

    command: str
    image: str | None
    output_file: str
    outputs_url: str  # read+list SAS URL of the run's output container (a secret)
    output_container_url: str  # write-only SAS URL (a secret)
    timeout: timedelta
    registry: bm.ContainerRegistryReference | None = None


def merge_task_body(plan: MergeTaskPlan) -> dict[str, Any]:
    """The merge task's REST body (like `task_body`). Task outputs arrive as $OUTPUTS_DIR/<task id>/...,
    task ids sort in task order. Like a task, it exits with the command's exit status, and records
    its OUTPUT_DIR after a 0."""
    from shared.manifest import wrapper_tail
    from shared.naming import MANIFEST_FILE, task_manifest

    script = "; ".join([
        'wd="$AZ_BATCH_TASK_WORKING_DIR"',
        'export OUTPUTS_DIR="$wd/outputs/tasks" OUTPUT_DIR="$wd/output"',
        f'export OUTPUT_PATH="$OUTPUT_DIR/{plan.output_file}"',
        'rm -rf "$OUTPUT_DIR"', 'mkdir -p "$OUTPUT_DIR" "$OUTPUTS_DIR"',
        *wrapper_tail(MANIFEST_FILE),
    ])
    body: dict[str, Any] = {
        "id": MERGE_TASK_ID,
        "commandLine": "/bin/sh -c " + shlex.quote(script),
        "resourceFiles": [{"storageContainerUrl": plan.outputs_url, "blobPrefix": "tasks/", "filePath": "outputs"}],
        "environmentSettings": [{"name": "BATCHDROP_COMMAND", "value": plan.command}],
        "outputFiles": [
            _upload(plan.output_container_url, "output/**/*", "merged", "taskSuccess"),
            _upload(plan.output_container_url, "../std*.txt", f"logs/{MERGE_TASK_ID}", "taskFailure"),
            _upload(plan.output_container_url, MANIFEST_FILE, task_manifest(MERGE_TASK_ID), "taskSuccess"),
        ],
        "constraints": {"maxWallClockTime": iso_duration(plan.timeout), "maxTaskRetryCount": 0},
    }
    container = _container_settings(plan.image, "--rm", plan.registry)
    if container is not None:
        body["containerSettings"] = container
    return body


def get_task(client: BatchClient, job_id: str, task_id: str) -> bm.BatchTask | None:
    try:
        return client.get_task(job_id, task_id)
    except HttpResponseError as e:
        if error_code(e) in ("TaskNotFound", "JobNotFound") or e.status_code == 404:
            return None
        raise translate(e, f"reading task {task_id} of job {job_id}") from None


# ----------------------------------------------------------------------------- the pipeline steps' other Batch calls
# Every Batch call of accept, watch, finalize, sweep and cleanup goes through this module.


def registry_reference(server: str, username: str, password: str) -> bm.ContainerRegistryReference:
    return bm.ContainerRegistryReference(registry_server=server, username=username, password=password)


AUTO_POOL_QUOTA_CODES = frozenset({"AutoPoolCreationFailedWithQuotaReached"})


def auto_pool_quota_refusal(client: BatchClient, job_id: str) -> str | None:
    """Why Batch completed the job at once for lack of quota for its auto pool (the job is accepted,
    then ends with a scheduling error, and adding tasks answers JobCompleted); None otherwise."""
    job = get_job(client, job_id)
    if job is None or job.state not in ("completed", "terminating"):
        return None
    error = getattr(job.execution_info, "scheduling_error", None) if job.execution_info else None
    code = getattr(error, "code", None)
    if code not in AUTO_POOL_QUOTA_CODES and code not in QUOTA_CODES:
        return None
    return f"the job's auto pool: Azure Batch quota reached ({code}); the run waits for other jobs to finish"


def job_end_reason(client: BatchClient, job_id: str) -> str | None:
    """Why the job ended (its time limit, a terminate by hand, a scheduling error), when it has
    ended or is ending; None while it is active, and when it is gone."""
    job = get_job(client, job_id)
    if job is None or job.state not in ("completed", "terminating"):
        return None
    info = job.execution_info
    reason = getattr(info, "termination_reason", None) if info else None
    error = getattr(info, "scheduling_error", None) if info else None
    why = f"the Batch job ended ({reason or job.state}) before all its tasks ran"
    if error is not None:
        why += f": {scrub(str(getattr(error, 'message', '') or getattr(error, 'code', '')))}"
    return why


TaskJson = Mapping[str, Any]  # a task as the REST API returns it (camelCase); the SDK's task models are such mappings


def task_pages(client: BatchClient, job_id: str, select: Sequence[str],
               filter: str | None = None) -> Iterator[TaskJson]:
    """The job's tasks as plain JSON, a page (up to 1,000) at a time. Not the SDK's list_tasks: building
    and reading its models costs about 1.5 ms a task (minutes for a run of 100,000 tasks); the same
    request read as JSON costs microseconds. The SDK's pipeline still signs, retries and raises."""
    from urllib.parse import quote

    from azure.core.rest import HttpRequest

    params = {"api-version": API_VERSION, "$select": ",".join(select), "maxresults": "1000"}
    if filter:
        params["$filter"] = filter
    request = HttpRequest("GET", f"/jobs/{quote(job_id, safe='')}/tasks", params=params)
    while True:
        try:
            response = client.send_request(request)
            response.raise_for_status()
        except HttpResponseError as e:
            raise translate(e, f"listing tasks of job {job_id}") from None
        page = response.json()
        yield from page.get("value") or ()
        next_link = page.get("odata.nextLink")
        if not next_link:
            return
        request = HttpRequest("GET", next_link)


def finished_tasks(client: BatchClient, job_id: str) -> Iterator[TaskJson]:
    """The run's tasks (not the merge task) with their state and execution info, page by page: a
    run of 100,000 tasks is never held all at once."""
    return (t for t in task_pages(client, job_id, ("id", "state", "executionInfo", "nodeInfo"))
            if t["id"] != MERGE_TASK_ID)


def all_tasks_completed(client: BatchClient, job_id: str) -> bool:
    """One filtered list: task counts may lag the tasks."""
    return not list_tasks(client, job_id, filter="state ne 'completed'", select=["id"])


def container_execution(client: BatchClient, job_id: str, task_id: str) -> str | None:
    """How a container task actually ran, where the service says (the local emulator does).
    Best effort: None whenever it cannot tell."""
    try:
        task = client.get_task(job_id, task_id)
        return task.get("emulatorContainerMode")
    except Exception:  # informational only; never a reason to fail a finalize
        return None


@dataclass(frozen=True)
class TaggedJob:
    """A job as the orphan sweep sees it: the run and deployment its metadata names."""

    job_id: str
    run_id: str | None
    owner: str | None
    created: datetime | None


def list_tagged_jobs(client: BatchClient) -> list[TaggedJob]:
    """Every job of the account with the run and owner tags `job_model` writes."""
    try:
        jobs = list(client.list_jobs(select=["id", "creationTime", "metadata"]))
    except HttpResponseError as e:
        raise translate(e, "listing jobs") from None
    tagged = []
    for job in jobs:
        meta = {m.name: m.value for m in (job.metadata or [])}
        tagged.append(TaggedJob(job.id, meta.get("batchdrop-run"), meta.get("batchdrop-owner"), job.creation_time))
    return tagged


# ----------------------------------------------------------------------------- infrastructure retries (shared.retries)


def failed_tasks(client: BatchClient, job_id: str) -> list[TaskJson]:
    """The job's completed tasks that failed (not the merge task), with their failure info."""
    return [t for t in task_pages(client, job_id, ("id", "state", "executionInfo"),
                                  filter="executionInfo/result eq 'failure'") if t["id"] != MERGE_TASK_ID]


def reactivate_task(client: BatchClient, job_id: str, task_id: str) -> bool:
    """Make a failed task run again (Batch resets its retry count). False when Batch refuses
    for good (the job ended, the task is gone or not failed): the task's failure then stands."""
    try:
        reconnecting(lambda: client.reactivate_task(job_id, task_id))
        return True
    except HttpResponseError as e:
        error = translate(e, f"reactivating task {task_id} of job {job_id}")
        if error.transient:
            raise error from None
        log.warning("task not reactivated run_id=%s task_id=%s code=%s", job_id, task_id, error.code)
        return False


def rerun_task(client: BatchClient, job_id: str, task_id: str, new_id: str) -> bool:
    """Run a task again under `new_id`: the same command, inputs, outputs (the same blob paths, so
    the rerun's outputs replace the lost ones) and limits. Batch cannot reactivate a task that
    succeeded. Idempotent (an existing `new_id` counts as added); False when the job refuses new
    tasks (it ended) or the task is gone."""
    original = get_task(client, job_id, task_id)
    if original is None:
        return False
    copied = ("commandLine", "containerSettings", "resourceFiles", "environmentSettings", "outputFiles", "constraints",
              "userIdentity", "requiredSlots")
    listed = original.as_dict()  # plain JSON (REST names), as task_body's
    copy = {"id": new_id, **{k: listed[k] for k in copied if listed.get(k) is not None}}
    try:
        add_tasks(client, job_id, [copy])
        return True
    except BatchError as e:
        if e.transient:
            raise
        log.warning("task not rerun run_id=%s task_id=%s code=%s", job_id, task_id, e.code)
        return False


# ----------------------------------------------------------------------------- node time (report usage and cost)


def pool_node_counts(client: BatchClient) -> dict[str, tuple[int, int]]:
    """Pool id -> (dedicated, spot) nodes allocated now, for every pool of the account: one call per
    monitor tick, whatever the number of runs. Preempted and deallocated nodes are not billed."""
    try:
        counts = list(client.list_pool_node_counts())
    except HttpResponseError as e:
        raise translate(e, "counting pool nodes") from None

    def billed(c: bm.BatchNodeCounts | None) -> int:
        if c is None:
            return 0
        return (c.total or 0) - (c.preempted or 0) - (getattr(c, "deallocated", 0) or 0)

    return {pc.pool_id: (billed(pc.dedicated), billed(pc.low_priority)) for pc in counts if pc.pool_id}


def job_pool_id(client: BatchClient, job_id: str) -> str | None:
    """The pool a job runs on (its auto pool's id once Batch has made it); None when not known yet."""
    job = get_job(client, job_id)
    info = job.execution_info if job is not None else None
    return info.pool_id if info is not None else None

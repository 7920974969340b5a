"""What a run asks of Batch, planned without calling any service (pure).

`plan_job` turns a job spec, the pool defaults, the task count and a SAS signer into the job
intake creates, `task_spec` plans each of its tasks, `plan_merge_task` the user's merge task.
Everything a task can reach expires when the run must be over anyway.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from azure.batch import models as bm
from azure.storage.blob import ContainerSasPermissions

from shared import batch, gpus, jobfile, naming
from shared.batch import JobPlan, MergeTaskPlan, TaskSpec
from shared.jobfile import ExistingPool, JobSpec, PoolSpec
from shared.runs import RunRecord
from shared.settings import PoolDefaults
from shared.storage import BlobInfo

SAS_GRACE = timedelta(minutes=30)  # past the run's time limit, so no task loses access while it runs


class Signer(Protocol):
    """Mints SAS URLs (storage.SasMinter; a recording stand-in in tests)."""

    def blob_read_url(self, container: str, name: str, expiry: datetime) -> str: ...

    def container_url(self, container: str, permission: ContainerSasPermissions, expiry: datetime) -> str: ...


@dataclass(frozen=True)
class TaskInput:
    """Where one task's input blob is, and the file name the task sees it under."""

    container: str
    blob: str
    input_file: str


@dataclass(frozen=True)
class Submission:
    """A planned job, the inline config to write first (as naming.CONFIG_BLOB in the input
    container), and when what its tasks can reach expires."""

    job: JobPlan
    config: bytes | None
    expiry: datetime


def shard_inputs(in_container: str, input_file: str, count: int) -> list[TaskInput]:
    """Inputs split here: `count` shards in the run's input container, all with one file name."""
    return [TaskInput(in_container, naming.shard_name(i, input_file), input_file) for i in range(count)]


def prefix_inputs(blobs: Sequence[BlobInfo]) -> list[TaskInput]:
    """Pre-split inputs, one task per blob in the order given; each task keeps its own blob's
    extension (docs/jobfile.md)."""
    return [TaskInput(b.container, b.name, naming.input_file_of_blob(b.name)) for b in blobs]


def plan_job(run_id: str, spec: JobSpec, defaults: PoolDefaults, *, task_count: int,
             work_containers: tuple[str, str], signer: Signer, now: datetime, owner: str,
             registry: bm.ContainerRegistryReference | None = None) -> Submission:
    """The job of `task_count` tasks: its tasks can write their outputs (a create/write-only SAS on
    the output container) until SAS_GRACE after the job's own time limit."""
    in_container, out_container = work_containers
    pool = spec.pool if isinstance(spec.pool, PoolSpec) else None
    max_nodes = (pool.max_nodes if pool else None) or defaults.max_nodes
    slots = (pool.slots_per_node if pool else None) or defaults.slots_per_node
    vm_size = (pool.vm_size if pool else None) or defaults.vm_size
    spot = bool(pool and pool.spot)
    task_timeout = timedelta(minutes=spec.task_timeout_minutes)
    job_timeout = batch.job_timeout(task_count, max_nodes * slots, spec.retries, task_timeout)
    expiry = now + job_timeout + SAS_GRACE
    config, config_url = _config(spec, in_container, signer, expiry)
    job = JobPlan(
        job_id=run_id, run_id=run_id, command=spec.command, image=spec.image,
        output_file=jobfile.task_output_name(spec),
        output_container_url=signer.container_url(out_container, ContainerSasPermissions(create=True, write=True),
                                                  expiry),
        task_count=task_count, retries=spec.retries, task_timeout=task_timeout, job_timeout=job_timeout,
        config_url=config_url,
        resource_urls=tuple((signer.blob_read_url(r.blob.container, r.blob.path, expiry), r.file_name, r.unzip)
                            for r in spec.resources),
        pool_id=spec.pool.id if isinstance(spec.pool, ExistingPool) else None,
        vm_size=vm_size, max_nodes=max_nodes, spot=spot, slots_per_node=slots,
        registry=registry, owner=owner,
        fallback=batch.SpotFallback(since=now, wait=timedelta(minutes=defaults.spot_wait_minutes),
                                    preempted=defaults.spot_preemption_threshold)
        if spot and pool and pool.spot_fallback else None,
        # a pool the job file names is the user's: its size is not known here, and its nodes are as they are
        gpus=0 if isinstance(spec.pool, ExistingPool) else gpus.gpu_count(vm_size),
    )
    return Submission(job, config, expiry)


def task_spec(index: int, where: TaskInput, signer: Signer, expiry: datetime) -> TaskSpec:
    """Task `index`, able to read its own input (a read-only blob SAS) until `expiry`."""
    return TaskSpec(naming.task_id(index), index, signer.blob_read_url(where.container, where.blob, expiry),
                    where.input_file)


def _config(spec: JobSpec, in_container: str, signer: Signer, expiry: datetime) -> tuple[bytes | None, str | None]:
    """(config.json to write, its read URL): inline config is written to the input container;
    a config blob is read where it is."""
    if isinstance(spec.config, dict):
        return json.dumps(spec.config).encode(), signer.blob_read_url(in_container, naming.CONFIG_BLOB, expiry)
    if isinstance(spec.config, jobfile.BlobRef):
        return None, signer.blob_read_url(spec.config.container, spec.config.path, expiry)
    return None, None


def plan_merge_task(run: RunRecord, out_container: str, signer: Signer, now: datetime) -> MergeTaskPlan:
    """The user's merge task: it reads (and lists) every task output and writes its own output,
    for the task timeout plus SAS_GRACE."""
    command = run.merge_command
    if command is None:
        raise ValueError(f"run {run.run_id} has no merge command")
    timeout = timedelta(minutes=run.task_timeout_minutes)
    expiry = now + timeout + SAS_GRACE
    return MergeTaskPlan(
        command=command.command, image=command.image, output_file=run.output_file,
        outputs_url=signer.container_url(out_container, ContainerSasPermissions(read=True, list=True), expiry),
        output_container_url=signer.container_url(out_container, ContainerSasPermissions(create=True, write=True),
                                                  expiry),
        timeout=timeout,
    )

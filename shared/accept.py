"""Step 1: a job file arrived. Validate it, split the input, submit the Batch job.

Idempotent: the run id comes from the job blob's (container, name, ETag), every write is an
upsert of deterministic content, and Batch's JobExists / TaskExists count as success; so the
same event twice, or a crash and a retry at any point, ends with one job holding exactly the
right tasks.
"""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from itertools import chain, islice
from typing import Callable, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerSasPermissions

from shared import batch, jobfile, naming, split, storage, zipcheck
from shared.batch import JobPlan, TaskSpec
from shared.cleanup import clean_up, end_run, work_containers
from shared.context import Context
from shared.errors import BatchdropError, BatchError, Conflict, JobFileError
from shared.storage import Record
from shared.jobfile import BlobInput, ExistingPool, ItemsInput, JobSpec, PrefixInput
from shared.runs import ACCEPTED, ACTIVE, CANCELLED, FAILED, REJECTED, RUNNING, TERMINAL, empty_counts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shards:
    """The run's task inputs: either bytes to upload (split here) or blobs that already exist."""

    input_file: str  # file name each task sees, e.g. input.jsonl
    produced: Iterator[bytes] | None = None  # shards to upload, in task order
    existing: tuple[storage.BlobInfo, ...] = ()  # pre-split inputs (prefix form), in name order
    input_etag: str | None = None  # the input blob's version: a retry splits exactly the same bytes
    replay: Callable[[], Iterator[bytes]] | None = None  # the same shards again, from the start
    input_bytes: int = 0  # size of the blob to split


@dataclass(frozen=True)
class JobFileVersion:
    """One upload of a job file: the blob's container, name and ETag. A run belongs to exactly one."""

    container: str
    blob_name: str
    etag: str

    @property
    def path(self) -> str:
        return f"{self.container}/{self.blob_name}"

    @property
    def version(self) -> str:
        return self.etag.strip().strip('"')

    def made(self, status: dict) -> bool:
        """Whether a run record was made from this upload (and not from another that hashes alike)."""
        return status.get("job_file") == self.path and status.get("job_file_etag") == self.version


class RunIdTaken(BatchdropError):
    """Another job file created a record under this run id at the same moment; the trigger's retry
    resolves the next candidate id."""


def _resolve_run_id(ctx: Context, name: str, source: JobFileVersion) -> tuple[str, Record | None]:
    """This upload's run id and its record, if one exists yet.

    The id is derived from (container, name, ETag); should a record under it have been made from a
    different upload (a hash collision), the next candidate is taken: a collision is never taken for
    a duplicate delivery, and the other run is never touched."""
    candidates = jobfile.run_id_candidates(name, source.container, source.blob_name, source.etag)
    for candidate in candidates:
        record = ctx.runs.try_read(candidate)
        if record is None or source.made(record.data):
            return candidate, record
        log.warning("run id collision run_id=%s job_file=%s other_job_file=%s",
                    candidate, source.path, record.data.get("job_file"))
    raise RunIdTaken(f"every candidate run id of {source.path} is taken by other job files: {', '.join(candidates)}")


def accept(ctx: Context, container: str, blob_name: str) -> str | None:
    """Handle one job file. Returns the run id, or None if the blob vanished before we read it."""
    client = ctx.blobs.get_blob_client(container, blob_name)
    try:
        props = client.get_blob_properties()
    except ResourceNotFoundError:
        log.warning("job file gone before intake container=%s blob=%s", container, blob_name)
        return None
    etag = props.etag
    source = JobFileVersion(container, blob_name, etag)
    job_file = source.path
    fallback_name = jobfile.sanitise_name(jobfile.default_name(blob_name))

    limit = ctx.settings.max_job_file_bytes
    if props.size > limit:
        return _reject(ctx, None, fallback_name, source, JobFileError(
            f"the job file is {props.size} bytes; the limit is {limit}. Put large inputs in a blob "
            f"and point \"input\" at it instead of listing items inline"))
    try:
        raw = client.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified).readall()
    except (ResourceModifiedError, ResourceNotFoundError):
        log.info("job file changed while reading; the newer version has its own event blob=%s", blob_name)
        return None
    try:
        spec = jobfile.parse_intake_file(raw, blob_name=blob_name, max_bytes=limit,
                                         policy=jobfile.ReadPolicy.from_settings(ctx.settings))
    except JobFileError as e:
        return _reject(ctx, None, fallback_name, source, e)
    if isinstance(spec, jobfile.CancelRequest):
        if not cancel(ctx, spec.run_id, job_file):
            return _reject(ctx, None, fallback_name, source, JobFileError(
                f"there is no run {spec.run_id!r}; use the folder name under {ctx.settings.results_container}/",
                field="cancel"))
        return spec.run_id

    run_id, existing = _resolve_run_id(ctx, spec.name, source)
    if existing is not None and existing.data["state"] not in (ACCEPTED,):
        log.info("duplicate delivery ignored run_id=%s state=%s", run_id, existing.data["state"])
        return run_id

    try:
        _check_pool(ctx, spec)
        shards = _plan_inputs(ctx, spec, existing.data if existing else None)
        first = next(shards.produced, None) if shards.produced is not None else None
        if shards.produced is not None and first is None:
            raise JobFileError("the input holds no records, so there is nothing to run; "
                               "check that the blob is not empty and has the expected format", field="input")
        _check_task_count(ctx, spec, shards)
    except JobFileError as e:
        return _reject(ctx, run_id, spec.name, source, e)
    except ResourceModifiedError:
        changed = JobFileError("the input blob changed while this run was being set up; upload it again and "
                               "drop the job file again", field="input.blob")
        if existing is None:
            return _reject(ctx, run_id, spec.name, source, changed)
        _fail(ctx, run_id, changed.message)
        return run_id

    if existing is None:
        try:
            ctx.runs.create(_initial_status(ctx, run_id, spec, source, shards.input_etag))
            ctx.events.publish("accepted", run_id, {"job_file": job_file})
        except Conflict:
            # a concurrent delivery of the same event: both continue, every step is idempotent
            if not source.made(ctx.runs.read(run_id).data):
                raise RunIdTaken(run_id) from None  # another job file took this id at the same moment
    else:
        ctx.runs.mark_active(run_id)  # a retry: the first try may have died before the marker
    log.info("accepted run_id=%s job_file=%s", run_id, job_file)

    try:
        total = _submit(ctx, run_id, spec, shards, first)
    except JobFileError as e:  # found while streaming, e.g. malformed JSON half-way through the input
        return _reject(ctx, run_id, spec.name, source, e)
    except ResourceModifiedError:
        _fail(ctx, run_id, "the input blob changed during intake; upload it again and drop the job file again")
        return run_id
    except RunEnded:
        clean_up(ctx, run_id)  # ended meanwhile (cancel, monitor): leave nothing behind
        return run_id
    except BatchdropError as e:
        if isinstance(e, BatchError) and e.transient:
            raise  # the trigger retries; every step is idempotent
        _fail(ctx, run_id, str(e))  # permanent: Batch refused (quota, invalid request)
        return run_id

    if total is None:
        return run_id

    def to_running(data: dict) -> dict | None:
        if data["state"] != ACCEPTED:
            return None
        return {"state": RUNNING, "tasks": empty_counts(total), "submitted_at": ctx.runs.now()}

    if ctx.runs.update_retrying(run_id, to_running) is not None:
        ctx.events.publish("running", run_id, {"tasks": total})
        log.info("submitted run_id=%s tasks=%d", run_id, total)
    elif ctx.runs.read(run_id).data["state"] in TERMINAL:
        clean_up(ctx, run_id)  # ended by the monitor while we submitted
    return run_id


def cancel(ctx: Context, run_id: str, requested_by: str) -> bool:
    """Stop a run and remove what it created. Idempotent: a run already in a final state is left
    as it is. Returns False when there is no such run."""
    record = ctx.runs.try_read(run_id)
    if record is None:
        return False
    if record.data["state"] in TERMINAL:
        log.info("cancel of a finished run ignored run_id=%s state=%s", run_id, record.data["state"])
        return True
    end_run(ctx, run_id, CANCELLED, f"cancelled by {requested_by}", only_from=ACTIVE,
            event={"requested_by": requested_by})
    return True


def _initial_status(ctx: Context, run_id: str, spec: JobSpec, source: JobFileVersion,
                    input_etag: str | None) -> dict:
    return {
        "run_id": run_id,
        "name": spec.name,
        "job_file": source.path,
        "job_file_etag": source.version,
        **({"input_etag": input_etag} if input_etag else {}),
        "state": ACCEPTED,
        "tasks": empty_counts(0),
        "merge": spec.merge.kind,
        "on_task_failure": spec.on_task_failure,
        "output_extension": spec.merge.output_extension,
        "task_output": jobfile.task_output_name(spec),
        "pool": spec.pool.id if isinstance(spec.pool, ExistingPool) else "auto",
        "task_timeout_minutes": spec.task_timeout_minutes,
        **({"merge_command": {"command": spec.merge.command, "image": spec.merge.image or spec.image}}
           if spec.merge.kind == "command" else {}),
    }


def _plan_inputs(ctx: Context, spec: JobSpec, status: dict | None) -> Shards:
    """Check every blob the job file names (before anything is created), then plan the shards."""
    for i, resource in enumerate(spec.resources):
        info = storage.blob_info(ctx.blobs, resource.blob.container, resource.blob.path, f"resources[{i}].blob")
        if resource.unzip:
            _check_zip(ctx, info, f"resources[{i}].blob")
    if isinstance(spec.config, jobfile.BlobRef):
        storage.blob_info(ctx.blobs, spec.config.container, spec.config.path, "config.blob")

    inp = spec.input
    if isinstance(inp, ItemsInput):
        return Shards("input.jsonl", produced=split.iter_item_shards(inp.items, items_per_task=spec.items_per_task, tasks=spec.tasks))
    if isinstance(inp, BlobInput):
        info = storage.blob_info(ctx.blobs, inp.blob.container, inp.blob.path, "input.blob")
        etag = (status or {}).get("input_etag") or info.etag

        def produce() -> Iterator[bytes]:
            chunks = storage.read_chunks(ctx.blobs, info.container, info.name, etag=etag)
            return split.iter_shards(inp.format, chunks, items_per_task=spec.items_per_task, tasks=spec.tasks,
                                     total_bytes=info.size)
        return Shards(f"input.{jobfile.input_extension(inp)}", produced=produce(), input_etag=etag,
                      replay=produce, input_bytes=info.size)
    if isinstance(inp, PrefixInput):
        blobs = storage.list_prefix(ctx.blobs, inp.prefix.container, inp.prefix.path, "input.prefix",
                                    limit=ctx.settings.max_tasks_per_run)
        ext = blobs[0].name.rsplit(".", 1)[-1] if "." in blobs[0].name.rsplit("/", 1)[-1] else "bin"
        return Shards(f"input.{ext}", existing=tuple(blobs))
    raise JobFileError(f"unsupported input form {type(inp).__name__}", field="input")


def _check_zip(ctx: Context, info: storage.BlobInfo, field: str) -> None:
    """A zip the nodes will unpack must not reach outside the unpack directory: judged from its
    central directory (a few ranged reads, whatever its size), pinned to the version checked."""
    try:
        why = zipcheck.unsafe_member(storage.open_blob_seekable(ctx.blobs, info.container, info.name, etag=info.etag))
    except (ResourceModifiedError, ResourceNotFoundError):
        raise JobFileError(f"'{info.container}/{info.name}' changed while it was being checked; upload it again "
                           f"and drop the job file again", field=field) from None
    if why:
        raise JobFileError(f"'{info.container}/{info.name}' cannot be unpacked safely: {why}. Rebuild the zip "
                           f"with relative paths and plain files only", field=field)


def _check_pool(ctx: Context, spec: JobSpec) -> None:
    """An existing pool the job file names must exist, not be going away, and run containers when
    the job has an image: otherwise the run would sit with no progress until its time limit."""
    if not isinstance(spec.pool, ExistingPool):
        return
    pool_id = spec.pool.id
    try:
        pool = batch.get_pool(ctx.batch, pool_id)
    except BatchError as e:
        if e.transient:
            raise  # the trigger retries
        raise JobFileError(f"could not read pool {pool_id!r}: {e}", field="pool.id") from None
    if pool is None:
        raise JobFileError(f"there is no pool {pool_id!r} in the Batch account; create it first, or remove "
                           f"\"id\" to let batchdrop create a pool for this run", field="pool.id")
    if pool.state == "deleting":
        raise JobFileError(f"pool {pool_id!r} is being deleted; name another pool, or remove \"id\" to let "
                           f"batchdrop create one for this run", field="pool.id")
    vm = pool.virtual_machine_configuration
    if spec.image and vm is not None and vm.container_configuration is None:
        raise JobFileError(f"pool {pool_id!r} is not set up for containers (no containerConfiguration), so it "
                           f"cannot run image {spec.image!r}; name a pool that is, or remove \"id\"",
                           field="pool.id")


def _check_task_count(ctx: Context, spec: JobSpec, shards: Shards) -> None:
    """Refuse, before anything is uploaded, a run of more than MAX_TASKS_PER_RUN tasks.

    Exact for inline items and prefixes. For a blob split by `items_per_task`, the blob's size
    bounds the count (a record takes at least 2 bytes); only when that bound is over the limit is
    the blob split once without uploading, stopping as soon as the limit is passed."""
    limit = ctx.settings.max_tasks_per_run
    how = ("put more records in each task: raise \"items_per_task\", or give \"tasks\" (at most "
           f"{limit:,}) to split the input into that many")
    if spec.tasks is not None and spec.tasks > limit:
        raise JobFileError(f"asks for {spec.tasks:,} tasks; a run may have at most {limit:,} "
                           f"(setting MAX_TASKS_PER_RUN)", field="tasks")
    if shards.existing:
        if len(shards.existing) > limit:
            raise JobFileError(f"holds more than {limit:,} blobs, one task each; a run may have at most "
                               f"{limit:,} tasks (setting MAX_TASKS_PER_RUN). Combine the inputs into fewer "
                               f"blobs, or split the job into several runs", field="input.prefix")
        return
    per_task = spec.items_per_task or 1
    if isinstance(spec.input, ItemsInput):
        count = -(-len(spec.input.items) // per_task) if spec.tasks is None else 0
        exact = True
    elif spec.tasks is not None:
        return  # at most spec.tasks shards, checked above
    else:
        count = -(-((shards.input_bytes + 1) // 2) // per_task)
        exact = False
    if count <= limit:
        return
    if not exact and shards.replay is not None:
        count = sum(1 for _ in islice(shards.replay(), limit + 1))
        if count <= limit:
            return
        raise JobFileError(f"would make more than {limit:,} tasks of {per_task:,} record(s) each, the most a "
                           f"run may have (setting MAX_TASKS_PER_RUN); {how}", field="items_per_task")
    raise JobFileError(f"would make {count:,} tasks of {per_task:,} item(s) each; a run may have at most "
                       f"{limit:,} (setting MAX_TASKS_PER_RUN); {how}", field="items_per_task")


def _submit(ctx: Context, run_id: str, spec: JobSpec, shards: Shards, first: bytes | None) -> int | None:
    """Create work containers, upload shards, then create the job and add its tasks.

    The job is created after the upload because TASK_COUNT (a job-wide variable) is known only
    once the split is done. Returns the task count, or None when another delivery of the same
    event submitted the job meanwhile.
    """
    settings = ctx.settings
    in_container, out_container = work_containers(ctx, run_id)
    for name in (in_container, out_container):
        storage.ensure_container(ctx.blobs, name, metadata={naming.WORK_METADATA: run_id})
    pool = spec.pool if isinstance(spec.pool, jobfile.PoolSpec) else None
    max_nodes = (pool.max_nodes if pool else None) or settings.pool.max_nodes
    slots = (pool.slots_per_node if pool else None) or settings.pool.slots_per_node

    if shards.existing:
        count = len(shards.existing)
    else:
        count = _upload_shards(ctx, in_container, shards.input_file, chain([first], shards.produced))

    # everything a task can reach expires when the run must be over anyway
    task_timeout = timedelta(minutes=spec.task_timeout_minutes)
    job_timeout = batch.job_timeout(count, max_nodes * slots, spec.retries, task_timeout)
    expiry = ctx.clock() + job_timeout + timedelta(minutes=30)
    sas = storage.SasMinter(ctx.blobs)
    out_url = sas.container_url(out_container, ContainerSasPermissions(create=True, write=True), expiry)
    # each task can read its own input and nothing else
    if shards.existing:
        tasks = [TaskSpec(naming.task_id(i), i, sas.blob_read_url(b.container, b.name, expiry), shards.input_file)
                 for i, b in enumerate(shards.existing)]
    else:
        tasks = [TaskSpec(naming.task_id(i), i, sas.blob_read_url(in_container, naming.shard_name(i, shards.input_file), expiry),
                          shards.input_file) for i in range(count)]

    config_url = None
    if isinstance(spec.config, dict):
        ctx.blobs.get_blob_client(in_container, "config.json").upload_blob(
            json.dumps(spec.config).encode(), overwrite=True)
        config_url = sas.blob_read_url(in_container, "config.json", expiry)
    elif isinstance(spec.config, jobfile.BlobRef):
        config_url = sas.blob_read_url(spec.config.container, spec.config.path, expiry)
    resources = tuple(
        (sas.blob_read_url(r.blob.container, r.blob.path, expiry), r.blob.path.rsplit("/", 1)[-1], r.unzip)
        for r in spec.resources
    )
    plan = JobPlan(
        job_id=run_id, run_id=run_id, command=spec.command, image=spec.image,
        output_file=jobfile.task_output_name(spec), output_container_url=out_url,
        task_count=count, retries=spec.retries, task_timeout=task_timeout, job_timeout=job_timeout,
        config_url=config_url, resource_urls=resources,
        pool_id=spec.pool.id if isinstance(spec.pool, ExistingPool) else None,
        vm_size=(pool.vm_size if pool else None) or settings.pool.vm_size,
        max_nodes=max_nodes, spot=bool(pool and pool.spot), slots_per_node=slots,
        registry=_registry(ctx, spec), owner=naming.owner_tag(ctx.blobs.url, settings.results_container),
    )
    state = ctx.runs.read(run_id).data["state"]
    if state in TERMINAL:
        raise RunEnded(run_id)  # cancelled, or the monitor gave up on this intake, meanwhile
    if state != ACCEPTED:
        return None  # a concurrent delivery of the same event submitted the job already
    if not batch.create_job(ctx.batch, batch.job_model(plan, settings.pool)):
        job = batch.get_job(ctx.batch, run_id)
        if job is not None and (job.state != "active" or job.all_tasks_complete_mode == "terminatejob"):
            return count  # a retry after the job was sealed: its tasks are all in already
    groups = _chunks(tasks, batch.MAX_TASKS_PER_CALL)
    with ThreadPoolExecutor(settings.submit_concurrency, thread_name_prefix="submit") as executor:
        for _ in executor.map(lambda g: batch.add_tasks(ctx.batch, run_id, [batch.task_model(plan, t) for t in g]),
                              groups):
            pass
    if spec.merge.kind != "command":
        batch.seal_job(ctx.batch, run_id)  # a merge task is added later; finalize seals those jobs
    return count


class RunEnded(Exception):
    """The run reached a final state while intake was still working on it."""


def _upload_shards(ctx: Context, in_container: str, input_file: str, shards: Iterator[bytes]) -> int:
    """Upload shards in parallel, in order of production; returns how many. In-flight shards are
    bounded, so memory stays flat whatever the input size. Names are deterministic, so a retry
    overwrites, never adds."""
    container = ctx.blobs.get_container_client(in_container)
    concurrency = ctx.settings.upload_concurrency
    in_flight = threading.BoundedSemaphore(concurrency * 2)

    def upload(index: int, data: bytes) -> None:
        try:
            container.upload_blob(naming.shard_name(index, input_file), data, overwrite=True)
        finally:
            in_flight.release()

    futures: list[Future] = []
    with ThreadPoolExecutor(concurrency, thread_name_prefix="upload") as executor:
        try:
            for index, data in enumerate(shards):
                in_flight.acquire()
                futures.append(executor.submit(upload, index, data))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    for f in futures:
        f.result()
    return len(futures)


def _registry(ctx: Context, spec: JobSpec):
    registry = ctx.settings.registry
    if not spec.image or registry is None:
        return None
    from azure.batch import models as bm

    password = ctx.secrets.get(registry.password_setting)
    return bm.ContainerRegistryReference(
        registry_server=registry.server, username=registry.username, password=password.reveal())


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _reject(ctx: Context, run_id: str | None, name: str, source: JobFileVersion, error: JobFileError) -> str:
    """The job file cannot run: status.json says rejected, error.json says why; nothing else is
    created. A run another delivery already got going is left alone. Without `run_id` (the job
    file could not be read far enough to name the run), the id comes from the blob's name."""
    if run_id is None:
        run_id, _ = _resolve_run_id(ctx, name, source)
    failure = {"run_id": run_id, "job_file": source.path, "state": REJECTED, "field": error.field,
               "message": error.message, "error": str(error)}
    status = {"run_id": run_id, "name": name, "job_file": source.path, "job_file_etag": source.version,
              "state": REJECTED, "tasks": empty_counts(0), "error": str(error)}
    try:
        ctx.runs.create(status)
    except Conflict:
        # a retry of a run accepted before its input turned out to be unusable: only an
        # `accepted` run of this job file becomes rejected (and is cleaned up); a running one is
        # not ours to stop
        changed = ctx.runs.update_retrying(
            run_id, lambda d: {"state": REJECTED, "error": str(error)}
            if d["state"] == ACCEPTED and source.made(d) else None)
        if changed is None:
            log.warning("late job file error ignored, the run is already under way run_id=%s field=%s",
                        run_id, error.field)
            return run_id
        ctx.runs.write_error(run_id, failure)
        clean_up(ctx, run_id)
    else:
        ctx.runs.write_error(run_id, failure)
    ctx.events.publish("rejected", run_id, {"job_file": source.path, "error": str(error)})
    log.info("rejected run_id=%s job_file=%s field=%s", run_id, source.path, error.field)
    return run_id


def _fail(ctx: Context, run_id: str, message: str) -> None:
    """The run cannot go on: fail it, say why, remove what it created. Only from `accepted`: a
    run another delivery got going is not ours to fail."""
    end_run(ctx, run_id, FAILED, message, only_from=frozenset({ACCEPTED}))

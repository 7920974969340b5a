"""Step 1: a job file arrived. Validate it, split the input, submit the Batch job.

Idempotent: the run id comes from the job blob's (container, name, ETag), every write is an
upsert of deterministic content, and Batch's JobExists / TaskExists count as success; so the
same event twice, or a crash and a retry at any point, ends with one job holding exactly the
right tasks. What is submitted is planned by `shared.jobplan`; this module does the I/O.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import chain, islice

from shared import admission, batch, claims, jobfile, jobplan, naming, split, storage, zipcheck
from shared.cleanup import clean_up, work_containers
from shared.context import Context
from shared.errors import BatchdropError, BatchError, BatchQuotaError, Conflict, JobFileError
from shared.jobfile import BlobInput, ExistingPool, ItemsInput, JobSpec, PrefixInput
from shared.runs import ACCEPTED, TERMINAL, JobFileVersion, RunRecord

__all__ = ["accept", "JobFileVersion", "RunIdTaken"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shards:
    """The run's task inputs: either bytes to upload (split here) or blobs that already exist."""

    input_file: str = ""  # for shards split here: the file name each task sees, e.g. input.jsonl
    produced: Iterator[bytes] | None = None  # shards to upload, in task order
    existing: tuple[storage.BlobInfo, ...] = ()  # pre-split inputs (prefix form), in name order
    input_etag: str | None = None  # the input blob's version: a retry splits exactly the same bytes
    replay: Callable[[], Iterator[bytes]] | None = None  # the same shards again, from the start
    input_bytes: int = 0  # size of the blob to split
    lines: Callable[[], int] | None = None  # line breaks + 1 of a line-based blob: at least its record count


class RunIdTaken(BatchdropError):
    """Another job file created a record under this run id at the same moment; the trigger's retry
    resolves the next candidate id."""


class RunEnded(Exception):
    """The run reached a final state while intake was still working on it."""


class MustWait(Exception):
    """Batch refused the job or its auto pool for quota, or the cap of admitted runs is reached:
    the run waits in line (state queued) instead of failing."""


def accept(ctx: Context, container: str, blob_name: str, etag: str | None = None) -> str | None:
    """Handle one job file (or cancel request). Returns the run id, or None if the blob vanished
    or changed before it was read (a newer version has its own event). With `etag` (a re-driven
    intake), only that version of the job file is handled."""
    found = storage.blob_version(ctx.blobs, container, blob_name)
    if found is None:
        log.warning("job file gone before intake container=%s blob=%s", container, blob_name)
        return None
    source = JobFileVersion(container, blob_name, found.etag)
    if etag is not None and JobFileVersion(container, blob_name, etag).version != source.version:
        log.info("re-driven intake of a job file replaced since; the newer version has its own event blob=%s",
                 blob_name)
        return None
    fallback_name = naming.sanitise_name(naming.default_name(blob_name))
    limit = ctx.settings.max_job_file_bytes
    oversized = jobfile.too_large(found.size, limit)
    if oversized is not None:
        return _reject(ctx, None, fallback_name, source, oversized)
    try:
        raw = storage.read_pinned(ctx.blobs, container, blob_name, found.etag)
    except storage.BlobChanged:
        log.info("job file changed while reading; the newer version has its own event blob=%s", blob_name)
        return None
    try:
        spec = jobfile.parse_intake_file(raw, blob_name=blob_name, max_bytes=limit,
                                         policy=jobfile.ReadPolicy.from_settings(ctx.settings))
    except JobFileError as e:
        return _reject(ctx, None, fallback_name, source, e)
    if isinstance(spec, jobfile.CancelRequest):
        if ctx.runs.cancel(spec.run_id, source.path):
            return spec.run_id
        return _reject(ctx, None, fallback_name, source, JobFileError(
            f"there is no run {spec.run_id!r}; use the folder name under {ctx.settings.results_container}/",
            field="cancel"))
    return _accept_job(ctx, spec, source)


def _accept_job(ctx: Context, spec: JobSpec, source: JobFileVersion) -> str:
    run_id, existing = _resolve_run_id(ctx, spec.name, source)
    if existing is not None and existing.state != ACCEPTED:
        log.info("duplicate delivery ignored run_id=%s state=%s", run_id, existing.state)
        return run_id
    # held while this intake works: should it die, the monitor knows within a minute and re-drives it
    with ctx.claims.hold(run_id, claims.INTAKE) as claim:
        if claim is None:
            log.info("another intake is at work on this run run_id=%s", run_id)
            return run_id
        existing = ctx.runs.try_read(run_id)  # read again: the claim's last holder may have got further
        if existing is not None and existing.state != ACCEPTED:
            return run_id
        ctx.runs.mark_active(run_id, source)  # before the (maybe long) checks: a death here is re-driven too
        _accept_claimed(ctx, run_id, spec, source, existing)
    return run_id


def _accept_claimed(ctx: Context, run_id: str, spec: JobSpec, source: JobFileVersion,
                    existing: RunRecord | None) -> None:
    shards = _prepare(ctx, run_id, spec, source, existing)
    if shards is None:
        return
    if existing is None:
        try:
            ctx.runs.accept(RunRecord.accepted(run_id, spec, source, shards.input_etag, ctx.settings.pool))
        except Conflict:
            # a concurrent delivery of the same event: both continue, every step is idempotent
            if not source.made(ctx.runs.read(run_id)):
                raise RunIdTaken(run_id) from None  # another job file took this id at the same moment
    log.info("accepted run_id=%s job_file=%s", run_id, source.path)
    why = admission.must_wait(ctx, run_id)
    if why is not None:
        ctx.runs.queue(run_id, why)  # before the upload: the admitted intake does it
        return
    total = _submit_or_end(ctx, run_id, spec, source, shards)
    if total is not None and not ctx.runs.start_running(run_id, total) and ctx.runs.read(run_id).state in TERMINAL:
        clean_up(ctx, run_id)  # ended by the monitor while we submitted


def _resolve_run_id(ctx: Context, name: str, source: JobFileVersion) -> tuple[str, RunRecord | None]:
    """This upload's run id and its record, if one exists yet.

    The id is derived from (container, name, ETag); should a record under it have been made from a
    different upload (a hash collision), the next candidate is taken: a collision is never taken for
    a duplicate delivery, and the other run is never touched."""
    candidates = naming.run_id_candidates(name, source.container, source.blob_name, source.etag)
    for candidate in candidates:
        run = ctx.runs.try_read(candidate)
        if run is None or source.made(run):
            return candidate, run
        log.warning("run id collision run_id=%s job_file=%s other_job_file=%s",
                    candidate, source.path, run.job_file)
    raise RunIdTaken(f"every candidate run id of {source.path} is taken by other job files: {', '.join(candidates)}")


def _reject(ctx: Context, run_id: str | None, name: str, source: JobFileVersion, error: JobFileError) -> str:
    """See RunStore.reject. Without `run_id` (the job file could not be read far enough to name
    the run), the id comes from the blob's name."""
    if run_id is None:
        run_id, _ = _resolve_run_id(ctx, name, source)
    ctx.runs.reject(run_id, name, source, error)
    return run_id


# ----------------------------------------------------------------------------- before anything is created


def _prepare(ctx: Context, run_id: str, spec: JobSpec, source: JobFileVersion,
             existing: RunRecord | None) -> Shards | None:
    """Check every blob and pool the job file names and plan its shards, before anything is
    created. None when the run was rejected (or, on a retry, failed) instead."""
    try:
        _check_pool(ctx, spec)
        shards = _non_empty(_plan_inputs(ctx, spec, existing))
        _check_task_count(ctx, spec, shards)
        return shards
    except JobFileError as e:
        _reject(ctx, run_id, spec.name, source, e)
    except storage.BlobChanged:
        changed = JobFileError("the input blob changed while this run was being set up; upload it again and "
                               "drop the job file again", field="input.blob")
        if existing is None:
            _reject(ctx, run_id, spec.name, source, changed)
        else:
            ctx.runs.fail_intake(run_id, changed.message)
    return None


def _plan_inputs(ctx: Context, spec: JobSpec, existing: RunRecord | None) -> Shards:
    """Check every blob the job file names (before anything is created), then plan the shards."""
    for i, resource in enumerate(spec.resources):
        info = storage.blob_info(ctx.blobs, resource.blob.container, resource.blob.path, f"resources[{i}].blob")
        if resource.unzip:
            _check_zip(ctx, info, f"resources[{i}].blob")
    if isinstance(spec.config, jobfile.BlobRef):
        storage.blob_info(ctx.blobs, spec.config.container, spec.config.path, "config.blob")

    inp = spec.input
    if isinstance(inp, ItemsInput):
        return Shards("input.jsonl", produced=split.iter_item_shards(inp.items, items_per_task=spec.items_per_task,
                                                                      tasks=spec.tasks))
    if isinstance(inp, BlobInput):
        info = storage.blob_info(ctx.blobs, inp.blob.container, inp.blob.path, "input.blob")
        etag = (existing.input_etag if existing else None) or info.etag

        def produce() -> Iterator[bytes]:
            chunks = storage.read_chunks_pinned(ctx.blobs, info.container, info.name, etag)
            return split.iter_shards(inp.format, chunks, items_per_task=spec.items_per_task, tasks=spec.tasks,
                                     total_bytes=info.size)
        def lines() -> int:
            return 1 + sum(chunk.count(b"\n") for chunk in
                           storage.read_chunks_pinned(ctx.blobs, info.container, info.name, etag))
        return Shards(f"input.{jobfile.input_extension(inp)}", produced=produce(), input_etag=etag,
                      replay=produce, input_bytes=info.size, lines=lines if inp.format != "json" else None)
    if isinstance(inp, PrefixInput):
        blobs = storage.list_prefix(ctx.blobs, inp.prefix.container, inp.prefix.path, "input.prefix",
                                    limit=ctx.settings.max_tasks_per_run)
        return Shards(existing=tuple(blobs))
    raise JobFileError(f"unsupported input form {type(inp).__name__}", field="input")


def _non_empty(shards: Shards) -> Shards:
    """A split that yields no shard is refused (a job with no tasks is not a job); the first
    shard is read to know, and put back."""
    if shards.produced is None:
        return shards
    first = next(shards.produced, None)
    if first is None:
        raise JobFileError("the input holds no records, so there is nothing to run; "
                           "check that the blob is not empty and has the expected format", field="input")
    return replace(shards, produced=chain([first], shards.produced))


def _check_zip(ctx: Context, info: storage.BlobInfo, field: str) -> None:
    """A zip the nodes will unpack must not reach outside the unpack directory: judged from its
    central directory (a few ranged reads, whatever its size), pinned to the version checked."""
    try:
        why = storage.inspect_pinned(ctx.blobs, info.container, info.name, info.etag, zipcheck.unsafe_member)
    except storage.BlobChanged:
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
    # a line-based blob has at most one record per line: counting line breaks is cheap
    if not exact and shards.lines is not None and -(-shards.lines() // per_task) <= limit:
        return
    if not exact and shards.replay is not None:
        count = sum(1 for _ in islice(shards.replay(), limit + 1))
        if count <= limit:
            return
        raise JobFileError(f"would make more than {limit:,} tasks of {per_task:,} record(s) each, the most a "
                           f"run may have (setting MAX_TASKS_PER_RUN); {how}", field="items_per_task")
    raise JobFileError(f"would make {count:,} tasks of {per_task:,} item(s) each; a run may have at most "
                       f"{limit:,} (setting MAX_TASKS_PER_RUN); {how}", field="items_per_task")


# ----------------------------------------------------------------------------- submission


def _submit_or_end(ctx: Context, run_id: str, spec: JobSpec, source: JobFileVersion, shards: Shards) -> int | None:
    """Submit the job. Returns its task count, or None when there is nothing more to do: another
    delivery submitted it, or the run was rejected, failed or ended meanwhile. Transient Batch
    errors are raised (the trigger retries; every step is idempotent)."""
    try:
        return _submit(ctx, run_id, spec, shards)
    except JobFileError as e:  # found while streaming, e.g. malformed JSON half-way through the input
        _reject(ctx, run_id, spec.name, source, e)
    except storage.BlobChanged:
        ctx.runs.fail_intake(run_id, "the input blob changed during intake; upload it again and drop the job "
                                     "file again")
    except RunEnded:
        clean_up(ctx, run_id)  # ended meanwhile (cancel, monitor): leave nothing behind
    except MustWait as e:
        ctx.runs.queue(run_id, str(e))  # the work containers and shards stay: the admitted intake re-uses them
    except BatchQuotaError as e:
        ctx.runs.queue(run_id, str(e))
    except BatchError as e:
        if e.transient:
            raise
        if e.code == "JobBeingDeleted":  # its quota-refused job is still going away: wait in line
            ctx.runs.queue(run_id, f"waiting for the job refused before to be deleted ({e.code})")
        else:
            ctx.runs.fail_intake(run_id, str(e))  # permanent: Batch refused (invalid request)
    except BatchdropError as e:
        if isinstance(e, storage.StorageError) or (isinstance(e, BatchError) and e.transient):
            raise  # storage or Batch unreachable for a moment: never a reason to fail the run
        ctx.runs.fail_intake(run_id, str(e))  # permanent: Batch refused (quota, invalid request)
    return None


def _submit(ctx: Context, run_id: str, spec: JobSpec, shards: Shards) -> int | None:
    """Create work containers, upload shards, then create the job and add its tasks.

    The job is created after the upload because TASK_COUNT (a job-wide variable) is known only
    once the split is done. Returns the task count, or None when another delivery of the same
    event submitted the job meanwhile.
    """
    in_container, out_container = work_containers(ctx, run_id)
    for name in (in_container, out_container):
        storage.ensure_container(ctx.blobs, name, metadata={naming.WORK_METADATA: run_id})
    if shards.existing:
        inputs = jobplan.prefix_inputs(shards.existing)
    else:
        count = _upload_shards(ctx, in_container, shards.input_file, shards.produced or iter(()))
        inputs = jobplan.shard_inputs(in_container, shards.input_file, count)
    submission = jobplan.plan_job(
        run_id, spec, ctx.settings.pool, inputs, work_containers=(in_container, out_container),
        signer=storage.SasMinter(ctx.blobs), now=ctx.clock(), registry=_registry(ctx, spec),
        owner=naming.owner_tag(storage.account_url(ctx.blobs), ctx.settings.results_container))
    if submission.config is not None:
        storage.put_blob(ctx.blobs, in_container, naming.CONFIG_BLOB, submission.config)
    return _send(ctx, run_id, submission)


def _send(ctx: Context, run_id: str, submission: jobplan.Submission) -> int | None:
    """Create the job and add its tasks (in parallel, 100 per call).

    The job is not sealed (set to terminate when its tasks complete): a task that failed because
    storage was unreachable is reactivated by the monitor (shared.retries), which Batch allows
    only in an active job; finalize deletes the job (and its auto pool) once the run is merged."""
    state = ctx.runs.read(run_id).state
    if state in TERMINAL:
        raise RunEnded(run_id)  # cancelled, or the monitor gave up on this intake, meanwhile
    if state != ACCEPTED:
        return None  # a concurrent delivery of the same event submitted the job already
    plan, count = submission.job, submission.job.task_count
    batch.create_job(ctx.batch, batch.job_model(plan, ctx.settings.pool))  # a quota refusal raises BatchQuotaError
    if plan.pool_id is None:
        _refused_auto_pool(ctx, run_id)
    groups = _chunks(list(submission.tasks), batch.MAX_TASKS_PER_CALL)
    try:
        with ThreadPoolExecutor(ctx.settings.submit_concurrency, thread_name_prefix="submit") as executor:
            for _ in executor.map(lambda g: batch.add_tasks(ctx.batch, run_id,
                                                            [batch.task_model(plan, t) for t in g]), groups):
                pass
    except BatchError as e:
        if e.code == "JobCompleted" and plan.pool_id is None:
            _refused_auto_pool(ctx, run_id)
        raise
    return count


def _refused_auto_pool(ctx: Context, run_id: str) -> None:
    """Batch accepts a job whose auto pool is beyond the pool quota and completes it at once: delete
    that job (so it holds no quota and its id is free for the next try) and wait in line."""
    why = batch.auto_pool_quota_refusal(ctx.batch, run_id)
    if why is not None:
        batch.delete_job(ctx.batch, run_id)
        raise MustWait(why)


def _upload_shards(ctx: Context, in_container: str, input_file: str, shards: Iterator[bytes]) -> int:
    """Upload shards in parallel, in order of production; returns how many. Memory stays flat
    whatever the input size (see storage.upload_many). Names are deterministic, so a retry
    overwrites, never adds."""
    named = ((naming.shard_name(index, input_file), data) for index, data in enumerate(shards))
    return storage.upload_many(ctx.blobs, in_container, named, ctx.settings.upload_concurrency)


def _registry(ctx: Context, spec: JobSpec):
    registry = ctx.settings.registry
    if not spec.image or registry is None:
        return None
    password = ctx.secrets.get(registry.password_setting)
    return batch.registry_reference(registry.server, registry.username, password.reveal())


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]

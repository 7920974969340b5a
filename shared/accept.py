"""Step 1: a job file arrived. Validate it, split the input, submit the Batch job.

Idempotent: the run id comes from the job blob's (container, name, ETag), every write is an
upsert of deterministic content, and Batch's JobExists / TaskExists count as success; so the
same event twice, or a crash and a retry at any point, ends with one job holding exactly the
right tasks. What is submitted, and in what chunks, is `shared.submit`'s; this module decides
whether and what to submit.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice

from shared import admission, batch, claims, jobfile, naming, rerun, split, storage, zipcheck
from shared.cleanup import clean_up
from shared.context import Context
from shared.errors import BatchdropError, BatchError, BatchQuotaError, Conflict, JobFileError
from shared.jobfile import BlobInput, ExistingPool, ItemsInput, JobSpec, PrefixInput
from shared.runs import ACCEPTED, RUNNING, JobFileVersion, RunRecord
from shared.submit import MustWait, PrefixResume, RunEnded, Shards, request_continuation, submit

__all__ = ["accept", "continue_submission", "JobFileVersion", "RunIdTaken"]

log = logging.getLogger(__name__)


class RunIdTaken(BatchdropError):
    """Another job file created a record under this run id at the same moment; the trigger's retry
    resolves the next candidate id."""


def accept(ctx: Context, container: str, blob_name: str, etag: str | None = None) -> str | None:
    started = time.monotonic()
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
    if isinstance(spec, jobfile.RerunRequest):
        of = ctx.runs.try_read(spec.run_id)
        if of is not None and of.name:
            run_id, existing = _resolve_run_id(ctx, of.name, source)
            if existing is not None and existing.state != ACCEPTED:
                # a duplicate delivery of a rerun that got going: not planned (nor refused) again
                if existing.submitting:
                    continue_submission(ctx, run_id)
                return run_id
        try:
            planned = rerun.plan(ctx, spec)
        except JobFileError as e:
            return _reject(ctx, None, fallback_name, source, e)
        except storage.BlobChanged:
            return _reject(ctx, None, fallback_name, source, JobFileError(
                f"the input of run {spec.run_id} changed while the rerun was being planned", field="rerun"))
        return _accept_job(ctx, planned.spec, source, planned.raw, started, planned)
    return _accept_job(ctx, spec, source, raw, started)


def continue_submission(ctx: Context, run_id: str) -> None:
    """Go on submitting a run whose intake ran out of its budget (shared.submit): from the
    cursor in its record, with the copy of the job file kept when it was accepted."""
    started = time.monotonic()
    run = ctx.runs.try_read(run_id)
    if run is None or not run.submitting:
        return  # all in already (a repeated message), or the run ended
    with ctx.claims.hold(run_id, claims.INTAKE) as claim:
        if claim is None:
            log.info("another intake is at work on this run run_id=%s", run_id)
            return
        resume_at = _continue_claimed(ctx, run_id, started)
    if resume_at is not None:
        request_continuation(ctx, run_id, resume_at)


def _continue_claimed(ctx: Context, run_id: str, started: float) -> int | None:
    run = ctx.runs.read(run_id)  # again: the claim's previous holder may have got further
    if not run.submitting:
        return None
    raw = ctx.runs.kept_job_file(run_id)
    try:
        if raw is None or run.source is None:
            raise JobFileError("the copy of the job file kept for this run is gone")
        spec = jobfile.parse_intake_file(raw, blob_name=run.source.blob_name, max_bytes=len(raw),
                                         policy=jobfile.ReadPolicy.from_settings(ctx.settings))
        if not isinstance(spec, JobSpec):
            raise JobFileError("the job file kept for this run is not a job")
        shards = replace(_plan_inputs(ctx, spec, run), total=run.tasks.total, skip=rerun.skipped(run.reused))
        if isinstance(spec.input, PrefixInput) and shards.existing_from + len(shards.existing) != run.tasks.total:
            raise _prefix_changed(f"{run.tasks.total:,} when it started, "
                                  f"{shards.existing_from + len(shards.existing):,} now")
    except (JobFileError, storage.BlobChanged) as e:
        ctx.runs.fail_submission(run_id, f"the submission could not go on: {e}")
        return None
    return _submit_or_end(ctx, run_id, spec, run.source, shards, started)


def _accept_job(ctx: Context, spec: JobSpec, source: JobFileVersion, raw: bytes, started: float,
                reruns: rerun.RerunPlan | None = None) -> str:
    run_id, existing = _resolve_run_id(ctx, spec.name, source)
    if existing is not None and existing.submitting:
        continue_submission(ctx, run_id)  # the trigger's retry of an intake that died between chunks
        return run_id
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
        resume_at = _accept_claimed(ctx, run_id, spec, source, existing, raw, started, reruns)
    if resume_at is not None:
        request_continuation(ctx, run_id, resume_at)  # once the claim is let go
    return run_id


def _accept_claimed(ctx: Context, run_id: str, spec: JobSpec, source: JobFileVersion,
                    existing: RunRecord | None, raw: bytes, started: float,
                    reruns: rerun.RerunPlan | None) -> int | None:
    shards = _prepare(ctx, run_id, spec, source, existing, reruns)
    if shards is None:
        return None
    if existing is None:
        record = RunRecord.accepted(run_id, spec, source, shards.input_etag, ctx.settings.pool)
        if reruns is not None:
            record = record.rerunning(reruns.of.run_id, reruns.reused)
        try:
            ctx.runs.accept(record)
        except Conflict:
            # a concurrent delivery of the same event: both continue, every step is idempotent
            if not source.made(ctx.runs.read(run_id)):
                raise RunIdTaken(run_id) from None  # another job file took this id at the same moment
    ctx.runs.keep_job_file(run_id, raw)  # what continuations (and reruns) read, whatever becomes of the blob
    if reruns is not None:
        rerun.copy_reused(ctx, run_id, reruns)  # before any task runs: the work container is the run's from here
    log.info("accepted run_id=%s job_file=%s tasks=%d", run_id, source.path, shards.total)
    why = admission.must_wait(ctx, run_id)
    if why is not None:
        ctx.runs.queue(run_id, why)  # before the upload: the admitted intake does it
        return None
    return _submit_or_end(ctx, run_id, spec, source, shards, started)


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
             existing: RunRecord | None, reruns: rerun.RerunPlan | None = None) -> Shards | None:
    """Check every blob and pool the job file names and plan its shards, before anything is
    created. None when the run was rejected (or, on a retry, failed) instead. A rerun's shards
    are the run's it reruns (its input pinned to the version that run split), less the reused."""
    try:
        _check_pool(ctx, spec)
        if reruns is None:
            return _counted(ctx, spec, _plan_inputs(ctx, spec, existing))
        of = reruns.of
        shards = _counted(ctx, spec, _plan_inputs(ctx, spec, existing, pin=of.input_etag))
        if shards.total != of.tasks.total:
            raise JobFileError(f"the input of run {of.run_id} changed since it ran: it made {of.tasks.total:,} "
                               f"tasks, now {shards.total:,}; drop the job file again for a new run", field="rerun")
        return replace(shards, skip=reruns.skip)
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


def _plan_inputs(ctx: Context, spec: JobSpec, existing: RunRecord | None, pin: str | None = None) -> Shards:
    """Check every blob the job file names (before anything is created), then plan the shards (an
    input blob read at version `pin`, when given)."""
    for i, resource in enumerate(spec.resources):
        info = storage.blob_info(ctx.blobs, resource.blob.container, resource.blob.path, f"resources[{i}].blob")
        if resource.unzip:
            _check_zip(ctx, info, f"resources[{i}].blob")
    if isinstance(spec.config, jobfile.BlobRef):
        storage.blob_info(ctx.blobs, spec.config.container, spec.config.path, "config.blob")

    inp = spec.input
    if isinstance(inp, ItemsInput):
        items = inp.items
        return Shards("input.jsonl", replay=lambda at, _marks: islice(split.iter_item_shards(
            items, items_per_task=spec.items_per_task, tasks=spec.tasks), at.first_whole, None))
    if isinstance(inp, BlobInput):
        info = storage.blob_info(ctx.blobs, inp.blob.container, inp.blob.path, "input.blob")
        etag = (existing.input_etag if existing else None) or pin or info.etag

        def read_from(offset: int) -> Iterator[bytes]:
            return storage.read_chunks_pinned(ctx.blobs, info.container, info.name, etag, offset=offset)

        # a run submitting since before the splits kept a resume point cuts as it began: without the grid
        grid = existing is None or not existing.submitting or existing.submit_resume is not None

        def produce(at: split.Resume, marks: split.Marks | None) -> Iterator[bytes]:
            return split.resume_shards(inp.format, read_from, at, items_per_task=spec.items_per_task,
                                       tasks=spec.tasks, total_bytes=info.size, marks=marks, grid=grid)
        return Shards(f"input.{jobfile.input_extension(inp)}", replay=produce, input_etag=etag)
    if isinstance(inp, PrefixInput):
        # a continuation lists from the page of the last blob submitted, not from the first
        resume = PrefixResume.of(existing.submit_resume) if existing is not None and existing.submitting else None
        listed = storage.list_prefix_pages(ctx.blobs, inp.prefix.container, inp.prefix.path, "input.prefix",
                                           limit=ctx.settings.max_tasks_per_run, marker=resume.marker if resume else "")
        if resume is None:  # (a run submitting since before the cursor kept one: from the first page)
            return Shards(existing=tuple(listed.blobs), pages=listed.pages)
        return _listed_after(listed, resume)
    raise JobFileError(f"unsupported input form {type(inp).__name__}", field="input")


def _listed_after(listed: storage.PrefixListing, resume: PrefixResume) -> Shards:
    """The blobs after blob `resume.after` (task `resume.next` on), from a listing from its page."""
    after = next((i for i, blob in enumerate(listed.blobs) if blob.name == resume.after), None)
    if after is None:
        raise _prefix_changed(f"'{resume.after}', submitted already, is gone")
    skip = after + 1
    return Shards(existing=tuple(listed.blobs[skip:]), existing_from=resume.next,
                  pages=tuple((first - skip, marker) for first, marker in listed.pages))


def _prefix_changed(how: str) -> JobFileError:
    return JobFileError(f"the blobs under the input prefix changed while the run was being submitted ({how}); "
                        f"leave them as they are until status.json shows every task submitted", field="input.prefix")


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


def _counted(ctx: Context, spec: JobSpec, shards: Shards) -> Shards:
    """The shards with their exact number, refused when there are none or more than
    MAX_TASKS_PER_RUN: known before anything is created, because the job's TASK_COUNT is, and
    because a run is refused whole or not at all.

    A blob is split once here without uploading (stopping once past the limit); a record the split
    cannot read is found here too, before any task runs."""
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
        return replace(shards, total=len(shards.existing))
    per_task = spec.items_per_task or 1
    if isinstance(spec.input, ItemsInput):  # counted, never split to count: a sweep's items are generated
        items = len(spec.input.items)
        count = -(-items // per_task) if spec.tasks is None else min(spec.tasks, items)
        if count > limit:
            raise JobFileError(f"would make {count:,} tasks of {per_task:,} item(s) each; a run may have at most "
                               f"{limit:,} (setting MAX_TASKS_PER_RUN); {how}", field="items_per_task")
    else:
        shards_from_start = shards.replay(split.Resume(), None) if shards.replay else iter(())
        count = sum(1 for _ in islice(shards_from_start, limit + 1))
    if count == 0:
        raise JobFileError("the input holds no records, so there is nothing to run; "
                           "check that the blob is not empty and has the expected format", field="input")
    if count > limit:
        raise JobFileError(f"would make more than {limit:,} tasks of {per_task:,} record(s) each, the most a "
                           f"run may have (setting MAX_TASKS_PER_RUN); {how}", field="items_per_task")
    return replace(shards, total=count)


# ----------------------------------------------------------------------------- submission


def _submit_or_end(ctx: Context, run_id: str, spec: JobSpec, source: JobFileVersion, shards: Shards,
                   started: float) -> int | None:
    """Submit the run's tasks from its cursor (shared.submit); the cursor to continue from when the
    budget ran out. Ends the run when its input turns out unusable or Batch refuses it for good;
    puts it in line when Batch refuses for quota. Transient errors are raised (the trigger
    retries; every step is idempotent)."""
    try:
        return submit(ctx, run_id, spec, shards, started,
                      on_running=lambda submitted, resume: ctx.runs.start_running(run_id, shards.total, submitted,
                                                                                  resume))
    except JobFileError as e:  # found while streaming, e.g. malformed JSON half-way through the input
        _end_submission(ctx, run_id, spec, source, e)
    except storage.BlobChanged:
        _end_submission(ctx, run_id, spec, source, None)
    except RunEnded:
        # ended meanwhile (cancel, monitor): leave nothing behind but the task outputs it keeps for a rerun
        clean_up(ctx, run_id, keep_outputs=ctx.runs.read(run_id).outputs_kept_until is not None)
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
            ctx.runs.fail_submission(run_id, str(e))  # permanent: Batch refused (invalid request)
    except BatchdropError as e:
        if isinstance(e, storage.StorageError) or (isinstance(e, BatchError) and e.transient):
            raise  # storage or Batch unreachable for a moment: never a reason to fail the run
        ctx.runs.fail_submission(run_id, str(e))
    return None


def _end_submission(ctx: Context, run_id: str, spec: JobSpec, source: JobFileVersion,
                    error: JobFileError | None) -> None:
    """The input cannot be submitted: an accepted run is rejected (nothing ran), a running one
    (some chunks are in) fails."""
    message = error.message if error else ("the input blob changed during intake; upload it again and drop the "
                                           "job file again")
    if ctx.runs.read(run_id).state == RUNNING:
        ctx.runs.fail_submission(run_id, message)
    elif error is not None:
        _reject(ctx, run_id, spec.name, source, error)
    else:
        ctx.runs.fail_submission(run_id, message)

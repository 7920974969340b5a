"""Submitting a run's tasks to Batch in chunks, each invocation within a time budget.

The job is created first (with TASK_COUNT, counted before anything is created), then tasks go in
chunk by chunk: upload the chunk's shards, add its tasks, record `submitted` in status.json; the
next chunk's shards upload while a chunk's tasks are being added. The
first chunk is small so that tasks start at once whatever the run's size; later chunks are sized
from the rate measured so far. When the next chunk would not fit in INTAKE_BUDGET_SECONDS, a
continuation message on SUBMIT_QUEUE hands the rest to another invocation.

The cursor is the record's `submitted`: the next task index, with `submit_resume`: for a blob input,
a point shortly before it where the split can resume (a byte offset and the shard there, see
shared.split.Resume), so a continuation reads the input from there on, not from its start; for a
prefix input, the listing's marker of the page holding the last blob submitted, and that blob's name. Shards
and task ids are deterministic, so a chunk replayed after a crash overwrites the same shards and
finds its tasks already there (TaskExists counts as added).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any, TypeVar

from shared import batch, jobplan, naming, split, storage, threads
from shared.budget import RateSizer
from shared.cleanup import work_containers
from shared.context import Context
from shared.errors import BatchdropError, BatchError
from shared.jobfile import JobSpec
from shared.runs import ACCEPTED, RUNNING, TERMINAL

_T = TypeVar("_T")

log = logging.getLogger(__name__)

FIRST_CHUNK = 100  # one add-task call
CHUNK_SHARE = 0.05  # a chunk takes at most this share of the budget (so an invocation overruns it by <= 5%)
MIN_CHUNK_SECONDS = 1.0  # ... or this long, so a tiny budget still makes chunks worth a status write
CONCURRENT_INTAKES = 16  # intakes of one process adding a chunk's tasks at once (each adds one chunk at a time)


@dataclass(frozen=True)
class Shards:
    """The run's task inputs: either bytes to upload (split here) or blobs that already exist."""

    input_file: str = ""  # for shards split here: the file name each task sees, e.g. input.jsonl
    # the shards to upload, in task order, from shard `at.first_whole` on (a split.Resume the split noted
    # in the Marks given: only a blob's split notes any, and resumes from them)
    replay: Callable[[split.Resume, split.Marks | None], Iterator[bytes]] | None = None
    existing: tuple[storage.BlobInfo, ...] = ()  # pre-split inputs (prefix form), in name order
    existing_from: int = 0  # the task index of existing[0] (a continuation lists from its cursor's page on)
    pages: tuple[tuple[int, str], ...] = ()  # of the existing blobs' listing: storage.PrefixListing.pages
    input_etag: str | None = None  # the input blob's version: a retry splits exactly the same bytes
    total: int = 0  # how many tasks: counted before anything is created
    skip: frozenset[int] = frozenset()  # tasks not submitted (a rerun's reused ones): they keep their indices


class RunEnded(Exception):
    """The run reached a final state while intake was still working on it."""


class MustWait(Exception):
    """Batch refused the job or its auto pool for quota, or the cap of admitted runs is reached:
    the run waits in line (state queued) instead of failing."""


@dataclass
class ChunkSizer(RateSizer):
    """How many tasks the next chunk takes (shared.budget.RateSizer: FIRST_CHUNK, then what the
    measured rate does in a chunk's share of the budget, at most `largest`); `fits` says whether one
    more chunk ends within the budget."""

    first: int = FIRST_CHUNK
    share: float = CHUNK_SHARE
    min_seconds: float = MIN_CHUNK_SECONDS
    started: float = field(kw_only=True)  # time.monotonic() when the invocation began

    def fits(self, now: float) -> bool:
        """Whether another chunk ends within the budget (a budget of 0: one chunk per invocation)."""
        if self.budget <= 0:
            return False
        per_chunk = self.spent / self.batches if self.batches else 0.0
        return (now - self.started) + per_chunk <= self.budget


def submit(ctx: Context, run_id: str, spec: JobSpec, shards: Shards, started: float,
           on_running: Callable[[int, dict[str, Any]], bool]) -> int | None:
    """Create the job (first time) and add tasks from the record's cursor until all are in or the
    budget is spent. Returns the cursor to continue from (the caller sends `request_continuation`
    once it let go of its claim, or the continuation could find the claim still held), or None.
    `on_running(submitted, resume)` moves the run from accepted to running after its first chunk
    (False: it ended meanwhile). Raises RunEnded when the run ended meanwhile, MustWait / BatchQuotaError
    when Batch refuses for quota, BatchError, StorageError and JobFileError as the services and the
    input do."""
    run = ctx.runs.read(run_id)
    at = split.Resume()
    if run.state == ACCEPTED:
        planned = _create(ctx, run_id, spec, shards)
        start = 0
    elif run.submitting:
        planned = _plan(ctx, run_id, spec, shards)
        start = run.submitted or 0
        at = split.Resume.of(run.submit_resume) or at
        if shards.existing and shards.existing_from > start:
            raise BatchdropError(f"run {run_id}: the prefix was listed from task {shards.existing_from}, "
                                 f"the cursor is at {start}")
    elif run.state in TERMINAL:
        raise RunEnded(run_id)
    else:
        return None  # all in already (a repeated continuation), or failed fast and merging
    first = run.state == ACCEPTED
    sizer = ChunkSizer(ctx.settings.intake_budget_seconds, ctx.settings.submit_chunk_tasks, started=started,
                       first=_first_chunk(ctx, first))
    marks = split.Marks()
    inputs = _inputs_from(ctx, run_id, shards, start, at, marks)
    # Chunk k+1's shards upload while chunk k's tasks are added (neither waits on the other's round
    # trips); a chunk's tasks are added only once its own shards are all uploaded, and the cursor
    # moves only once they are added.
    uploaded, adding = start, None
    # a chunk sized from a rate measured before a slowdown would overrun the budget by the slowdown:
    # it stops taking shards at the budget's end instead (a budget of 0 means one whole chunk)
    deadline = started + sizer.budget if sizer.budget > 0 else None
    chunks_began = time.monotonic()
    try:
        while True:
            following = None
            if uploaded < shards.total and ((adding is None and sizer.batches == 0) or sizer.fits(time.monotonic())):
                size = min(sizer.next_size(), shards.total - uploaded)
                following = _guarded(ctx, run_id, planned, partial(_upload_chunk, ctx, run_id, planned, inputs,
                                                                   uploaded, size, shards.skip, deadline, marks))
                if following.end == uploaded:
                    raise BatchdropError(f"run {run_id}: the input gave {uploaded} tasks, {shards.total} were counted")
                uploaded = following.end
            if adding is not None:
                done, adding = adding, None
                _guarded(ctx, run_id, planned, done.added.result)
                if not _note(ctx, run_id, first and sizer.batches == 0, done.chunk, on_running):
                    return None
                sizer.record(done.chunk.end - done.chunk.start, time.monotonic() - done.chunk.began)
            if following is None:
                break
            adding = _Adding(following, threads.pool("submit-chunk", CONCURRENT_INTAKES).submit(
                _add_chunk, ctx, run_id, following.tasks))
    finally:
        if adding is not None:  # an error above: nothing of this invocation goes on after it
            threads.settle([adding.added], cancel=True)
    # where an invocation's time went: up to its first chunk (reading the record, re-splitting the input
    # up to the cursor: _inputs_from), its chunks, and past the budget's end (the last chunks' tasks are added after it)
    now = time.monotonic()
    timing = (f"before_chunks_s={chunks_began - started:.1f} chunks_s={now - chunks_began:.1f} "
              f"past_budget_s={max(0.0, now - deadline) if deadline is not None else 0.0:.1f}")
    if uploaded < shards.total:
        log.info("submission continues in another invocation run_id=%s submitted=%d total=%d chunks=%d %s",
                 run_id, uploaded, shards.total, sizer.batches, timing)
        return uploaded
    log.info("all tasks submitted run_id=%s tasks=%d chunks=%d %s", run_id, shards.total, sizer.batches, timing)
    return None


def _first_chunk(ctx: Context, first_invocation: bool) -> int:
    """A run's first chunks are one round of uploads, so its first tasks start after that round rather
    than after FIRST_CHUNK shards (0.2 s sooner locally); a budget of 0 (one chunk an invocation) and a
    continuation keep FIRST_CHUNK."""
    if first_invocation and ctx.settings.intake_budget_seconds > 0:
        return max(1, min(FIRST_CHUNK, ctx.settings.upload_concurrency))
    return FIRST_CHUNK


def request_continuation(ctx: Context, run_id: str, next_task: int) -> None:
    storage.queue_send(ctx.submit_queue, json.dumps({"run_id": run_id, "next_task": next_task}))


def run_id_of_continuation(body: str) -> str:
    """The run a continuation message names; BatchdropError when the body is not one."""
    try:
        run_id = json.loads(body)["run_id"]
    except (ValueError, TypeError, KeyError):
        run_id = None
    if not isinstance(run_id, str) or not run_id:
        raise BatchdropError(f"submit message is not a continuation: {body[:80]!r}")
    return run_id


# ----------------------------------------------------------------------------- the job


def _plan(ctx: Context, run_id: str, spec: JobSpec, shards: Shards) -> jobplan.Submission:
    return jobplan.plan_job(
        run_id, spec, ctx.settings.pool, task_count=shards.total, work_containers=work_containers(ctx, run_id),
        signer=storage.SasMinter(ctx.blobs), now=ctx.clock(), registry=_registry(ctx, spec),
        owner=naming.owner_tag(storage.account_url(ctx.blobs), ctx.settings.results_container))


def _create(ctx: Context, run_id: str, spec: JobSpec, shards: Shards) -> jobplan.Submission:
    """Work containers, the inline config and the job (idempotent: JobExists counts as created)."""
    in_container, out_container = work_containers(ctx, run_id)
    for name in (in_container, out_container):
        storage.ensure_container(ctx.blobs, name, metadata={naming.WORK_METADATA: run_id})
    planned = _plan(ctx, run_id, spec, shards)
    if planned.config is not None:
        storage.put_blob(ctx.blobs, in_container, naming.CONFIG_BLOB, planned.config)
    if ctx.runs.read(run_id).state != ACCEPTED:
        raise RunEnded(run_id)  # cancelled (or given up on) while the input was counted
    batch.create_job(ctx.batch, batch.job_model(planned.job, ctx.settings.pool))  # quota: BatchQuotaError
    if planned.job.pool_id is None:
        _refused_auto_pool(ctx, run_id)
    return planned


def _refused_auto_pool(ctx: Context, run_id: str) -> None:
    """Batch accepts a job whose auto pool is beyond the pool quota and completes it at once: delete
    that job (so it holds no quota and its id is free for the next try) and wait in line."""
    why = batch.auto_pool_quota_refusal(ctx.batch, run_id)
    if why is not None:
        batch.delete_job(ctx.batch, run_id)
        raise MustWait(why)


def _registry(ctx: Context, spec: JobSpec):
    registry = ctx.settings.registry
    if not spec.image or registry is None:
        return None
    password = ctx.secrets.get(registry.password_setting)
    return batch.registry_reference(registry.server, registry.username, password.reveal())


# ----------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class PrefixResume:
    """Where a continuation of a prefix input lists from: the listing's marker of the page holding
    blob `after`, the last one submitted, whose next blob is task `next` (the cursor it was noted
    with; a record's cursor can only be further, so the continuation skips up to it)."""

    marker: str
    after: str
    next: int

    def to_json(self) -> dict[str, Any]:
        return {"marker": self.marker, "after": self.after, "next": self.next}

    @classmethod
    def of(cls, doc: Any) -> PrefixResume | None:
        if not isinstance(doc, dict) or not isinstance(doc.get("marker"), str) or not isinstance(doc.get("after"), str):
            return None
        following = doc.get("next")
        if type(following) is not int or following < 1:
            return None
        return cls(doc["marker"], doc["after"], following)


@dataclass(frozen=True)
class _Input:
    index: int
    where: jobplan.TaskInput
    data: bytes | None  # to upload first (a shard split here); None for a blob that exists
    listed: PrefixResume | None = None  # of a blob that exists: a listing from its page, and its name


def _inputs_from(ctx: Context, run_id: str, shards: Shards, start: int, at: split.Resume,
                 marks: split.Marks) -> Iterator[_Input]:
    """Every task's input from task `start` on, in task order: a split resumed `at` (from the start
    when it lies past `start`), noting in `marks` where the next one can resume. The shards from `at`
    to `start` are split here and now (not on the first chunk's first read), so that an invocation's
    log tells that time apart from its chunks'."""
    if shards.existing:
        listed = storage.PrefixListing(list(shards.existing), shards.pages)
        first = start - shards.existing_from
        return (_Input(shards.existing_from + k, jobplan.prefix_inputs([info])[0], None,
                       PrefixResume(listed.marker_of(k), info.name, shards.existing_from + k + 1))
                for k, info in enumerate(shards.existing[first:], first))
    in_container, _ = work_containers(ctx, run_id)
    if at.first_whole > start:
        at = split.Resume()
    replayed = shards.replay(at, marks) if shards.replay else iter(())
    skip = start - at.first_whole
    next(islice(replayed, skip, skip), None)  # consume the shards before `start`
    return (_Input(i, jobplan.TaskInput(in_container, naming.shard_name(i, shards.input_file), shards.input_file),
                   data) for i, data in enumerate(replayed, start))


@dataclass(frozen=True)
class _Chunk:
    """Tasks start..end (task indices; `skip`ped ones have no body), their shards uploaded."""

    start: int
    end: int
    tasks: list[dict]  # batch.task_body of each
    began: float  # time.monotonic() when its upload started
    resume: dict[str, Any]  # where the input resumes for the chunk after it: a split.Resume or a PrefixResume


@dataclass(frozen=True)
class _Adding:
    chunk: _Chunk
    added: Future[None]


def _guarded(ctx: Context, run_id: str, planned: jobplan.Submission, step: Callable[[], _T]) -> _T:
    """A chunk's step. A run ended meanwhile (its containers or job deleted by a cancel) raises
    RunEnded; an auto pool Batch refused for quota, MustWait."""
    try:
        return step()
    except BatchdropError as e:
        if ctx.runs.read(run_id).state in TERMINAL:
            raise RunEnded(run_id) from None
        if isinstance(e, BatchError) and e.code == "JobCompleted" and planned.job.pool_id is None:
            _refused_auto_pool(ctx, run_id)
        raise


def _upload_chunk(ctx: Context, run_id: str, planned: jobplan.Submission, inputs: Iterator[_Input], start: int,
                  size: int, skip: frozenset[int] = frozenset(), deadline: float | None = None,
                  marks: split.Marks | None = None) -> _Chunk:
    """Upload the next `size` shards (memory stays flat: storage.upload_many) and make their tasks'
    bodies. The chunk goes over `size` task indices, to the input's end, or (after its first task)
    until `deadline` (time.monotonic()); the tasks in `skip` are passed over (the cursor is a task index)."""
    began = time.monotonic()
    taken: list[tuple[int, jobplan.TaskInput]] = []
    passed = 0
    last: _Input | None = None

    def uploads() -> Iterator[tuple[str, bytes]]:
        nonlocal passed, last
        while passed < size and not (passed and deadline is not None and time.monotonic() >= deadline):
            item = next(inputs, None)
            if item is None:
                return
            passed, last = passed + 1, item
            if item.index in skip:
                continue
            taken.append((item.index, item.where))
            if item.data is not None:
                yield item.where.blob, item.data

    storage.upload_many(ctx.blobs, work_containers(ctx, run_id)[0], uploads(), ctx.settings.upload_concurrency)
    signer = storage.SasMinter(ctx.blobs)
    tasks = [batch.task_body(planned.job, jobplan.task_spec(index, where, signer, planned.expiry))
             for index, where in taken]
    resume: dict[str, Any]
    if last is not None and last.listed is not None:
        resume = last.listed.to_json()
    else:  # the split stopped just after this chunk's last shard: its latest mark resumes at or before the next
        resume = (marks.latest if marks is not None else split.Resume()).to_json()
    return _Chunk(start, start + passed, tasks, began, resume)


def _add_chunk(ctx: Context, run_id: str, tasks: list[dict]) -> None:
    """Add the chunk's tasks, 100 per call, several calls at once."""
    groups = [tasks[i:i + batch.MAX_TASKS_PER_CALL] for i in range(0, len(tasks), batch.MAX_TASKS_PER_CALL)]
    threads.map_all("submit", ctx.settings.submit_concurrency, lambda g: batch.add_tasks(ctx.batch, run_id, g), groups)


def _note(ctx: Context, run_id: str, first: bool, chunk: _Chunk,
          on_running: Callable[[int, dict[str, Any]], bool]) -> bool:
    """Record the cursor; False when the run stopped running (its submission ends here)."""
    submitted, resume = chunk.end, chunk.resume
    if first:
        if on_running(submitted, resume):
            return True
    elif ctx.runs.note_submitted(run_id, submitted, resume) is not None:
        return True
    state = ctx.runs.read(run_id).state
    if state in TERMINAL:
        raise RunEnded(run_id)
    log.info("submission stopped: the run is %s run_id=%s submitted=%d", state, run_id, submitted)
    return state == RUNNING

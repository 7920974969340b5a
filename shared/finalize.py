"""Step 3 (queue): verify the task outputs, merge them, report, clean up.

Safe to run twice, or to be killed anywhere and run again: a finalize holds the run's claim
while it works (shared.claims: a short lease it renews, so the monitor re-drives a finalize that
died within a minute or two); the merged blob is committed in one call (a reader sees all of it
or nothing, and a rerun replaces it with identical bytes); report.json marks the merge as done;
cleanup happens only after the output is committed, and the run's final state is written last.

Every output is checked against the manifest its task wrote after it succeeded (size and
SHA-256, shared.manifest) before it is merged: an output lost or corrupt on the way sends its
task to run again (a new Batch task: one that succeeded cannot be reactivated), within the
INFRA_RETRIES budget, and the run back to running. The report is assembled by `shared.report`.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from shared import batch, claims, jobplan, manifest, merge, naming, report, report_html, run_usage, storage
from shared.cleanup import work_containers
from shared.context import Context
from shared.errors import BatchdropError, BatchError
from shared.manifest import Manifest
from shared.pricing import PriceTable
from shared.report import Merged, TaskOutcome, outcome_of
from shared.runs import MERGING, TERMINAL, RunPaths, RunRecord

__all__ = ["finalize", "outcome_of", "TaskOutcome", "LOG_COPY_BYTES", "STDERR_TAIL_BYTES"]

log = logging.getLogger(__name__)
STDERR_TAIL_BYTES = 4096
LOG_COPY_BYTES = 1024 * 1024  # of each captured stdout/stderr kept in results: a task may print gigabytes
RERUNNING = "rerunning"


class LostOutputs(Exception):
    """Outputs of succeeded tasks are missing or differ from their manifests: task id -> what."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        super().__init__(f"{len(problems)} task output(s) lost or corrupt")
        self.problems = dict(problems)


def finalize(ctx: Context, run_id: str) -> str:
    """Finish a run that the monitor handed over. Returns its final state (or why nothing was done)."""
    run = ctx.runs.try_read(run_id)
    if run is None:
        log.warning("finalize for unknown run run_id=%s", run_id)
        return "unknown run"
    if run.state in TERMINAL:
        return run.state  # a repeated message: the first finalize finished the job
    if run.state != MERGING:
        log.warning("finalize before the run finished run_id=%s state=%s", run_id, run.state)
        return f"not ready ({run.state})"
    with ctx.claims.hold(run_id, claims.FINALIZE) as claim:
        if claim is None:
            return "busy"  # another finalize is at work; should it die, the monitor re-drives the run
        return _finalize_claimed(ctx, run_id)


def _finalize_claimed(ctx: Context, run_id: str) -> str:
    run = ctx.runs.read(run_id)  # again: the claim's previous holder may have got further
    if run.state != MERGING:
        return run.state
    done = ctx.runs.read_report(run_id)
    if done is None:
        if run.merge_task == "running":
            return MERGING  # the user's merge task is still at work; the monitor asks again when it is done
        attempted = ctx.runs.commit_retrying(run_id, lambda r: r.finalize_attempted())
        if attempted is None:
            return ctx.runs.read(run_id).state
        made = _report(ctx, attempted)
        if isinstance(made, str):
            return made
        done = ctx.runs.keep_report(run_id, made)  # the first report written is kept
    _write_html(ctx, run, done)  # again after a crash: the same page from the same report
    ctx.runs.finish(run_id, done)  # one event, from the finalize that ends the run
    return done["state"]


def _report(ctx: Context, run: RunRecord) -> dict | str:
    """Verify, merge and assemble the report. Returns it, or why there is none yet (merging while
    the user's merge task runs; rerunning tasks whose outputs were lost)."""
    _, out_container = work_containers(ctx, run.run_id)
    if not storage.container_exists(ctx.blobs, out_container):
        # only a finished finalize deletes it, and that one wrote the report we did not find
        raise BatchdropError(f"run {run.run_id}: the task output container is gone; not merging from nothing")
    tasks = current_outcomes(ctx, run)
    tails = {t.task_id: _keep_failure_logs(ctx, out_container, run.run_id, t.task_id)
             for t in tasks if not t.succeeded}
    mode = batch.container_execution(ctx.batch, run.run_id, run.attempt(tasks[0].task_id)) if tasks else None

    def assemble(merged: Merged | None) -> dict:
        now = ctx.clock()
        made = report.assemble(run, tasks, stderr_tails=tails, container_execution=mode, merged=merged, now=now)
        return {**made, **run_usage.usage_and_cost(run, tasks, now, _prices(ctx))}

    if report.must_fail(run, tasks):
        return assemble(None)
    succeeded = [t for t in tasks if t.succeeded]
    try:
        manifests = _verified_manifests(ctx, run, out_container, succeeded)
        if run.merge_command and run.merge_task != "done":
            if not _start_merge_task(ctx, run):
                return MERGING  # the monitor calls us again once the merge task has finished
            run = ctx.runs.read(run.run_id)
        return assemble(_merge(ctx, run, succeeded, out_container, manifests))
    except LostOutputs as lost:
        return _rerun_lost(ctx, run, lost.problems, assemble)


def current_outcomes(ctx: Context, run: RunRecord) -> list[TaskOutcome]:
    """The outcome of each task's current Batch task (its latest rerun, if it had any), in task order."""
    listed = batch.finished_tasks(ctx.batch, run.run_id)
    current = [outcome_of(t) for t in listed if t.id == run.attempt(naming.base_task_id(t.id))]
    return sorted((_stopped_if_waiting(run, o) for o in current), key=lambda o: o.index)


def _stopped_if_waiting(run: RunRecord, outcome: TaskOutcome) -> TaskOutcome:
    """A task the infrastructure failed, still waiting for its retry when the run stopped (another
    task failed by itself), did not fail: it never got to finish, like a task still running."""
    if outcome.succeeded or (outcome.attempt or outcome.task_id) not in run.retry_waiting:
        return outcome
    code = (outcome.failure or {}).get("code")
    return replace(outcome, failure={"category": "incomplete", "code": "WaitingForRetry",
                                     "message": f"failed by the infrastructure ({code}) and waiting for its retry "
                                                f"when the run stopped"})


def _prices(ctx: Context) -> PriceTable | str:
    try:
        return run_usage.price_table(ctx.blobs, ctx.settings.price_table_blob)
    except BatchdropError as e:  # a wrong table costs the report its cost, never the run
        return str(e)


def _write_html(ctx: Context, run: RunRecord, done: dict) -> None:
    """report.html beside report.json, from the report that was kept (a rerun writes the same)."""
    container, _, name = (run.job_file or "").partition("/")
    raw = storage.read_optional(ctx.blobs, container, name) if name else None
    job_file = raw[:ctx.settings.max_job_file_bytes].decode("utf-8", errors="replace") if raw is not None else None
    page = io.StringIO()
    report_html.write_html(done, job_file, page)
    storage.put_blob(ctx.blobs, ctx.settings.results_container, RunPaths(run.run_id).report_html,
                     page.getvalue().encode("utf-8"), content_type="text/html; charset=utf-8")


# ----------------------------------------------------------------------------- verifying outputs


def _verified_manifests(ctx: Context, run: RunRecord, out_container: str,
                        succeeded: Sequence[TaskOutcome]) -> dict[str, Manifest]:
    """Each succeeded task's manifest, after checking that every output it lists is there with
    its size (one listing, one small read per task). LostOutputs names the tasks whose are not."""
    sizes = storage.blob_sizes(ctx.blobs, out_container, "tasks/")
    problems: dict[str, str] = {}
    manifests: dict[str, Manifest] = {}

    def read(task: TaskOutcome) -> tuple[str, Manifest | str]:
        data = storage.read_optional(ctx.blobs, out_container, naming.task_manifest(task.task_id))
        if data is None:
            return task.task_id, "its manifest was not uploaded"
        try:
            return task.task_id, manifest.parse(data)
        except manifest.ManifestError as e:
            return task.task_id, f"its manifest is unreadable ({e})"

    with ThreadPoolExecutor(ctx.settings.upload_concurrency, thread_name_prefix="manifest") as pool:
        for task_id, found in pool.map(read, succeeded):
            if isinstance(found, str):
                problems[task_id] = found
                continue
            prefix = naming.task_outputs(task_id)
            listed = {name[len(prefix):]: size for name, size in sizes.items() if name.startswith(prefix)}
            wrong = manifest.check_listing(found, listed)
            if wrong:
                problems[task_id] = f"{len(wrong)} output file(s) lost or changed, e.g. {wrong[0]}"
            else:
                manifests[task_id] = found
    if problems:
        raise LostOutputs(problems)
    return manifests


def _rerun_lost(ctx: Context, run: RunRecord, problems: Mapping[str, str], assemble) -> dict | str:
    """Run the tasks whose outputs were lost again (the run goes back to running), or, once a
    task has spent its INFRA_RETRIES, fail the run saying which task's output was lost and how."""
    budget = ctx.settings.infra_retries
    spent = sorted(t for t in problems if run.infra_retries.get(t, 0) >= budget)
    if spent:
        first = spent[0]
        return assemble(Merged(failure=f"the output of task {first} was lost: {problems[first]} (after {budget} "
                                        f"rerun(s)); {len(problems)} task(s) affected"))
    for task in sorted(problems):
        rerun = naming.attempt_id(task, run.reruns.get(task, 0) + 1)
        if not batch.rerun_task(ctx.batch, run.run_id, run.attempt(task), rerun):
            return assemble(Merged(failure=f"the output of task {task} was lost ({problems[task]}) and the task "
                                           f"could not run again: the Batch job no longer takes tasks"))
    ctx.runs.commit_retrying(run.run_id, lambda r: r.outputs_lost(problems))
    log.warning("outputs lost, tasks run again run_id=%s tasks=%d first=%s", run.run_id, len(problems),
                sorted(problems)[0])
    return RERUNNING


# ----------------------------------------------------------------------------- merging


def _merge(ctx: Context, run: RunRecord, succeeded: list[TaskOutcome], out_container: str,
           manifests: Mapping[str, Manifest]) -> Merged:
    """The merged output in results (committed once, each part checked against its manifest as it
    streams: LostOutputs before the commit when one differs), and every other file a succeeded
    task left in OUTPUT_DIR under results/<run>/tasks/<task>/."""
    if run.merge == "command":
        return _collect_merge_task(ctx, run, out_container)
    results, paths = ctx.settings.results_container, RunPaths(run.run_id)
    _keep_other_outputs(ctx, run, out_container, succeeded, manifests,
                        frozenset() if run.merge == "none" else frozenset({run.output_file}))
    if run.merge == "none":
        return Merged(output=f"{results}/{paths.tasks}", verified=len(manifests))
    ext = run.output_extension or "bin"
    parts = [(t.task_id, manifests[t.task_id].get(run.output_file)) for t in succeeded]
    wrote = [(task, entry) for task, entry in parts if entry is not None]
    names = [naming.task_outputs(task) + run.output_file for task, _ in wrote]
    sources = (manifest.verify_stream(chunks, entry, task=task) for chunks, (task, entry)
               in zip(_sources(ctx, out_container, names), wrote, strict=True))
    try:
        committed = storage.commit_stream(ctx.blobs, results, paths.output(ext), merge.merge_stream(run.merge, sources))
    except manifest.OutputMismatch as e:
        raise LostOutputs({e.task: str(e)}) from None
    return Merged(output=f"{results}/{paths.output(ext)}", output_bytes=committed.size,
                  output_sha256=committed.sha256, output_md5=committed.md5,
                  missing=tuple(task for task, entry in parts if entry is None), verified=len(manifests))


def _keep_other_outputs(ctx: Context, run: RunRecord, out_container: str, succeeded: list[TaskOutcome],
                        manifests: Mapping[str, Manifest], merged: frozenset[str]) -> None:
    """Copy what each manifest lists (files a task's earlier, failed tries left are not listed)."""
    paths = RunPaths(run.run_id)
    for t in succeeded:
        prefix = naming.task_outputs(t.task_id)
        for entry in manifests[t.task_id].entries:
            if entry.path not in merged:
                storage.copy_blob(ctx.blobs, out_container, prefix + entry.path, ctx.settings.results_container,
                                  paths.task_prefix(t.task_id) + entry.path)


def _sources(ctx: Context, container: str, blob_names: list[str], ahead: int = 8) -> Iterator[Iterator[bytes]]:
    """Each task output as a stream, in the order given (see storage.stream_blobs)."""
    return storage.stream_blobs(ctx.blobs, container, blob_names, ahead)


def _start_merge_task(ctx: Context, run: RunRecord) -> bool:
    """Add the user's merge task (once), and seal the job: it ends (with its pool) when the merge
    task does. Returns False when it was started and must be waited for, True when it cannot run
    (the job ended) and the report can be written now."""
    if run.job_ended:
        return True  # no task can be added to an ended job; the report says why
    _, out_container = work_containers(ctx, run.run_id)
    plan = jobplan.plan_merge_task(run, out_container, storage.SasMinter(ctx.blobs), ctx.clock())
    try:
        batch.add_task(ctx.batch, run.run_id, batch.merge_task_model(plan))
        batch.seal_job(ctx.batch, run.run_id)
    except BatchError as e:
        if e.transient:
            raise
        # e.g. the job ended meanwhile: record why, and report instead of merging
        reason = f"the merge task could not be added: {e}"
        ctx.runs.commit_retrying(run.run_id, lambda r: r.merge_task_refused(reason))
        return True
    # the next finalize (after the monitor saw the merge task finish) collects the result
    ctx.runs.commit_retrying(run.run_id, lambda r: r.merge_task_started(ctx.clock()))
    log.info("merge task started run_id=%s", run.run_id)
    return False


def _collect_merge_task(ctx: Context, run: RunRecord, out_container: str) -> Merged:
    task = batch.get_task(ctx.batch, run.run_id, batch.MERGE_TASK_ID)
    outcome = outcome_of(task) if task is not None else None
    if outcome is None and run.job_ended:
        return Merged(recombined=True, failure=f"nothing was merged: {run.job_ended}")
    if outcome is None or not outcome.succeeded:
        entry = outcome.as_report() if outcome else {"task_id": batch.MERGE_TASK_ID, "outcome": "failed"}
        entry["stderr_tail"] = _keep_failure_logs(ctx, out_container, run.run_id, batch.MERGE_TASK_ID)
        return Merged(recombined=True, merge_task=entry, failure=report.MERGE_FAILED)
    results, target = ctx.settings.results_container, RunPaths(run.run_id).output(run.output_extension or "bin")
    size = storage.copy_blob(ctx.blobs, out_container, naming.merged_output(run.output_file), results, target)
    return Merged(recombined=True, merge_task=outcome.as_report(), output=f"{results}/{target}", output_bytes=size)


def _keep_failure_logs(ctx: Context, out_container: str, run_id: str, task_id: str) -> str | None:
    """Copy the last LOG_COPY_BYTES of a failed task's stdout/stderr into results/<run>/tasks/<task>/
    and return the last STDERR_TAIL_BYTES of its stderr for the report.

    Whatever the task printed, results get at most LOG_COPY_BYTES (plus one line saying what was
    cut) per file and memory holds at most one such tail. Copies and tail are scrubbed: a task may
    print a URL it was given."""
    prefix = naming.task_logs(task_id)
    for name in storage.blob_names(ctx.blobs, out_container, prefix):
        _copy_log_tail(ctx, out_container, name, RunPaths(run_id).task_prefix(task_id) + name[len(prefix):])
    tail = _log_tail(ctx, out_container, f"{prefix}stderr.txt", STDERR_TAIL_BYTES)
    return tail.data.decode("utf-8", errors="replace") if tail is not None else None


@dataclass(frozen=True)
class LogTail:
    data: bytes  # scrubbed
    size: int  # of the whole log
    kept: int  # bytes of the log that `data` is made from (the last ones)


def _log_tail(ctx: Context, container: str, name: str, max_bytes: int) -> LogTail | None:
    """The scrubbed last `max_bytes` (at most) of a log blob, or None if there is none. One ranged read."""
    found = storage.read_last(ctx.blobs, container, name, max_bytes + storage.SECRET_CONTEXT_BYTES)
    if found is None:
        return None
    raw, size = found
    data, start = storage.scrub_tail(raw, max(0, len(raw) - max_bytes))
    return LogTail(data, size, len(raw) - start)


def _copy_log_tail(ctx: Context, container: str, name: str, target: str) -> None:
    """One Put Blob of the log's tail, first saying what was cut when the log was longer."""
    tail = _log_tail(ctx, container, name, LOG_COPY_BYTES)
    if tail is None:
        return  # gone meanwhile (a finalize that finished first deleted the work container)
    cut = tail.size - tail.kept
    header = (f"[batchdrop: the first {cut:,} bytes of {tail.size:,} were cut; this is the last {tail.kept:,}]\n"
              .encode() if cut else b"")
    storage.put_blob(ctx.blobs, ctx.settings.results_container, target, header + tail.data)

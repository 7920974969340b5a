"""Reruns (`{"rerun": "<run id>"}`): a new run of an ended run's job that runs only the tasks that
did not succeed and reuses the outputs of those that did.

Which tasks succeeded is read from the ended run's output container, which a run that ended with
tasks that did not all succeed keeps for KEEP_TASK_OUTPUTS_HOURS: a task's manifest is uploaded only
when it succeeded (shared.batch.task_body), so a task whose manifest is there and whose outputs
match it succeeded, whether the run failed fast, ended partial or was cancelled. At intake those
manifests and outputs are copied into the new run's output container; the new run submits the
other tasks under their own indices and ids (the job's TASK_COUNT is the original's), and its
finalize merges all of them in task order, as if they had run in one run. So a rerun stands on its
own: a rerun of it copies from it, whatever became of the first run.

The job is planned again from the ended run's kept job file (with the request's overrides), its
input pinned to the version the ended run split: a blob input whose ETag changed since, or an input
that makes another number of tasks, is refused (the shards would differ).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from shared import jobfile, manifest, naming, storage, task_outputs, threads
from shared.cleanup import work_containers
from shared.context import Context
from shared.errors import JobFileError
from shared.jobfile import BlobInput, JobSpec, RerunRequest
from shared.manifest import Manifest
from shared.runs import ACTIVE, REJECTED, SUCCEEDED, RunRecord, iso

__all__ = ["RerunPlan", "plan", "copy_reused", "skipped"]


@dataclass(frozen=True)
class RerunPlan:
    of: RunRecord  # the run rerun
    spec: JobSpec  # its job, with the request's overrides
    raw: bytes  # that job as a job file: what the new run keeps (its continuations and reruns read it)
    manifests: Mapping[str, Manifest]  # of the tasks that succeeded, whose outputs are reused
    reused: Mapping[str, str]  # task id -> the run that made its output (through a chain of reruns)

    @property
    def skip(self) -> frozenset[int]:
        return skipped(self.reused)


def skipped(reused: Mapping[str, str]) -> frozenset[int]:
    """The indices of the tasks a rerun does not submit."""
    return frozenset(naming.task_index(task) for task in reused)


def plan(ctx: Context, request: RerunRequest) -> RerunPlan:
    """What a rerun of `request.run_id` runs and reuses. JobFileError (field "rerun", or the field
    of an override that is not valid) when it cannot be rerun, saying why."""
    of = ctx.runs.try_read(request.run_id)
    _check_rerunnable(ctx, request.run_id, of)
    assert of is not None
    _, outputs = work_containers(ctx, of.run_id)
    kept = ctx.runs.kept_job_file(of.run_id)
    if not of.outputs_kept(ctx.clock()) or kept is None or not storage.container_exists(ctx.blobs, outputs):
        until = f" (until {iso(of.outputs_kept_until)})" if of.outputs_kept_until else ""
        raise JobFileError(f"run {of.run_id} can no longer be rerun: the task outputs of an ended run are kept "
                           f"KEEP_TASK_OUTPUTS_HOURS after it ended{until}, and its are gone; drop its job file "
                           f"again for a new run of all its tasks", field="rerun")
    raw = _with_overrides(kept, request.overrides)
    spec = jobfile.parse_intake_file(raw, blob_name=of.source.blob_name if of.source else "rerun.json",
                                     max_bytes=max(len(raw), ctx.settings.max_job_file_bytes),
                                     policy=jobfile.ReadPolicy.from_settings(ctx.settings))
    if not isinstance(spec, JobSpec):
        raise JobFileError(f"the job file kept for run {of.run_id} is not a job", field="rerun")
    _check_input_unchanged(ctx, of, spec)
    manifests = _succeeded(ctx, of, outputs)
    return RerunPlan(of, spec, raw, manifests, {task: of.reused.get(task, of.run_id) for task in manifests})


def copy_reused(ctx: Context, run_id: str, rerun: RerunPlan) -> None:
    """Copy the reused tasks' manifests and outputs into the new run's output container
    (idempotent: the same blobs again)."""
    _, source = work_containers(ctx, rerun.of.run_id)
    _, target = work_containers(ctx, run_id)
    storage.ensure_container(ctx.blobs, target, metadata={naming.WORK_METADATA: run_id})
    names = [naming.task_manifest(task) for task in rerun.manifests]
    names += [naming.task_outputs(task) + entry.path for task, found in rerun.manifests.items()
              for entry in found.entries]
    threads.map_all("reuse", ctx.settings.upload_concurrency,
                    lambda name: storage.copy_blob(ctx.blobs, source, name, target, name), names)


def _check_rerunnable(ctx: Context, run_id: str, of: RunRecord | None) -> None:
    if of is None:
        raise JobFileError(f"there is no run {run_id!r}; use the folder name under "
                           f"{ctx.settings.results_container}/", field="rerun")
    if of.state in ACTIVE:
        raise JobFileError(f"run {run_id} is still {of.state}; rerun it once it has ended (or cancel it first)",
                           field="rerun")
    if of.state == REJECTED:
        raise JobFileError(f"run {run_id} was rejected, so none of its tasks ran; fix its job file (see its "
                           f"error.json) and drop it again", field="rerun")
    if of.state == SUCCEEDED and of.tasks.succeeded >= of.tasks.total:
        raise JobFileError(f"run {run_id} succeeded with every task; there is nothing to rerun", field="rerun")
    if of.tasks.total == 0:
        raise JobFileError(f"run {run_id} ended ({of.state}) before its tasks were made; drop its job file again",
                           field="rerun")


def _with_overrides(kept: bytes, overrides: Mapping[str, object]) -> bytes:
    doc = json.loads(kept.decode("utf-8-sig"))
    doc.update(overrides)
    return json.dumps(doc).encode("utf-8")


def _check_input_unchanged(ctx: Context, of: RunRecord, spec: JobSpec) -> None:
    if not isinstance(spec.input, BlobInput):
        return  # items are in the job file; a prefix is checked by its number of tasks (shared.accept)
    blob = spec.input.blob
    info = storage.blob_info(ctx.blobs, blob.container, blob.path, "input.blob")
    if of.input_etag is None or info.etag.strip('"') != of.input_etag.strip('"'):
        raise JobFileError(f"the input of run {of.run_id} changed since it ran ('{blob.container}/{blob.path}' "
                           f"is another version), so its tasks' inputs would differ; drop the job file again for "
                           f"a new run", field="rerun")


def _succeeded(ctx: Context, of: RunRecord, outputs: str) -> dict[str, Manifest]:
    """Task id -> manifest of each task of `of` that succeeded and whose outputs are all there as
    its manifest lists them (an output lost since: the task runs again), in task order."""
    sizes = task_outputs.listed_sizes(ctx, outputs)
    tasks = [name[len("manifests/"):-len(".txt")] for name in storage.blob_names(ctx.blobs, outputs, "manifests/")]
    tasks = [t for t in tasks if t == naming.task_id(naming.task_index(t)) and naming.task_index(t) < of.tasks.total]

    def read(task: str) -> tuple[str, Manifest | None]:
        data = storage.read_optional(ctx.blobs, outputs, naming.task_manifest(task))
        try:
            found = manifest.parse(data) if data is not None else None
        except manifest.ManifestError:
            return task, None
        if found is None:
            return task, None
        return task, None if manifest.check_listing(found, sizes.get(task, {})) else found

    return {task: found for task, found in threads.map_all("manifest", ctx.settings.upload_concurrency, read,
                                                           sorted(tasks)) if found is not None}

"""report.json, assembled from the tasks' outcomes and what merging produced (pure).

finalize gathers the facts (the tasks, their stderr tails, the merge's result); the functions
here decide the run's outcome and write it down, so every case is tested without services.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import naming
from shared.runs import FAILED, SUCCEEDED, RunRecord, TaskCounts, fails_run, iso, iso_ms, parse_time
from shared.storage import scrub

MERGE_FAILED = "the merge task failed; see report.json (merge_task) for its stderr"


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    index: int
    succeeded: bool
    exit_code: int | None
    retries: int
    requeues: int
    duration_s: float | None
    failure: dict | None
    start_time: str | None = None  # of the last try, ISO UTC
    end_time: str | None = None
    node_id: str | None = None  # where the last try ran
    attempt: str | None = None  # the Batch task id when it is a rerun (naming.attempt_id)
    reused_from: str | None = None  # a rerun's task not run again: the run whose output it reuses

    @property
    def stopped(self) -> bool:
        """Still waiting or running when the run stopped: not counted as failed."""
        return self.failure is not None and self.failure["category"] == "incomplete"

    def as_report(self) -> dict:
        entry = {"task_id": self.task_id, "index": self.index, "outcome": "succeeded" if self.succeeded else "failed",
                 "exit_code": self.exit_code, "retries": self.retries, "requeues": self.requeues,
                 "duration_s": self.duration_s, "tries": self.retries + 1, "start_time": self.start_time,
                 "end_time": self.end_time, "node_id": self.node_id}
        if self.attempt:
            entry["attempt"] = self.attempt
        if self.reused_from:
            entry["reused_from"] = self.reused_from
        if self.failure:
            entry["failure"] = self.failure
        return entry


def outcome_of(task: Mapping[str, Any]) -> TaskOutcome:
    """A Batch task's outcome, read from the task as the REST API returns it (camelCase JSON; the
    SDK's task models are such mappings too). Success is exit 0 *and* no failure info: Batch
    completes a task whose output upload failed with failureInfo set even when its command exited 0."""
    info = task.get("executionInfo") or {}
    exit_code = info.get("exitCode")
    failure = None
    if f := info.get("failureInfo"):
        failure = {"category": f.get("category"), "code": f.get("code"), "message": scrub(f.get("message") or "")}
    start = parse_time(info["startTime"]) if info.get("startTime") else None
    end = parse_time(info["endTime"]) if info.get("endTime") else None
    duration = round((end - start).total_seconds(), 3) if start and end else None
    state = task.get("state")
    succeeded = state == "completed" and exit_code == 0 and failure is None
    if state != "completed" and failure is None:
        failure = {"category": "incomplete", "code": "TaskNotCompleted",
                   "message": f"the task was still {state} when the run ended"}
    task_id = task["id"]
    base = naming.base_task_id(task_id)
    return TaskOutcome(base, naming.task_index(task_id), succeeded, exit_code,
                       info.get("retryCount") or 0, info.get("requeueCount") or 0, duration, failure,
                       start_time=iso_ms(start) if start else None, end_time=iso_ms(end) if end else None,
                       node_id=(task.get("nodeInfo") or {}).get("nodeId"),
                       attempt=task_id if task_id != base else None)


def reused_outcome(task_id: str, source: str) -> TaskOutcome:
    """A rerun's task that succeeded in run `source` and was not run again (shared.rerun)."""
    return TaskOutcome(task_id, naming.task_index(task_id), True, 0, 0, 0, None, None, reused_from=source)


@dataclass(frozen=True)
class Merged:
    """What merging produced, for the report. `failure` says why nothing could be merged (the
    run then fails); `merge_task` is the user's merge task's entry when it ran."""

    output: str | None = None  # "<results>/<run>/output.<ext>", or ".../tasks/" for merge "none"
    output_bytes: int | None = None
    missing: tuple[str, ...] = ()  # succeeded tasks that wrote no output file (their manifests say so)
    output_sha256: str | None = None  # of the merged output, as written
    output_md5: str | None = None  # base64, also the blob's Content-MD5
    verified: int = 0  # task outputs checked against their manifests before merging
    merge_task: dict | None = None
    failure: str | None = None
    recombined: bool = False  # by the user's merge task


def must_fail(run: RunRecord, tasks: Sequence[TaskOutcome]) -> bool:
    """Nothing to merge: no task succeeded, or one failed under on_task_failure "fail"."""
    failed = sum(1 for t in tasks if not t.succeeded)
    return failed == len(tasks) or fails_run(run.on_task_failure, failed)


def assemble(run: RunRecord, tasks: Sequence[TaskOutcome], *, stderr_tails: Mapping[str, str | None],
             container_execution: str | None, merged: Merged | None, now: datetime) -> dict:
    """The report of a run whose tasks are `tasks` (in task order; each failed task with its
    stderr tail), merged as `merged` (None: nothing was merged because the run fails)."""
    report = _head(run, tasks, stderr_tails, container_execution)
    failed = [t for t in tasks if not t.succeeded]
    if merged is None:
        report.update(state=FAILED, error=failure_reason(tasks, run.job_ended))
    elif merged.recombined:
        _recombined(report, merged, failed)
    elif merged.failure:
        report.update(state=FAILED, error=merged.failure)  # e.g. a lost output no rerun brought back
    else:
        _merged(report, merged, run.output_file, failed)
    report["timings"] = timings(run, now)
    # apart from each task's own retries (for its exit code: entries[].retries)
    report["infrastructure_retries"] = sum(run.infra_retries.values())
    report["output_reruns"] = sum(run.reruns.values())
    report["redrives"] = dict(run.redrives)
    return report


def _head(run: RunRecord, tasks: Sequence[TaskOutcome], stderr_tails: Mapping[str, str | None],
          container_execution: str | None) -> dict:
    entries = []
    for t in tasks:
        entry = t.as_report()
        if not t.succeeded:
            entry["stderr_tail"] = stderr_tails.get(t.task_id)
        entries.append(entry)
    for entry in entries:
        if run.infra_retries.get(entry["task_id"]):
            entry["infra_retries"] = run.infra_retries[entry["task_id"]]
    report: dict[str, Any] = {"run_id": run.run_id, "tasks": counts(tasks).to_json(), "entries": entries,
                              "warnings": [run.job_ended] if run.job_ended else []}
    if container_execution:
        report["container_execution"] = container_execution
    if run.rerun_of:
        report["rerun_of"] = run.rerun_of
        report["reused"] = sum(1 for t in tasks if t.reused_from)
    return report


def counts(tasks: Sequence[TaskOutcome]) -> TaskCounts:
    """Final counts: tasks that never finished are `stopped`, not `failed`."""
    stopped = sum(1 for t in tasks if t.stopped)
    succeeded = sum(1 for t in tasks if t.succeeded)
    return TaskCounts(total=len(tasks), succeeded=succeeded, failed=len(tasks) - succeeded - stopped, stopped=stopped)


def _recombined(report: dict, merged: Merged, failed: list[TaskOutcome]) -> None:
    if merged.merge_task is not None:
        report["merge_task"] = merged.merge_task
    if merged.failure:
        report.update(state=FAILED, error=merged.failure)
        return
    report.update(state=SUCCEEDED, output=merged.output, output_bytes=merged.output_bytes)
    if failed:
        report["warnings"].append(f"partial result: {len(failed)} task(s) failed and were not merged")


def _merged(report: dict, merged: Merged, output_file: str, failed: list[TaskOutcome]) -> None:
    if merged.missing:
        report["warnings"].append(f"{len(merged.missing)} succeeded task(s) wrote no {output_file}: "
                                  f"{', '.join(merged.missing[:20])}")
    report["output"] = merged.output
    if merged.output_bytes is not None:
        report["output_bytes"] = merged.output_bytes
    if merged.output_sha256 is not None:
        report["output_sha256"], report["output_md5"] = merged.output_sha256, merged.output_md5
    report["outputs_verified"] = merged.verified
    report["state"] = SUCCEEDED
    if failed:
        report["warnings"].append(f"partial result: {len(failed)} task(s) did not succeed and are not in the output")


def failure_reason(tasks: Sequence[TaskOutcome], job_ended: str | None) -> str:
    """One line for status.json's "error": how many failed, the first real failure, and why the
    job ended early if it did."""
    if not tasks:
        return "the job had no tasks"
    final = counts(tasks)
    reason = f"{final.failed} of {len(tasks)} tasks failed"
    if final.stopped:
        reason += f" ({final.stopped} more stopped before they finished)"
    first = next((t for t in tasks if not t.succeeded and not t.stopped), None)
    if first:
        reason += f"; first: {first.task_id} (exit code {first.exit_code}"
        reason += f", {first.failure['code']})" if first.failure else ")"
    if job_ended:
        reason += f"; {job_ended}"
    return reason + "; see report.json for each task's stderr"


def timings(run: RunRecord, now: datetime) -> dict:
    out: dict[str, Any] = {"created_at": iso(run.created_at) if run.created_at else None,
                           "submitted_at": iso(run.submitted_at) if run.submitted_at else None,
                           "merged_at": iso(now)}
    if run.created_at:
        out["wall_s"] = round((now - run.created_at).total_seconds(), 3)
    return out

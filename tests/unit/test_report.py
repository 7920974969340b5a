"""report.json from the tasks' outcomes and what merging produced, without services."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.jobfile import parse_job_file
from shared.report import MERGE_FAILED, Merged, TaskOutcome, assemble, must_fail, outcome_of
from shared.runs import JobFileVersion, RunRecord

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def run(**job) -> RunRecord:
    doc = {"command": "true", "input": {"items": [1, 2, 3]}, **job}
    spec = parse_job_file(json.dumps(doc).encode(), blob_name="j.json")
    accepted = RunRecord.accepted("j-0123456789abcdef", spec, JobFileVersion("intake", "j.json", "1"), None)
    return accepted.created(T0).running(3, T0 + timedelta(seconds=5)).finalize_requested(T0)


def ok(i: int) -> TaskOutcome:
    return TaskOutcome(f"t{i:06d}", i, True, 0, 0, 0, 1.5, None)


def bad(i: int, code: int = 3) -> TaskOutcome:
    return TaskOutcome(f"t{i:06d}", i, False, code, 2, 0, 0.5,
                       {"category": "usererror", "code": "FailureExitCode", "message": "exit"})


def stopped(i: int) -> TaskOutcome:
    return TaskOutcome(f"t{i:06d}", i, False, None, 0, 0, None,
                       {"category": "incomplete", "code": "TaskNotCompleted", "message": "still running"})


def report(r, tasks, merged, **kw):
    return assemble(r, tasks, stderr_tails=kw.pop("tails", {}), container_execution=kw.pop("mode", None),
                    merged=merged, now=T0 + timedelta(seconds=70.25))


def test_a_merged_run_in_the_documented_order():
    out = report(run(), [ok(0), ok(1), ok(2)], Merged(output="results/j/output.jsonl", output_bytes=6), mode="host")
    assert list(out) == ["run_id", "tasks", "entries", "warnings", "container_execution", "output", "output_bytes",
                         "outputs_verified", "state", "timings", "infrastructure_retries", "output_reruns", "redrives"]
    assert (out["infrastructure_retries"], out["output_reruns"], out["redrives"]) == (0, 0, {})
    assert out["tasks"] == {"total": 3, "active": 0, "running": 0, "succeeded": 3, "failed": 0}
    assert out["state"] == "succeeded" and out["warnings"] == []
    assert out["timings"] == {"created_at": "2026-11-28T10:00:00Z", "submitted_at": "2026-11-28T10:00:05Z",
                              "merged_at": "2026-11-28T10:01:10Z", "wall_s": 70.25}


def test_fail_fast_counts_stopped_tasks_apart_and_names_the_first_failure():
    tasks = [stopped(0), bad(1), stopped(2)]
    assert must_fail(run(), tasks)
    out = report(run(), tasks, None, tails={"t000001": "boom"})
    assert out["state"] == "failed"
    assert out["tasks"]["failed"] == 1 and out["tasks"]["stopped"] == 2
    assert out["error"] == ("1 of 3 tasks failed (2 more stopped before they finished); first: t000001 (exit code 3, "
                            "FailureExitCode); see report.json for each task's stderr")
    assert [e.get("stderr_tail") for e in out["entries"]] == [None, "boom", None]
    assert "stderr_tail" in out["entries"][0]  # every failed task has the key, null when there was no stderr


def test_partial_merge_warns_about_missing_outputs_then_the_partial_result():
    r = run(on_task_failure="partial")
    tasks = [ok(0), bad(1), ok(2)]
    assert not must_fail(r, tasks)
    out = report(r, tasks, Merged(output="results/j/output.jsonl", output_bytes=2, missing=("t000002",)))
    assert out["warnings"] == ["1 succeeded task(s) wrote no output.jsonl: t000002",
                               "partial result: 1 task(s) did not succeed and are not in the output"]


def test_merge_none_has_no_output_bytes():
    out = report(run(merge="none"), [ok(0)], Merged(output="results/j/tasks/"))
    assert out["output"] == "results/j/tasks/" and "output_bytes" not in out


def test_the_users_merge_task():
    r = run(merge={"command": "sort"}, on_task_failure="partial")
    merged = Merged(recombined=True, merge_task={"task_id": "merge"}, output="o", output_bytes=1)
    done = report(r, [ok(0), bad(1)], merged)
    assert list(done)[-8:] == ["merge_task", "state", "output", "output_bytes", "timings", "infrastructure_retries",
                               "output_reruns", "redrives"]
    assert done["warnings"] == ["partial result: 1 task(s) failed and were not merged"]
    failed = report(r, [ok(0)], Merged(recombined=True, merge_task={"task_id": "merge"}, failure=MERGE_FAILED))
    assert failed["state"] == "failed" and failed["error"] == MERGE_FAILED


def test_a_job_that_ended_early_is_the_first_warning_and_ends_the_reason():
    r = run().job_looked_at(T0, "the Batch job ended (terminated) before all its tasks ran")
    out = report(r, [ok(0), stopped(1)], None)
    assert out["warnings"] == [r.job_ended] and out["error"].endswith(f"; {r.job_ended}; see report.json for each "
                                                                       f"task's stderr")
    assert report(r, [], None)["error"] == "the job had no tasks"


def task_json(task_id: str, state: str, failure: dict | None = None, with_info: bool = True) -> dict:
    """A Batch task as the REST API lists it (the fields the report reads)."""
    task: dict = {"id": task_id, "state": state}
    if with_info:
        task["executionInfo"] = {"exitCode": 0, "retryCount": 0, "requeueCount": 1, "failureInfo": failure,
                                 "startTime": "2026-01-02T03:04:05.1234567Z", "endTime": "2026-01-02T03:04:07.1234567Z"}
        task["nodeInfo"] = {"nodeId": "tvmps_1"}
    return task


UPLOAD_FAILED = {"category": "servererror", "code": "FileUploadFailed",
                 "message": "upload to https://a/c?sig=SECRET failed"}


def test_exit_zero_with_failure_info_is_a_failure_and_an_unfinished_task_is_stopped():
    upload_failed = outcome_of(task_json("t000004", "completed", UPLOAD_FAILED))
    assert not upload_failed.succeeded and upload_failed.index == 4 and upload_failed.requeues == 1
    assert "SECRET" not in upload_failed.failure["message"]
    ok_task = outcome_of(task_json("t000000", "completed"))
    assert ok_task.succeeded and ok_task.duration_s == 2.0 and ok_task.node_id == "tvmps_1"
    assert (ok_task.start_time, ok_task.end_time) == ("2026-01-02T03:04:05.123Z", "2026-01-02T03:04:07.123Z")
    running = outcome_of(task_json("merge", "running", with_info=False))
    assert running.stopped and running.index == -1 and running.duration_s is None


def test_infrastructure_retries_and_reruns_are_counted_apart_from_the_tasks_own_retries():
    r = replace(run(), infra_retries={"t000001": 2}, reruns={"t000001": 1}, redrives={"finalize": 1})
    out = report(r, [ok(0), ok(1)], Merged(output="results/j/output.jsonl", output_bytes=6, output_sha256="ab" * 32,
                                          output_md5="md5==", verified=2))
    assert out["infrastructure_retries"] == 2 and out["output_reruns"] == 1 and out["redrives"] == {"finalize": 1}
    assert [e.get("infra_retries") for e in out["entries"]] == [None, 2]
    assert (out["output_sha256"], out["output_md5"], out["outputs_verified"]) == ("ab" * 32, "md5==", 2)


def test_an_output_lost_for_good_fails_the_run_with_the_reason():
    out = report(run(), [ok(0)], Merged(failure="the output of task t000000 was lost: its manifest was not uploaded"))
    assert out["state"] == "failed" and out["error"].startswith("the output of task t000000 was lost")

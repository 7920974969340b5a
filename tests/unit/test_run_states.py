"""The run record and its transitions, and the monitor's decision, without services."""
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.jobfile import parse_job_file
from shared.runs import (
    ACTIVE,
    JobFileVersion,
    RunRecord,
    TaskCounts,
    can_transition,
    iso,
    parse_time,
)
from shared.watch import decide

T0 = datetime(2026, 11, 28, 10, 15, 2, 345678, tzinfo=UTC)
SOURCE = JobFileVersion("intake", "jobs/heavy.json", '"0x8D1"')


@pytest.mark.parametrize("a, b, ok", [
    ("accepted", "running", True), ("accepted", "rejected", True), ("running", "merging", True),
    ("merging", "succeeded", True), ("merging", "failed", True), ("running", "cancelled", True),
    ("succeeded", "running", False), ("rejected", "accepted", False), ("running", "succeeded", False),
    ("merging", "running", True), ("failed", "failed", True), ("merging", "cancelled", False),
])
def test_transitions(a, b, ok):
    assert can_transition(a, b) is ok


def counts(total, succeeded=0, failed=0, running=0):
    return TaskCounts(total=total, active=total - succeeded - failed - running, running=running,
                      succeeded=succeeded, failed=failed)


def test_done_only_when_every_task_finished():
    assert not decide(counts(3, succeeded=2, running=1), "fail").done
    assert decide(counts(3, succeeded=3), "fail").done
    assert not decide(counts(0), "fail").done


def test_fail_policy_stops_at_the_first_failure_partial_waits():
    early = decide(counts(4, succeeded=1, failed=1, running=2), "fail")
    assert early.done and early.failed_fast
    assert not decide(counts(4, succeeded=1, failed=1, running=2), "partial").done
    assert decide(counts(4, succeeded=3, failed=1), "partial").done


def accepted(**job) -> RunRecord:
    doc = {"command": "true", "input": {"items": [1, 2]}, **job}
    spec = parse_job_file(json.dumps(doc).encode(), blob_name="jobs/heavy.json")
    return RunRecord.accepted("heavy-0123456789abcdef", spec, SOURCE, None).created(T0)


def stored(run: RunRecord) -> RunRecord:
    """As a later reader sees it: the bytes written, read back."""
    return RunRecord.from_json(json.loads(json.dumps(run.to_json())), etag="e")


# status.json as the dict-based code wrote it along a whole successful run, key order included (plus the
# submission's cursor, `submitted` and `last_submitted_at`, added with submission in chunks)
LEGACY = {
    "run_id": "heavy-0123456789abcdef", "name": "heavy", "job_file": "intake/jobs/heavy.json",
    "job_file_etag": "0x8D1", "state": "succeeded",
    "tasks": {"total": 2, "active": 0, "running": 0, "succeeded": 2, "failed": 0},
    "merge": "jsonl", "on_task_failure": "fail", "output_extension": "jsonl", "task_output": "output.jsonl",
    "pool": "auto", "task_timeout_minutes": 60, "created_at": "2026-11-28T10:15:02Z",
    "updated_at": "2026-11-28T10:20:02Z", "submitted_at": "2026-11-28T10:16:02Z",
    "submitted": 2, "last_submitted_at": "2026-11-28T10:16:02Z",
    "finalize_requested_at": "2026-11-28T10:17:02Z", "finalize_requests": 1,
    "finalize_attempts": 1, "finished_at": "2026-11-28T10:19:02Z",
    "output": "results/heavy-0123456789abcdef/output.jsonl",
}


def test_a_whole_run_writes_the_documented_layout_key_for_key():
    run = stored(accepted())
    run = stored(run.running(2, T0 + timedelta(minutes=1)))
    run = stored(run.progressed(counts(2, succeeded=2)).finalize_requested(T0 + timedelta(minutes=2)))
    run = stored(run.finalize_attempted())
    report = {"state": "succeeded", "tasks": counts(2, succeeded=2).to_json(), "output": LEGACY["output"]}
    run = stored(run.finished(report, T0 + timedelta(minutes=4)).touched(T0 + timedelta(minutes=5)))
    assert json.dumps(run.to_json()) == json.dumps(LEGACY)


def test_unknown_keys_and_nulls_are_kept_as_they_were():
    doc = {**LEGACY, "state": "merging", "finalize_claimed_at": None, "added_by_a_newer_version": {"x": [1]}}
    run = RunRecord.from_json(doc)
    assert run.extra["finalize_claimed_at"] is None  # written by older versions (claims are leases now)
    assert json.dumps(run.progressed(run.tasks).to_json()) == json.dumps(doc)


def test_a_rejected_job_file_and_an_ended_run():
    rejected = RunRecord.rejected_job_file("bad-0123456789abcdef", "bad", SOURCE, "command: required").created(T0)
    assert list(rejected.to_json()) == ["run_id", "name", "job_file", "job_file_etag", "state", "tasks", "error",
                                        "created_at", "updated_at"]
    run = accepted()
    assert run.ended("cancelled", "cancelled by intake/stop.json", only_from=ACTIVE).error.startswith("cancelled")
    assert run.running(2, T0).ended("failed", "x", only_from=frozenset({"accepted"})) is None


def test_transitions_apply_only_in_their_state():
    run = accepted()
    assert run.rejected("late", SOURCE).state == "rejected"
    assert run.rejected("late", JobFileVersion("intake", "other.json", "1")) is None  # another job file's run
    running = run.running(2, T0)
    assert running.running(2, T0) is None and running.rejected("late", SOURCE) is None
    assert running.finished({"state": "succeeded", "tasks": {}}, T0) is None  # not merging yet


def test_a_redrive_is_recorded_with_its_step_time_and_reason():
    run = stored(accepted().running(2, T0).finalize_requested(T0))
    at = datetime(2026, 11, 28, 10, 2, tzinfo=UTC)
    again = run.redriven("finalize", at, "no finalize was at work")
    assert again.finalize_requests == 2 and again.finalize_requested_at == at
    assert again.redrives == {"finalize": 1}
    assert again.last_redrive == {"step": "finalize", "at": "2026-11-28T10:02:00Z", "why": "no finalize was at work"}
    assert again.redriven("intake", T0, "x").redrives == {"finalize": 1, "intake": 1}
    assert stored(again).to_json()["redrives"] == {"finalize": 1}


def test_lost_outputs_send_the_run_back_to_running_with_one_retry_spent_per_task():
    run = stored(accepted().running(3, T0).finalize_requested(T0))
    back = run.outputs_lost({"t000001": "its manifest was not uploaded"})
    assert back.state == "running" and back.infra_retries == {"t000001": 1} and back.reruns == {"t000001": 1}
    assert back.attempt("t000001") == "t000001-r1" and back.attempt("t000000") == "t000000"
    assert back.superseded == 1
    assert back.outputs_lost({"t000001": "x"}) is None  # only from merging
    again = stored(back.finalize_requested(T0)).outputs_lost({"t000001": "x"})
    assert again.attempt("t000001") == "t000001-r2" and again.infra_retries == {"t000001": 2}


def test_retry_plans_are_stored_with_their_times():
    run = stored(accepted().running(3, T0))
    due = datetime(2026, 11, 28, 10, 0, 20, tzinfo=UTC)
    planned = stored(run.retries_planned({"t000002": 1}, {"t000002": due}))
    assert planned.to_json()["retry_waiting"] == {"t000002": "2026-11-28T10:00:20Z"}
    assert RunRecord.from_json(planned.to_json()).retry_waiting == {"t000002": due}


def test_merge_task_and_job_checks():
    run = accepted(merge={"command": "cat *"}, image="python:3.11-slim").running(1, T0)
    assert run.merge_command.image == "python:3.11-slim" and run.output_file == "output.bin"
    started = run.finalize_requested(T0).merge_task_started(T0)
    assert started.merge_task == "running" and started.merge_task_started(T0) is None
    assert started.merge_task_done(T0).redriven("finalize", T0, "x").finalize_requests == 2
    ended = run.job_looked_at(T0, "the Batch job ended (MaxWallClockTimeExpiry) before all its tasks ran")
    assert ended.state == "merging" and ended.job_checked_at == T0.replace(microsecond=0)
    assert run.job_looked_at(T0, None).state == "running"


def test_timestamps_have_one_format():
    assert iso(T0) == "2026-11-28T10:15:02Z" and parse_time("2026-11-28T10:15:02Z") == T0.replace(microsecond=0)
    assert TaskCounts.from_json({"total": 3, "stopped": 2}).to_json() == {
        "total": 3, "active": 0, "running": 0, "succeeded": 0, "failed": 0, "stopped": 2}


def test_node_samples_are_kept_only_when_they_change():
    run = stored(accepted().running(3, T0))
    t1, t2 = datetime(2026, 11, 28, 10, 1, tzinfo=UTC), datetime(2026, 11, 28, 10, 2, tzinfo=UTC)
    seen = run.nodes_seen(t1, "bd-pool", 2, 0)
    assert seen.nodes_seen(t2, "bd-pool", 2, 0) is seen  # unchanged: nothing to write
    both = seen.nodes_seen(t2, "bd-pool", 0, 0)
    assert both.pool_id == "bd-pool" and both.node_samples == (("2026-11-28T10:01:00.000Z", 2, 0),
                                                               ("2026-11-28T10:02:00.000Z", 0, 0))
    doc = stored(both).to_json()
    assert doc["node_samples"] == [["2026-11-28T10:01:00.000Z", 2, 0], ["2026-11-28T10:02:00.000Z", 0, 0]]
    assert RunRecord.from_json(doc).node_samples == both.node_samples


# ----------------------------------------------------------------------------- admission (issue 12)


@pytest.mark.parametrize("a, b, ok", [
    ("accepted", "queued", True), ("queued", "accepted", True), ("queued", "cancelled", True),
    ("queued", "failed", True), ("queued", "running", False), ("queued", "succeeded", False),
    ("running", "queued", False), ("merging", "queued", False), ("cancelled", "queued", False),
])
def test_queued_transitions(a, b, ok):
    assert can_transition(a, b) is ok


def test_a_queued_run_keeps_its_arrival_and_says_why_and_where():
    run = stored(accepted())
    queued = run.queued("Azure Batch quota reached (ActiveJobAndScheduleQuotaReached)")
    assert queued is not None and queued.state == "queued" and "queued" in ACTIVE
    assert queued.created_at == run.created_at  # its place in line: its arrival
    numbered = stored(queued.in_line_at(3))
    assert numbered.to_json()["queued_reason"].startswith("Azure Batch quota")
    assert numbered.to_json()["queue_position"] == 3
    admitted = numbered.admitted()
    assert admitted is not None and admitted.state == "accepted" and admitted.queue_position is None
    assert admitted.admissions == 1 and admitted.queued_reason == numbered.queued_reason
    again = stored(admitted).queued("refused again")
    assert again is not None and again.created_at == run.created_at and again.admissions == 1


def test_only_an_accepted_run_is_queued_and_only_a_queued_one_admitted():
    run = stored(accepted())
    assert run.admitted() is None
    running = run.running(2, T0)
    assert running is not None and running.queued("quota") is None
    assert running.ended("cancelled", "x", frozenset({"accepted", "queued", "running"})) is not None


def test_the_cursor_and_where_its_split_resumes_move_together_and_only_forward():
    first = {"offset": 4_000_000, "shard": 100, "have": 3, "counted": 0}
    run = accepted().running(500, T0, submitted=110, resume=first)
    assert (run.submitted, run.submit_resume) == (110, first)
    later = {"offset": 8_000_000, "shard": 200, "have": 0, "counted": 0}
    moved = run.submitted_through(210, T0 + timedelta(seconds=5), later)
    assert (moved.submitted, moved.submit_resume) == (210, later)
    # a chunk replayed after a crash reports an earlier cursor: neither goes back
    replayed = moved.submitted_through(110, T0 + timedelta(seconds=9), first)
    assert (replayed.submitted, replayed.submit_resume) == (210, later)
    assert RunRecord.from_json(json.loads(json.dumps(replayed.to_json()))).submit_resume == later

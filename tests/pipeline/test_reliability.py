"""The platform's at-least-once and crash semantics (../shared/docs/reliability.md), one test each."""
from __future__ import annotations

import json
import logging
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient, ContainerClient

from shared import accept as accept_module
from shared import finalize as finalize_module
from shared import merge as merge_module
from shared import storage
from shared.accept import accept
from shared.finalize import finalize
from shared.watch import watch
from tests.pipeline.helpers import (
    COPY,
    drain_finalize,
    drop,
    put_data,
    results_blob,
    run_to_end,
    status,
    wait_for,
    work_containers_left,
)


def job_ids(batch, run_id):
    return [j.id for j in batch.list_jobs() if j.id == run_id]


def task_ids(batch, run_id):
    return sorted(t.id for t in batch.list_tasks(run_id, select=["id"]))


def inject(emulator, job_id, task_id, fault, body=None):
    request = urllib.request.Request(
        f"{emulator.url}/_emulator/jobs/{job_id}/tasks/{task_id}/{fault}",
        data=json.dumps(body or {}).encode(), method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201, 202, 204)


def test_same_event_twice_one_after_the_other_is_one_job(ctx, batch):
    d = drop(ctx, "twice.json", {"command": COPY, "input": {"items": list(range(5))}})
    assert accept(ctx, d.container, d.name) == d.run_id
    assert accept(ctx, d.container, d.name) == d.run_id
    assert job_ids(batch, d.run_id) == [d.run_id]
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(5)]
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"


def test_same_event_twice_at_once_is_one_job_with_the_right_tasks(ctx, batch):
    d = drop(ctx, "atonce.json", {"command": COPY, "input": {"items": list(range(150))}})
    errors = []

    def deliver():
        try:
            accept(ctx, d.container, d.name)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert job_ids(batch, d.run_id) == [d.run_id]
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(150)]
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded" and final["tasks"]["total"] == 150


def test_reupload_with_new_content_is_a_new_run_and_leaves_the_old_results(ctx):
    first = drop(ctx, "again.json", {"command": COPY, "input": {"items": [1]}})
    accept(ctx, first.container, first.name)
    old = run_to_end(ctx, first.run_id)
    old_output = results_blob(ctx, f"{first.run_id}/output.jsonl")
    second = drop(ctx, "again.json", {"command": COPY, "input": {"items": [2]}})
    assert second.run_id != first.run_id
    accept(ctx, second.container, second.name)
    assert run_to_end(ctx, second.run_id)["state"] == "succeeded"
    assert results_blob(ctx, f"{second.run_id}/output.jsonl") == b"2\n"
    assert status(ctx, first.run_id) == old
    assert results_blob(ctx, f"{first.run_id}/output.jsonl") == old_output


def test_crash_after_some_tasks_were_added_then_retry_gives_exactly_the_right_tasks(ctx, batch, monkeypatch):
    d = drop(ctx, "crash.json", {"command": COPY, "input": {"items": list(range(250))}})
    real_add = accept_module.batch.add_tasks
    calls = {"n": 0}

    def add_then_crash(client, job_id, tasks):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("host died mid-submission")
        real_add(client, job_id, tasks)

    monkeypatch.setattr(accept_module.batch, "add_tasks", add_then_crash)
    with pytest.raises(ConnectionError):
        accept(ctx, d.container, d.name)
    # the first chunk (one round of uploads, one call) got the run going; the second died half-way
    first = ctx.settings.upload_concurrency
    assert (status(ctx, d.run_id)["state"], status(ctx, d.run_id)["submitted"]) == ("running", first)
    assert first <= len(task_ids(batch, d.run_id)) < 250
    monkeypatch.setattr(accept_module.batch, "add_tasks", real_add)
    accept(ctx, d.container, d.name)  # the trigger's retry
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(250)]
    final = run_to_end(ctx, d.run_id, deadline_s=120)
    assert final["state"] == "succeeded"
    assert [json.loads(x) for x in results_blob(ctx, f"{d.run_id}/output.jsonl").splitlines()] == list(range(250))


def test_two_monitors_at_once_request_one_finalize(ctx):
    d = drop(ctx, "monitors.json", {"command": COPY, "input": {"items": [1, 2]}})
    accept(ctx, d.container, d.name)
    wait_for(lambda: ctx.batch.get_job_task_counts(d.run_id).task_counts.completed == 2, what="tasks complete")
    barrier = threading.Barrier(2)
    outcomes = []

    def tick():
        barrier.wait()
        outcomes.append(watch(ctx).get(d.run_id))

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("finalize requested") == 1, outcomes
    assert drain_finalize(ctx) == 1
    assert status(ctx, d.run_id)["state"] == "succeeded"


def test_finalize_killed_half_way_then_retried_leaves_one_complete_output(ctx, monkeypatch):
    items = [{"i": i, "pad": "x" * 2000} for i in range(40)]
    d = drop(ctx, "killed.json", {"command": COPY, "input": {"items": items}, "items_per_task": 4})
    accept(ctx, d.container, d.name)
    wait_for(lambda: watch(ctx).get(d.run_id) == "finalize requested", timeout=60, interval=0.2,
             what="finalize requested")
    real_merge = merge_module.merge_stream

    def merge_then_die(kind, sources, carry=None):
        for n, chunk in enumerate(real_merge(kind, sources, carry)):
            if n == 3:
                raise RuntimeError("host killed during merge")
            yield chunk

    monkeypatch.setattr(merge_module, "merge_stream", merge_then_die)
    with pytest.raises(RuntimeError):
        finalize(ctx, d.run_id)
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") is None  # never a partial file
    assert status(ctx, d.run_id)["state"] == "merging"
    monkeypatch.setattr(merge_module, "merge_stream", real_merge)
    assert finalize(ctx, d.run_id) == "succeeded"
    assert finalize(ctx, d.run_id) == "succeeded"  # a duplicate message changes nothing
    merged = [json.loads(x) for x in results_blob(ctx, f"{d.run_id}/output.jsonl").splitlines()]
    assert merged == items


@pytest.mark.parametrize("raw, field, words", [
    (b"{not json", None, "JSON"),
    (json.dumps({"command": "true"}).encode(), "input", "required"),
    (json.dumps({"command": "true", "input": {"items": [1]}, "comand": 1}).encode(), "comand", "command"),
    (json.dumps({"command": "true", "input": {"items": [1]}, "retries": "3"}).encode(), "retries", "whole number"),
])
def test_malformed_job_file_is_rejected_and_nothing_is_created(ctx, batch, raw, field, words):
    d = drop(ctx, "bad.json", raw)
    run_id = accept(ctx, d.container, d.name)
    assert status(ctx, run_id)["state"] == "rejected"
    error = json.loads(results_blob(ctx, f"{run_id}/error.json"))
    assert error["field"] == field
    assert words in error["message"]
    assert job_ids(batch, run_id) == []
    assert work_containers_left(ctx) == []
    assert ctx.blobs.get_blob_client(d.container, d.name).download_blob().readall() == raw  # job file untouched


def test_a_new_rejected_run_has_its_error_json_before_its_status_says_rejected(ctx, monkeypatch):
    from shared.runs import RunStore

    real, seen = RunStore.create, []

    def create(self, run):
        seen.append((run.state, results_blob(ctx, f"{run.run_id}/error.json") is not None))
        return real(self, run)

    monkeypatch.setattr(RunStore, "create", create)
    d = drop(ctx, "early.json", b"{broken")
    accept(ctx, d.container, d.name)
    assert seen == [("rejected", True)]
    assert status(ctx, d.run_id)["state"] == "rejected"


def test_missing_input_blob_and_zero_tasks_are_rejected(ctx, batch):
    d = drop(ctx, "missing.json", {"command": COPY, "input": {"blob": f"{ctx.settings.data_container}/nope.jsonl"}})
    accept(ctx, d.container, d.name)
    error = json.loads(results_blob(ctx, f"{d.run_id}/error.json"))
    assert error["field"] == "input.blob" and "nope.jsonl" in error["message"]
    put_data(ctx, "empty.jsonl", b"\n\n")
    e = drop(ctx, "empty.json", {"command": COPY, "input": {"blob": f"{ctx.settings.data_container}/empty.jsonl"}})
    accept(ctx, e.container, e.name)
    assert status(ctx, e.run_id)["state"] == "rejected"
    assert "no records" in json.loads(results_blob(ctx, f"{e.run_id}/error.json"))["message"]
    assert job_ids(batch, d.run_id) == [] and job_ids(batch, e.run_id) == []
    assert work_containers_left(ctx) == []


def test_oversized_job_file_is_rejected(ctx):
    d = drop(ctx, "huge.json", b'{"command": "true", "input": {"items": [' + b"1," * 600_000 + b"1]}}")
    accept(ctx, d.container, d.name)
    error = json.loads(results_blob(ctx, f"{d.run_id}/error.json"))
    assert "limit" in error["message"]


def test_preempted_task_is_requeued_and_the_run_still_succeeds(ctx, batch, batch_emulator):
    d = drop(ctx, "preempt.json", {"command": 'sleep 1; ' + COPY, "input": {"items": [1, 2]}})
    accept(ctx, d.container, d.name)
    wait_for(lambda: batch.get_task(d.run_id, "t000000").state == "running", what="task running")
    inject(batch_emulator, d.run_id, "t000000", "preempt")
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded"
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    entry = report["entries"][0]
    assert entry["requeues"] >= 1 and entry["retries"] == 0


def test_exit_zero_but_output_upload_failed_is_an_infrastructure_failure_retried_within_its_budget(ctx, batch_emulator):
    """Batch completes such a task as failed (exit 0 with failure info) and never retries it; the
    monitor does, INFRA_RETRIES (3) times: two failed uploads cost two retries, the run succeeds."""
    d = drop(ctx, "upload.json", {"command": 'sleep 0.5; ' + COPY, "input": {"items": [1]}, "retries": 0})
    # the fault is registered by id before the task exists
    inject(batch_emulator, d.run_id, "t000000", "fail-upload", {"count": 2})
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded"
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert report["infrastructure_retries"] == 2 and report["entries"][0]["infra_retries"] == 2
    assert report["entries"][0]["retries"] == 0  # the task's own retries are counted apart


def test_an_output_upload_that_keeps_failing_fails_the_run_naming_the_task_and_cause(ctx, batch_emulator):
    d = drop(ctx, "upload2.json", {"command": 'sleep 0.2; ' + COPY, "input": {"items": [1]}, "retries": 0})
    inject(batch_emulator, d.run_id, "t000000", "fail-upload", {"count": -1})
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "failed"
    assert "t000000" in final["error"] and "FileUploadMiscError" in final["error"]
    entry = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))["entries"][0]
    assert entry["exit_code"] == 0 and entry["outcome"] == "failed" and entry["failure"]["code"] == "FileUploadMiscError"
    assert entry["infra_retries"] == 3


def test_a_users_own_failure_is_never_retried_by_the_infrastructure_budget(ctx, batch):
    d = drop(ctx, "exit3.json", {"command": "exit 3", "input": {"items": [1]}, "retries": 1})
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "failed"
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert report["infrastructure_retries"] == 0 and report["entries"][0]["retries"] == 1


def test_job_deleted_by_someone_else_cancels_the_run_and_cleans_up(ctx, batch):
    d = drop(ctx, "cancel.json", {"command": "sleep 30", "input": {"items": [1]}})
    accept(ctx, d.container, d.name)
    batch.begin_delete_job(d.run_id).result()
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "cancelled"
    assert work_containers_left(ctx) == []
    assert job_ids(batch, d.run_id) == []
    assert json.loads(results_blob(ctx, f"{d.run_id}/error.json"))["state"] == "cancelled"


def test_logs_at_debug_hold_no_secret(ctx, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("azure", "azure.core.pipeline.policies.http_logging_policy", "azure.storage", "azure.batch"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    d = drop(ctx, "secret.json", {"command": COPY, "input": {"items": [1, 2]}, "config": {"a": 1}})
    accept(ctx, d.container, d.name)
    run_to_end(ctx, d.run_id)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert len(caplog.records) > 20  # the SDKs really logged at DEBUG
    for needle in ("sig=", "AccountKey=", "SharedKey ", ctx.settings.batch.account_key.reveal()):
        assert needle not in text, f"{needle[:12]}... leaked into the logs"


def test_task_sas_grants_only_what_it_needs_and_expires(ctx, batch):
    d = drop(ctx, "sas.json", {"command": "sleep 20", "input": {"items": [1]}, "task_timeout_minutes": 5,
                               "retries": 0})
    accept(ctx, d.container, d.name)
    task = batch.get_task(d.run_id, "t000000")
    input_url = task.resource_files[0].http_url
    out_url = [o for o in task.output_files if o.file_pattern.startswith("output")][0].destination.container.container_url
    for url, expected in ((input_url, "r"), (out_url, "cw")):
        q = parse_qs(urlparse(url).query)
        assert "".join(sorted(q["sp"][0])) == "".join(sorted(expected))
        expiry = datetime.fromisoformat(q["se"][0].replace("Z", "+00:00"))
        assert timedelta(0) < expiry - datetime.now(UTC) < timedelta(hours=3)
    # read-only input: cannot be overwritten
    with pytest.raises(HttpResponseError):
        BlobClient.from_blob_url(input_url).upload_blob(b"tamper", overwrite=True)
    assert BlobClient.from_blob_url(input_url).download_blob().readall() == b"1\n"
    # write-only output: cannot be read or listed
    with pytest.raises(HttpResponseError):
        list(ContainerClient.from_container_url(out_url).list_blobs())
    BlobClient.from_blob_url(storage.blob_url(out_url, "probe.txt")).upload_blob(b"x")
    with pytest.raises(HttpResponseError):
        BlobClient.from_blob_url(storage.blob_url(out_url, "probe.txt")).download_blob().readall()
    batch.begin_delete_job(d.run_id).result()
    run_to_end(ctx, d.run_id)


def test_overlapping_finalizes_merge_once_and_never_replace_the_output(ctx, env):
    """A second finalize while the first holds its claim does nothing; once the first is gone (its
    lease broken, as an expired one is) the next finishes the run, and a late one changes nothing."""
    from azure.storage.blob import BlobLeaseClient

    from shared import claims, naming
    from tests.pipeline.helpers import build_context

    d = drop(ctx, "overlap.json", {"command": COPY, "input": {"items": [1, 2, 3]}})
    accept(ctx, d.container, d.name)
    wait_for(lambda: watch(ctx).get(d.run_id) == "finalize requested", timeout=60, interval=0.2,
             what="finalize requested")
    claim = ctx.blobs.get_blob_client(ctx.settings.control_container, naming.claim_blob(d.run_id, claims.FINALIZE))
    claim.upload_blob(b"", overwrite=True)
    lease = BlobLeaseClient(claim)
    lease.acquire(lease_duration=60)  # finalize #1 has claimed the run and is merging
    assert finalize(ctx, d.run_id) == "busy"
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") is None
    lease.break_lease(lease_break_period=0)  # #1 died: its claim is over
    late = build_context(env)
    assert finalize(late, d.run_id) == "succeeded"
    output = results_blob(ctx, f"{d.run_id}/output.jsonl")
    assert output == b"1\n2\n3\n"
    assert finalize(late, d.run_id) == "succeeded" and finalize(ctx, d.run_id) == "succeeded"
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") == output
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert report["output_bytes"] == len(output) and report["warnings"] == []
    assert [e[0] for e in ctx.events.events + late.events.events].count("succeeded") == 1


def test_run_is_monitored_even_if_intake_died_before_its_index_entry(ctx, monkeypatch):
    from shared.runs import RunStore

    d = drop(ctx, "nomarker.json", {"command": COPY, "input": {"items": [1]}})
    real_mark = RunStore.mark_active
    monkeypatch.setattr(RunStore, "mark_active", lambda self, run_id, *_: (_ for _ in ()).throw(ConnectionError("died")))
    with pytest.raises(ConnectionError):
        accept(ctx, d.container, d.name)
    monkeypatch.setattr(RunStore, "mark_active", real_mark)
    accept(ctx, d.container, d.name)  # the trigger's retry
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"


def test_intake_retry_after_all_tasks_finished_keeps_the_run(ctx, batch, monkeypatch):
    d = drop(ctx, "sealed.json", {"command": COPY, "input": {"items": [1, 2]}})
    calls = {"n": 0}
    from shared.runs import RunStore

    real = RunStore.start_running

    def die_before_running(self, run_id, total, submitted, resume=None):
        calls["n"] += 1
        raise ConnectionError("host died after adding the tasks")

    monkeypatch.setattr(RunStore, "start_running", die_before_running)
    with pytest.raises(ConnectionError):
        accept(ctx, d.container, d.name)
    monkeypatch.setattr(RunStore, "start_running", real)
    wait_for(lambda: all(t.state == "completed" for t in batch.list_tasks(d.run_id)), what="tasks completed")
    assert batch.get_job(d.run_id).state == "active"  # not sealed: a task failed by storage can still be reactivated
    accept(ctx, d.container, d.name)  # the retry finds the tasks all there and done
    assert status(ctx, d.run_id)["state"] == "running"
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    assert calls["n"] == 1


def test_job_that_ends_with_tasks_never_run_does_not_leave_the_run_running(ctx, env, batch):
    from shared.runs import utc_now
    from tests.pipeline.helpers import build_context

    d = drop(ctx, "ended.json", {"command": "sleep 30", "input": {"items": [1, 2, 3, 4, 5, 6]}, "retries": 0,
                                 "on_task_failure": "partial"})
    accept(ctx, d.container, d.name)
    batch.begin_terminate_job(d.run_id, options={"terminateReason": "user stop"}).result()
    watch(ctx)  # counts unchanged or not: a quiet run is checked only every 5 minutes
    later = build_context(env, clock=lambda: utc_now() + timedelta(minutes=6))
    final = run_to_end(later, d.run_id, deadline_s=30)
    assert final["state"] == "failed"
    assert "ended" in final["error"]
    assert work_containers_left(ctx) == []


def test_sweep_never_touches_a_user_container_that_shares_the_prefix(ctx, env):
    from shared.runs import utc_now
    from shared.sweep import sweep
    from tests.pipeline.helpers import build_context

    name = f"{ctx.settings.work_prefix}-archive"
    storage.ensure_container(ctx.blobs, name)
    ctx.blobs.get_blob_client(name, "precious.csv").upload_blob(b"keep me")
    sweep(build_context(env, clock=lambda: utc_now() + timedelta(days=30)))
    assert ctx.blobs.get_blob_client(name, "precious.csv").download_blob().readall() == b"keep me"


def test_long_command_does_not_overflow_the_add_task_body(ctx):
    command = 'cat "$INPUT_PATH" > "$OUTPUT_PATH"' + "; true" * 1500  # about 9 KB
    d = drop(ctx, "long.json", {"command": command, "input": {"items": list(range(100))}})
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id, deadline_s=90)["state"] == "succeeded"


def test_extra_files_in_output_dir_are_collected(ctx):
    d = drop(ctx, "extras.json", {"command": COPY + '; echo "log of $TASK_INDEX" > "$OUTPUT_DIR/notes.txt"',
                                   "input": {"items": [1, 2]}})
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") == b"1\n2\n"
    assert results_blob(ctx, f"{d.run_id}/tasks/t000001/notes.txt") == b"log of 1\n"


def _stale_accepted_read(monkeypatch):
    """Make the next delivery see the run as it was before the first delivery finished (as a
    delivery that read status.json a moment earlier would)."""
    from dataclasses import replace

    from shared.runs import RunStore

    real = RunStore.try_read
    calls = {"n": 0}

    def stale(self, run_id):
        run = real(self, run_id)
        calls["n"] += 1
        if calls["n"] == 1 and run is not None:
            return replace(run, state="accepted")
        return run

    monkeypatch.setattr(RunStore, "try_read", stale)


def test_a_slower_duplicate_delivery_leaves_the_running_run_alone(ctx, batch, monkeypatch):
    d = drop(ctx, "slowdup.json", {"command": "sleep 1; " + COPY, "input": {"items": [1, 2]}})
    accept(ctx, d.container, d.name)
    assert status(ctx, d.run_id)["state"] == "running"
    _stale_accepted_read(monkeypatch)
    accept(ctx, d.container, d.name)  # the duplicate finishes its split after the first delivery
    assert job_ids(batch, d.run_id) == [d.run_id]
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"


def test_a_late_job_file_error_in_a_duplicate_does_not_stop_the_running_run(ctx, batch, monkeypatch):
    ref = put_data(ctx, "ref/tool.txt", b"x")
    d = drop(ctx, "latedup.json", {"command": "sleep 1; " + COPY, "input": {"items": [1]},
                                   "resources": [{"blob": ref}]})
    accept(ctx, d.container, d.name)
    ctx.blobs.get_blob_client(ctx.settings.data_container, "ref/tool.txt").delete_blob()
    _stale_accepted_read(monkeypatch)
    accept(ctx, d.container, d.name)  # now finds the resource missing
    assert status(ctx, d.run_id)["state"] == "running"
    assert job_ids(batch, d.run_id) == [d.run_id]
    assert results_blob(ctx, f"{d.run_id}/error.json") is None


def test_input_replaced_between_intake_tries_fails_the_run_with_a_clear_reason(ctx, monkeypatch):
    blob = put_data(ctx, "moving.jsonl", b"1\n2\n")
    d = drop(ctx, "moving.json", {"command": COPY, "input": {"blob": blob}})
    real_add = accept_module.batch.add_tasks
    monkeypatch.setattr(accept_module.batch, "add_tasks",
                        lambda *a: (_ for _ in ()).throw(ConnectionError("host died")))
    with pytest.raises(ConnectionError):
        accept(ctx, d.container, d.name)
    monkeypatch.setattr(accept_module.batch, "add_tasks", real_add)
    put_data(ctx, "moving.jsonl", b"3\n4\n5\n")  # the user replaced the input meanwhile
    accept(ctx, d.container, d.name)
    final = status(ctx, d.run_id)
    assert final["state"] == "failed" and "input blob changed" in final["error"]
    assert work_containers_left(ctx) == []


def test_finalize_that_fails_starting_the_merge_task_lets_the_retry_in(ctx, monkeypatch):
    from shared.errors import BatchError

    d = drop(ctx, "mergeretry.json", {"command": COPY, "input": {"items": [2, 1]},
                                      "merge": {"command": 'cat "$OUTPUTS_DIR"/*/output.bin | sort > "$OUTPUT_PATH"'}})
    accept(ctx, d.container, d.name)
    wait_for(lambda: watch(ctx).get(d.run_id) == "finalize requested", timeout=60, interval=0.2,
             what="finalize requested")
    real = finalize_module.batch.add_tasks
    monkeypatch.setattr(finalize_module.batch, "add_tasks",
                        lambda *a: (_ for _ in ()).throw(BatchError("busy", code="ServerBusy", transient=True)))
    with pytest.raises(BatchError):
        finalize(ctx, d.run_id)
    monkeypatch.setattr(finalize_module.batch, "add_tasks", real)
    assert finalize(ctx, d.run_id) == "merging"  # the queue's retry is not turned away as "busy"
    drain_finalize(ctx)  # nothing else was queued meanwhile
    assert run_to_end(ctx, d.run_id, deadline_s=60)["state"] == "succeeded"
    assert results_blob(ctx, f"{d.run_id}/output.bin") == b"1\n2\n"

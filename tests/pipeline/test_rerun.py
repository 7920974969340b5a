"""Reruns ({"rerun": RUN}) through accept -> watch -> finalize against real Azurite and the real
emulator: only the tasks that did not succeed run again, the others' outputs are reused, and the
merged output is the one a clean run makes."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared import naming, storage
from shared.accept import accept
from shared.sweep import sweep
from tests.pipeline.helpers import COPY, build_context, drop, put_data, results_blob, run_to_end, settings_env, status

# fails (exit 3) for an input holding a marker; the fixed command copies every input
FAILS_ON = 'if grep -q "{marker}" "$INPUT_PATH"; then exit 3; fi; cat "$INPUT_PATH" > "$OUTPUT_PATH"'


@pytest.fixture
def env(azurite, batch_emulator):
    return {**settings_env(azurite, batch_emulator), "KEEP_TASK_OUTPUTS_HOURS": "72"}


def submitted_tasks(batch, run_id: str) -> list[str]:
    return sorted(t.id for t in batch.list_tasks(run_id))


def report_of(ctx, run_id: str) -> dict:
    return json.loads(results_blob(ctx, f"{run_id}/report.json"))


def rerun(ctx, name: str, request: dict) -> str:
    d = drop(ctx, name, request)
    run_id = accept(ctx, d.container, d.name)
    assert run_id is not None
    return run_id


def rejection(ctx, run_id: str) -> dict:
    assert status(ctx, run_id)["state"] == "rejected"
    return json.loads(results_blob(ctx, f"{run_id}/error.json"))


def test_partial_run_rerun_twice_runs_only_the_failed_tasks_and_merges_as_a_clean_run(ctx, batch):
    items = [{"n": i, "mark": "bad" if i in (1, 4) else "worse" if i == 6 else "ok"} for i in range(8)]
    job = {"name": "flaky", "command": FAILS_ON.format(marker="bad\\|worse"), "input": {"items": items},
           "on_task_failure": "partial", "retries": 0}
    d = drop(ctx, "flaky.json", job)
    accept(ctx, d.container, d.name)
    first = run_to_end(ctx, d.run_id)
    assert first["state"] == "succeeded" and first["tasks"]["failed"] == 3, first
    assert "outputs_kept_until" in first

    # still failing for "worse": only the 3 failed tasks run, 1 fails again
    second_id = rerun(ctx, "again.json", {"rerun": d.run_id, "command": FAILS_ON.format(marker="worse")})
    assert submitted_tasks(batch, second_id) == ["t000001", "t000004", "t000006"]
    second = run_to_end(ctx, second_id)
    assert second["rerun_of"] == d.run_id and second["tasks"]["total"] == 8 and second["tasks"]["failed"] == 1
    assert len(second["reused"]) == 5 and set(second["reused"].values()) == {d.run_id}

    # fixed: only the last failed task runs; the reuse resolves through the chain to where the bytes were made
    third_id = rerun(ctx, "fixed.json", {"rerun": second_id, "command": COPY})
    assert submitted_tasks(batch, third_id) == ["t000006"]
    third = run_to_end(ctx, third_id)
    assert third["state"] == "succeeded", third
    assert third["tasks"] == {"total": 8, "active": 0, "running": 0, "succeeded": 8, "failed": 0}
    report = report_of(ctx, third_id)
    assert report["rerun_of"] == second_id and report["reused"] == 7
    assert [e["task_id"] for e in report["entries"]] == [naming.task_id(i) for i in range(8)]
    assert {e["task_id"]: e.get("reused_from") for e in report["entries"]} == {
        "t000000": d.run_id, "t000001": second_id, "t000002": d.run_id, "t000003": d.run_id,
        "t000004": second_id, "t000005": d.run_id, "t000006": None, "t000007": d.run_id}
    assert "outputs_kept_until" not in third  # every task succeeded: nothing kept to rerun

    clean = drop(ctx, "clean.json", {**job, "name": "clean", "command": COPY})
    accept(ctx, clean.container, clean.name)
    assert run_to_end(ctx, clean.run_id)["state"] == "succeeded"
    merged = results_blob(ctx, f"{third_id}/output.jsonl")
    assert merged == results_blob(ctx, f"{clean.run_id}/output.jsonl")
    assert [json.loads(line) for line in merged.splitlines()] == items
    assert report["output_sha256"] == report_of(ctx, clean.run_id)["output_sha256"]

    done = rerun(ctx, "once-more.json", {"rerun": third_id})
    assert "nothing to rerun" in rejection(ctx, done)["message"]


def test_cancelled_run_is_rerun_reusing_the_tasks_that_finished(ctx, batch):
    from shared.watch import watch
    from tests.pipeline.helpers import wait_for

    job = {"command": 'if [ "$TASK_INDEX" -ge 2 ]; then sleep 60; fi; ' + COPY,
           "input": {"items": [10, 11, 12, 13]}}
    d = drop(ctx, "slow.json", job)
    accept(ctx, d.container, d.name)
    wait_for(lambda: watch(ctx) is not None and status(ctx, d.run_id)["tasks"]["succeeded"] == 2,
             timeout=30, what="the two quick tasks succeeded")
    c = drop(ctx, "stop.json", {"cancel": d.run_id})
    accept(ctx, c.container, c.name)
    cancelled = status(ctx, d.run_id)
    assert cancelled["state"] == "cancelled" and "outputs_kept_until" in cancelled

    r = drop(ctx, "resume.json", {"rerun": d.run_id, "command": COPY, "task_timeout_minutes": 5})
    again = accept(ctx, r.container, r.name)
    assert again is not None and again != d.run_id
    assert submitted_tasks(batch, again) == ["t000002", "t000003"]
    final = run_to_end(ctx, again)
    assert final["state"] == "succeeded", final
    events = len(ctx.events.events)
    assert accept(ctx, r.container, r.name) == again  # a duplicate delivery changes nothing
    assert status(ctx, again) == final and len(ctx.events.events) == events
    assert results_blob(ctx, f"{again}/output.jsonl") == b"10\n11\n12\n13\n"
    entries = report_of(ctx, again)["entries"]
    assert [e.get("reused_from") for e in entries] == [d.run_id, d.run_id, None, None]


def test_expired_run_is_rejected_and_the_sweep_deletes_what_it_kept(env, ctx):
    job = {"command": FAILS_ON.format(marker="2"), "input": {"items": [1, 2, 3]}, "retries": 0}
    d = drop(ctx, "fails.json", job)
    accept(ctx, d.container, d.name)
    ended = run_to_end(ctx, d.run_id)
    assert ended["state"] == "failed"
    _, outputs = naming.work_containers(ctx.settings.work_prefix, d.run_id)
    assert storage.container_exists(ctx.blobs, outputs)
    assert sweep(ctx) == []  # kept for a rerun, within its time

    later = build_context(env, clock=lambda: ctx.clock() + timedelta(hours=73))
    late = rerun(later, "too-late.json", {"rerun": d.run_id, "command": COPY})
    error = rejection(later, late)
    assert error["field"] == "rerun" and "can no longer be rerun" in error["message"], error
    assert f"container {outputs}" in sweep(later)
    assert ctx.runs.kept_job_file(d.run_id) is None
    gone = rerun(ctx, "gone.json", {"rerun": d.run_id, "command": COPY})
    assert "can no longer be rerun" in rejection(ctx, gone)["message"]


def test_rerun_of_a_changed_input_an_active_or_unknown_run_is_rejected(ctx):
    blob = put_data(ctx, "in.jsonl", b"1\n2\n3\n4\n")
    job = {"command": FAILS_ON.format(marker="3"), "input": {"blob": blob}, "retries": 0}
    d = drop(ctx, "blob.json", job)
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "failed"  # fail-fast
    put_data(ctx, "in.jsonl", b"1\n2\n3\n4\n")  # the same bytes, but another version
    changed = rerun(ctx, "changed.json", {"rerun": d.run_id, "command": COPY})
    error = rejection(ctx, changed)
    assert error["field"] == "rerun" and "input of run" in error["message"] and "changed" in error["message"]

    slow = drop(ctx, "slow.json", {"command": "sleep 30", "input": {"items": [1]}})
    accept(ctx, slow.container, slow.name)
    active = rerun(ctx, "early.json", {"rerun": slow.run_id})
    assert "still running" in rejection(ctx, active)["message"]
    c = drop(ctx, "stop.json", {"cancel": slow.run_id})
    accept(ctx, c.container, c.name)

    unknown = rerun(ctx, "unknown.json", {"rerun": "nothing-0123abcd"})
    assert "no run" in rejection(ctx, unknown)["message"]
    bad = rerun(ctx, "bad-override.json", {"rerun": d.run_id, "retries": -1})
    assert rejection(ctx, bad)["field"] == "retries"


def test_rerun_submitted_in_chunks_passes_over_the_reused_tasks_from_a_pinned_blob(env, batch):
    """A rerun whose submission goes on in continuations (one chunk of 7 task indices each): the cursor
    is a task index, the reused tasks in each chunk are passed over, and every continuation splits the
    version of the input blob the first run split."""
    from shared import submit
    from shared.accept import continue_submission

    chunked = build_context({**env, "INTAKE_BUDGET_SECONDS": "0", "SUBMIT_CHUNK_TASKS": "7"})
    records = [{"n": i, "mark": "bad" if i % 6 == 1 else "ok"} for i in range(20)]  # 1, 7, 13, 19
    blob = put_data(chunked, "records.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    job = {"command": FAILS_ON.format(marker="bad"), "input": {"blob": blob}, "on_task_failure": "partial",
           "retries": 0}

    def submit_all(run_id: str) -> None:
        for _ in range(100):
            waiting = list(chunked.submit_queue.receive_messages(messages_per_page=32, visibility_timeout=30))
            if not waiting:
                return
            for msg in waiting:
                chunked.submit_queue.delete_message(msg)
            continue_submission(chunked, submit.run_id_of_continuation(waiting[0].content))

    d = drop(chunked, "records.json", job)
    accept(chunked, d.container, d.name)
    submit_all(d.run_id)
    assert run_to_end(chunked, d.run_id)["tasks"]["failed"] == 4

    again = rerun(chunked, "records-fixed.json", {"rerun": d.run_id, "command": COPY})
    assert status(chunked, again)["submitted"] == 7  # the first chunk: indices 0-6, of which one ran
    submit_all(again)
    assert status(chunked, again)["submitted"] == 20
    assert submitted_tasks(batch, again) == ["t000001", "t000007", "t000013", "t000019"]
    final = run_to_end(chunked, again)
    assert final["state"] == "succeeded" and final["tasks"]["succeeded"] == 20, final
    assert [json.loads(line) for line in results_blob(chunked, f"{again}/output.jsonl").splitlines()] == records

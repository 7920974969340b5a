"""Finalize in parts (issue 12): with FINALIZE_BUDGET_SECONDS=0 each finalize invocation merges one
part of FINALIZE_PART_TASKS tasks' outputs and hands the rest to the next; the output appears once,
complete, with the digests of what was committed, and a crash or a lost output mid-way ends right."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import time

import pytest

from shared import naming, storage
from shared.accept import accept
from shared.cleanup import work_containers
from shared.finalize import CONTINUES, finalize
from shared.naming import run_id_of_message
from shared.watch import watch
from tests.pipeline.helpers import COPY, build_context, drop, put_data, results_blob, run_to_end, status, wait_for

PART = 4


@pytest.fixture
def parted(env):
    return build_context({**env, "FINALIZE_BUDGET_SECONDS": "0", "FINALIZE_PART_TASKS": str(PART)})


def to_merging(ctx, run_id: str) -> None:
    wait_for(lambda: watch(ctx).get(run_id) == "finalize requested" or status(ctx, run_id)["state"] != "running",
             timeout=90, what="all tasks done")
    assert status(ctx, run_id)["state"] == "merging"


def finalize_messages(ctx) -> list[str]:
    found = []
    for msg in ctx.finalize_queue.receive_messages(messages_per_page=32, visibility_timeout=30):
        found.append(run_id_of_message(msg.content))
        ctx.finalize_queue.delete_message(msg)
    return found


def invocations_until_done(ctx, run_id: str, output: str, done: int = 0) -> int:
    """Deliver finalize messages one at a time (`done` invocations were already); the output must
    not appear before the last."""
    count = done
    while finalize_messages(ctx):
        outcome = finalize(ctx, run_id)
        count += 1
        if outcome == CONTINUES:
            assert results_blob(ctx, output) is None  # staged blocks are invisible: never a partial file
            assert status(ctx, run_id)["merge_progress"]["next"] == count * PART
    return count


def assert_digests(ctx, run_id: str, name: str) -> bytes:
    data = results_blob(ctx, name)
    report = json.loads(results_blob(ctx, f"{run_id}/report.json"))
    assert report["output_sha256"] == hashlib.sha256(data).hexdigest()
    assert report["output_md5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    props = ctx.blobs.get_blob_client(ctx.settings.results_container, name).get_blob_properties()
    assert base64.b64encode(bytes(props.content_settings.content_md5)).decode() == report["output_md5"]
    return data


def test_a_jsonl_run_merged_over_several_invocations_appears_once_complete(parted):
    ctx = parted
    d = drop(ctx, "parts.json", {"command": COPY, "input": {"items": list(range(18))}})
    accept(ctx, d.container, d.name)
    to_merging(ctx, d.run_id)
    assert finalize_messages(ctx) and finalize(ctx, d.run_id) == CONTINUES
    # later parts read the task outcomes the first kept instead of listing the job's tasks again
    control = ctx.blobs.get_container_client(ctx.settings.control_container)
    kept = json.loads(control.download_blob(naming.kept_outcomes(d.run_id)).readall())
    assert [t["task_id"] for t in kept["outcomes"]] == [f"t{i:06d}" for i in range(18)]
    kept["outcomes"][17]["node_id"] = "as-kept"
    control.upload_blob(naming.kept_outcomes(d.run_id), json.dumps(kept), overwrite=True)
    ctx.finalize_queue.send_message(d.run_id)
    assert invocations_until_done(ctx, d.run_id, f"{d.run_id}/output.jsonl", done=1) == 5  # 4+4+4+4+2
    final = status(ctx, d.run_id)
    assert final["state"] == "succeeded" and final["merge_progress"]["invocations"] == 4
    data = assert_digests(ctx, d.run_id, f"{d.run_id}/output.jsonl")
    assert [json.loads(x) for x in data.splitlines()] == list(range(18))
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert report["entries"][17]["node_id"] == "as-kept"
    assert not control.get_blob_client(naming.kept_outcomes(d.run_id)).exists()  # gone with the run


def test_a_csv_header_is_kept_once_across_parts(parted):
    ctx = parted
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\r\n")
    writer.writerow(["n", "square"])
    writer.writerows([i, i * i] for i in range(30))
    ref = put_data(ctx, "squares.csv", table.getvalue().encode())
    d = drop(ctx, "csvparts.json", {"command": COPY, "input": {"blob": ref}, "items_per_task": 3})
    accept(ctx, d.container, d.name)
    to_merging(ctx, d.run_id)
    assert invocations_until_done(ctx, d.run_id, f"{d.run_id}/output.csv") == 3  # 10 tasks: 4+4+2
    assert assert_digests(ctx, d.run_id, f"{d.run_id}/output.csv").decode() == table.getvalue()


def test_merge_none_keeps_every_task_output_over_several_invocations(parted):
    ctx = parted
    d = drop(ctx, "none.json", {"command": COPY, "input": {"items": list(range(9))}, "merge": "none"})
    accept(ctx, d.container, d.name)
    to_merging(ctx, d.run_id)
    assert invocations_until_done(ctx, d.run_id, f"{d.run_id}/output.jsonl") == 3
    assert status(ctx, d.run_id)["state"] == "succeeded"
    kept = sorted(b.name for b in ctx.blobs.get_container_client(ctx.settings.results_container)
                  .list_blobs(name_starts_with=f"{d.run_id}/tasks/"))
    assert kept == [f"{d.run_id}/tasks/t{i:06d}/output.jsonl" for i in range(9)]


def test_a_finalize_that_dies_mid_part_is_replayed_from_the_last_recorded_part(parted, monkeypatch):
    ctx = parted
    d = drop(ctx, "die.json", {"command": COPY, "input": {"items": list(range(12))}})
    accept(ctx, d.container, d.name)
    to_merging(ctx, d.run_id)
    assert finalize_messages(ctx) and finalize(ctx, d.run_id) == CONTINUES  # part 0 recorded
    real = storage.stage_stream

    def die_after_staging(*args, **kwargs):
        real(*args, **kwargs)
        raise ConnectionError("host died before recording the part")

    monkeypatch.setattr(storage, "stage_stream", die_after_staging)
    with pytest.raises(ConnectionError):
        finalize(ctx, d.run_id)  # part 1 staged, not recorded
    monkeypatch.undo()
    assert status(ctx, d.run_id)["merge_progress"]["next"] == PART
    while finalize(ctx, d.run_id) == CONTINUES:  # the queue redelivers the message the dead host held
        pass
    assert status(ctx, d.run_id)["state"] == "succeeded"
    data = assert_digests(ctx, d.run_id, f"{d.run_id}/output.jsonl")
    assert [json.loads(x) for x in data.splitlines()] == list(range(12))


def test_a_part_that_slows_down_stops_at_the_budget_and_the_rest_goes_on_later(env, monkeypatch):
    """A part is sized from the rate measured so far; when storage slows down mid-part it takes no
    further slice once the budget is spent (after its first), so the invocation overruns by a slice
    only. (A 100,000-task run measured one part five times slower than those before: 71.6 s against
    a budget of 60.)"""
    from shared import merge_parts

    ctx = build_context({**env, "FINALIZE_BUDGET_SECONDS": "1", "FINALIZE_PART_TASKS": "1000"})
    d = drop(ctx, "slowparts.json", {"command": COPY, "input": {"items": list(range(60))}})
    accept(ctx, d.container, d.name)
    to_merging(ctx, d.run_id)
    real_stream = storage.stream_blobs

    def slow(service, container, names, ahead=8):  # storage answering 20 times slower
        for chunks in real_stream(service, container, names, ahead):
            time.sleep(0.05)
            yield chunks

    monkeypatch.setattr(merge_parts, "SLICE_TASKS", 5)
    monkeypatch.setattr(storage, "stream_blobs", slow)
    assert finalize_messages(ctx)
    began = time.monotonic()
    assert finalize(ctx, d.run_id) == CONTINUES  # the first part (all 60 tasks, 3 s at this pace) was cut
    took = time.monotonic() - began
    monkeypatch.setattr(storage, "stream_blobs", real_stream)
    merged = status(ctx, d.run_id)["merge_progress"]["next"]
    assert 5 <= merged < 60 and merged % 5 == 0, merged
    assert took < 2.5, took  # the budget (1 s) plus a slice, not the whole part
    while finalize_messages(ctx) and finalize(ctx, d.run_id) == CONTINUES:
        pass
    assert status(ctx, d.run_id)["state"] == "succeeded"
    data = assert_digests(ctx, d.run_id, f"{d.run_id}/output.jsonl")
    assert [json.loads(x) for x in data.splitlines()] == list(range(60))


def test_the_commit_and_report_get_their_own_invocation_when_the_parts_took_half_the_budget(env, monkeypatch):
    """The commit, report and cleanup after the last part are outside the parts' accounting (a
    100,000-task run's last finalize took 80.8 s of 60): when the parts took more than half the
    budget, the next invocation does them."""
    ctx = build_context({**env, "FINALIZE_BUDGET_SECONDS": "1"})
    d = drop(ctx, "tail.json", {"command": COPY, "input": {"items": list(range(8))}})
    accept(ctx, d.container, d.name)
    to_merging(ctx, d.run_id)
    real_stream = storage.stream_blobs

    def slow(service, container, names, ahead=8):  # 8 outputs, 0.8 s: all in one part, past half the budget
        for chunks in real_stream(service, container, names, ahead):
            time.sleep(0.1)
            yield chunks

    monkeypatch.setattr(storage, "stream_blobs", slow)
    assert finalize_messages(ctx)
    assert finalize(ctx, d.run_id) == CONTINUES
    monkeypatch.setattr(storage, "stream_blobs", real_stream)
    run = status(ctx, d.run_id)
    assert run["state"] == "merging" and run["merge_progress"]["next"] == 8  # all merged, nothing committed
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") is None and results_blob(ctx, f"{d.run_id}/report.json") is None
    assert finalize_messages(ctx) and finalize(ctx, d.run_id) != CONTINUES
    assert status(ctx, d.run_id)["state"] == "succeeded"
    data = assert_digests(ctx, d.run_id, f"{d.run_id}/output.jsonl")
    assert [json.loads(x) for x in data.splitlines()] == list(range(8))


def test_an_output_lost_in_a_later_part_reruns_its_task_and_the_merge_starts_over(parted):
    ctx = parted
    d = drop(ctx, "lost.json", {"command": COPY, "input": {"items": list(range(10))}})
    accept(ctx, d.container, d.name)
    to_merging(ctx, d.run_id)
    assert finalize_messages(ctx) and finalize(ctx, d.run_id) == CONTINUES
    _, out = work_containers(ctx, d.run_id)
    ctx.blobs.get_blob_client(out, "tasks/t000006/output.jsonl").upload_blob(b"999\n", overwrite=True)
    assert finalize(ctx, d.run_id) == "rerunning"
    run = status(ctx, d.run_id)
    assert run["state"] == "running" and run.get("merge_progress") is None and run["reruns"] == {"t000006": 1}
    final = run_to_end(ctx, d.run_id, deadline_s=90)
    assert final["state"] == "succeeded"
    data = assert_digests(ctx, d.run_id, f"{d.run_id}/output.jsonl")
    assert [json.loads(x) for x in data.splitlines()] == list(range(10))
    # the outcomes kept before the rerun were not used after it: the report has the task's new attempt
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert report["entries"][6]["attempt"] == "t000006-r1"

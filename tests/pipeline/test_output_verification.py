"""Every task output is checked against its manifest before it is merged (issue 15).

A run is driven to `merging` with the monitor only, then an output is deleted or corrupted as a
lost or truncated upload would leave it, and finalize is called as the queue trigger would."""
from __future__ import annotations

import base64
import hashlib
import json
import time

from shared import naming
from shared.accept import accept
from shared.cleanup import work_containers
from shared.finalize import RERUNNING, finalize
from shared.watch import watch
from tests.pipeline.helpers import COPY, build_context, drop, results_blob, run_to_end, work_containers_left

ITEMS = [{"n": i} for i in range(4)]


def to_merging(ctx, items=ITEMS, name="verify.json", **job) -> str:
    d = drop(ctx, name, {"command": COPY, "input": {"items": items}, **job})
    accept(ctx, d.container, d.name)
    deadline = time.monotonic() + 60
    while ctx.runs.read(d.run_id).state != "merging":
        assert time.monotonic() < deadline, ctx.runs.read(d.run_id)
        watch(ctx)
        time.sleep(0.2)
    ctx.finalize_queue.clear_messages()  # finalize is called by hand below
    return d.run_id


def output_blob(ctx, run_id: str, task: str):
    _, out = work_containers(ctx, run_id)
    return ctx.blobs.get_blob_client(out, naming.task_outputs(task) + "output.jsonl")


def merged_lines(ctx, run_id: str) -> list[dict]:
    return [json.loads(line) for line in results_blob(ctx, f"{run_id}/output.jsonl").splitlines()]


def test_an_output_deleted_before_the_merge_is_rerun_and_the_merge_is_complete(ctx):
    run_id = to_merging(ctx)
    output_blob(ctx, run_id, "t000002").delete_blob()
    assert finalize(ctx, run_id) == RERUNNING
    run = ctx.runs.read(run_id)
    assert run.state == "running" and run.reruns == {"t000002": 1} and run.infra_retries == {"t000002": 1}
    assert "t000002" in run.last_rerun["why"] and "lost or changed" in run.last_rerun["why"]
    final = run_to_end(ctx, run_id)
    assert final["state"] == "succeeded", final
    assert merged_lines(ctx, run_id) == ITEMS
    report = json.loads(results_blob(ctx, f"{run_id}/report.json"))
    assert report["output_reruns"] == 1 and report["infrastructure_retries"] == 1
    assert [e["task_id"] for e in report["entries"]] == ["t000000", "t000001", "t000002", "t000003"]
    assert report["outputs_verified"] == 4
    assert work_containers_left(ctx) == []


def test_a_corrupted_output_of_the_same_size_is_caught_while_merging_and_rerun(ctx):
    run_id = to_merging(ctx, name="corrupt.json")
    blob = output_blob(ctx, run_id, "t000001")
    good = blob.download_blob().readall()
    blob.upload_blob(good.replace(b"1", b"7"), overwrite=True)  # one byte differs, same size
    assert finalize(ctx, run_id) == RERUNNING
    assert results_blob(ctx, f"{run_id}/output.jsonl") is None  # nothing was committed from a bad part
    final = run_to_end(ctx, run_id)
    assert final["state"] == "succeeded"
    assert merged_lines(ctx, run_id) == ITEMS


def test_a_truncated_output_is_caught_by_its_size(ctx):
    run_id = to_merging(ctx, name="truncated.json")
    blob = output_blob(ctx, run_id, "t000003")
    blob.upload_blob(blob.download_blob().readall()[:-3], overwrite=True)
    assert finalize(ctx, run_id) == RERUNNING
    assert "t000003" in ctx.runs.read(run_id).last_rerun["tasks"]
    assert run_to_end(ctx, run_id)["state"] == "succeeded"
    assert merged_lines(ctx, run_id) == ITEMS


def test_a_lost_output_with_no_retry_left_fails_the_run_naming_the_task(env):
    ctx = build_context({**env, "INFRA_RETRIES": "0"})
    run_id = to_merging(ctx, name="spent.json")
    output_blob(ctx, run_id, "t000000").delete_blob()
    assert finalize(ctx, run_id) == "failed"
    final = ctx.runs.read(run_id).to_json()
    assert final["error"].startswith("the output of task t000000 was lost: 1 output file(s) lost or changed")
    assert results_blob(ctx, f"{run_id}/output.jsonl") is None
    assert work_containers_left(ctx) == []


def test_a_lost_manifest_is_a_lost_output(ctx):
    run_id = to_merging(ctx, name="nomanifest.json")
    _, out = work_containers(ctx, run_id)
    ctx.blobs.get_blob_client(out, naming.task_manifest("t000001")).delete_blob()
    assert finalize(ctx, run_id) == RERUNNING
    assert "manifest was not uploaded" in ctx.runs.read(run_id).last_rerun["why"]
    assert run_to_end(ctx, run_id)["state"] == "succeeded"
    assert merged_lines(ctx, run_id) == ITEMS


def test_a_task_that_wrote_nothing_says_so_and_is_not_rerun(ctx):
    d = drop(ctx, "quiet.json", {"command": 'if [ "$TASK_INDEX" = 1 ]; then exit 0; fi; ' + COPY,
                                 "input": {"items": [1, 2, 3]}})
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded"
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert report["output_reruns"] == 0
    assert any("t000001" in w and "wrote no output.jsonl" in w for w in report["warnings"])


def test_the_merged_outputs_digests_match_what_users_download(ctx):
    d = drop(ctx, "digest.json", {"command": COPY, "input": {"items": ITEMS}})
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    blob = ctx.blobs.get_blob_client(ctx.settings.results_container, f"{d.run_id}/output.jsonl")
    data = blob.download_blob().readall()
    assert report["output_sha256"] == hashlib.sha256(data).hexdigest()
    assert report["output_bytes"] == len(data)
    md5 = hashlib.md5(data).digest()
    assert report["output_md5"] == base64.b64encode(md5).decode()
    assert bytes(blob.get_blob_properties().content_settings.content_md5) == md5

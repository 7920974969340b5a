"""Whole runs through accept -> watch -> finalize against real Azurite and the real emulator."""
from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from shared.accept import accept
from tests.pipeline.helpers import (
    COPY,
    drop,
    jobs_left,
    pools_left,
    put_data,
    results_blob,
    run_to_end,
    status,
    wait_for,
    work_containers_left,
)


def assert_cleaned_up(ctx, batch, run_id):
    wait_for(lambda: not jobs_left(batch, run_id), what="job deleted")
    wait_for(lambda: not pools_left(batch, run_id), what="auto pool deleted")
    assert work_containers_left(ctx) == []


def test_items_run_merges_jsonl_in_task_order_and_cleans_up(ctx, batch):
    items = [{"n": i} for i in range(7)]
    job = {"command": COPY, "input": {"items": items}, "items_per_task": 2}
    d = drop(ctx, "square.json", job)
    assert accept(ctx, d.container, d.name) == d.run_id
    running = status(ctx, d.run_id)
    assert running["state"] == "running" and running["tasks"]["total"] == 4
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    assert final["tasks"] == {"total": 4, "active": 0, "running": 0, "succeeded": 4, "failed": 0}
    out = results_blob(ctx, f"{d.run_id}/output.jsonl")
    assert [json.loads(line) for line in out.splitlines()] == items
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert [e["task_id"] for e in report["entries"]] == ["t000000", "t000001", "t000002", "t000003"]
    assert all(e["outcome"] == "succeeded" and e["exit_code"] == 0 for e in report["entries"])
    assert final["output"] == f"{ctx.settings.results_container}/{d.run_id}/output.jsonl"
    assert_cleaned_up(ctx, batch, d.run_id)
    assert [e[0] for e in ctx.events.events] == ["accepted", "running", "succeeded"]


def test_task_environment_follows_the_contract(ctx):
    script = (
        'printf \'{"index": "%s", "count": "%s", "input": "%s", "config": "%s", "outdir_ok": %s}\\n\' '
        '"$TASK_INDEX" "$TASK_COUNT" "$(basename "$INPUT_PATH")" "$(cat "$CONFIG_PATH" | tr -d \'"\')" '
        '"$( [ "$(dirname "$OUTPUT_PATH")" = "$OUTPUT_DIR" ] && echo true || echo false)" > "$OUTPUT_PATH"'
    )
    job = {"command": script, "input": {"items": [1, 2, 3]}, "tasks": 3, "config": {"k": 1}}
    d = drop(ctx, "env.json", job)
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    lines = [json.loads(x) for x in results_blob(ctx, f"{d.run_id}/output.jsonl").splitlines()]
    assert [x["index"] for x in lines] == ["0", "1", "2"]
    assert {x["count"] for x in lines} == {"3"}
    assert {x["input"] for x in lines} == {"input.jsonl"}
    assert {x["config"] for x in lines} == {"{k: 1}"}
    assert all(x["outdir_ok"] for x in lines)


def test_blob_csv_input_keeps_one_header_and_resources_are_unzipped(ctx):
    rows = [["id", "value"]] + [[str(i), str(i * i)] for i in range(10)]
    text = "".join(",".join(r) + "\n" for r in rows).encode()
    put_data(ctx, "in/table.csv", text)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("suffix.txt", "ok")
    put_data(ctx, "ref/tools.zip", archive.getvalue())
    job = {
        "command": 'cp "$INPUT_PATH" "$OUTPUT_PATH" && test "$(cat "$RESOURCES_DIR/suffix.txt")" = ok',
        "input": {"blob": f"{ctx.settings.data_container}/in/table.csv"},
        "items_per_task": 4,
        "resources": [{"blob": f"{ctx.settings.data_container}/ref/tools.zip", "unzip": True}],
    }
    d = drop(ctx, "table.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    assert final["tasks"]["total"] == 3
    merged = results_blob(ctx, f"{d.run_id}/output.csv").decode()
    assert list(csv.reader(io.StringIO(merged))) == rows


def test_prefix_input_with_config_blob_and_concat_merge(ctx):
    for i in range(3):
        put_data(ctx, f"parts/p{i}.bin", bytes([65 + i]) * (i + 1))
    put_data(ctx, "cfg.json", b'{"sep": "|"}')
    job = {
        "command": 'cat "$INPUT_PATH" > "$OUTPUT_PATH"; grep -q sep "$CONFIG_PATH"',
        "input": {"prefix": f"{ctx.settings.data_container}/parts/"},
        "config": {"blob": f"{ctx.settings.data_container}/cfg.json"},
        "merge": "concat",
    }
    d = drop(ctx, "parts.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    assert results_blob(ctx, f"{d.run_id}/output.bin") == b"ABBCCC"


def test_prefix_tasks_each_keep_their_own_blobs_extension(ctx):
    for name, data in (("a.csv", b"x,y\n"), ("b.jsonl", b"{}\n"), ("c", b"raw")):
        put_data(ctx, f"mixed/{name}", data)
    job = {"command": 'echo "$(basename "$INPUT_PATH") $(wc -c < "$INPUT_PATH")" > "$OUTPUT_PATH"',
           "input": {"prefix": f"{ctx.settings.data_container}/mixed/"}, "merge": "lines"}
    d = drop(ctx, "mixed.json", job)
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    lines = results_blob(ctx, f"{d.run_id}/output.txt").decode().split("\n")
    assert [line.split()[0] for line in lines if line] == ["input.csv", "input.jsonl", "input.bin"]


def test_merge_none_keeps_per_task_outputs(ctx):
    job = {"command": 'echo "$TASK_INDEX" > "$OUTPUT_PATH"; echo extra > "$OUTPUT_DIR/extra.txt"',
           "input": {"items": ["a", "b"]}, "merge": "none"}
    d = drop(ctx, "keep.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    assert results_blob(ctx, f"{d.run_id}/tasks/t000001/output.jsonl") == b"1\n"
    assert results_blob(ctx, f"{d.run_id}/tasks/t000000/extra.txt") == b"extra\n"


def test_lines_input_merges_lines(ctx):
    put_data(ctx, "words.txt", b"alpha\nbeta\ngamma\n")
    job = {"command": 'tr a-z A-Z < "$INPUT_PATH" > "$OUTPUT_PATH"',
           "input": {"blob": f"{ctx.settings.data_container}/words.txt", "format": "lines"}, "tasks": 2}
    d = drop(ctx, "upper.json", job)
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    assert results_blob(ctx, f"{d.run_id}/output.txt") == b"ALPHA\nBETA\nGAMMA\n"


def test_image_runs_on_the_host_locally_and_status_says_so(ctx):
    job = {"command": COPY, "image": "python:3.11-slim", "input": {"items": [1]}}
    d = drop(ctx, "img.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    assert final.get("container_execution") == "host"


@pytest.mark.parametrize("policy", ["fail", "partial"])
def test_failing_task_is_retried_and_reported_with_its_stderr(ctx, batch, policy):
    job = {"command": 'if [ "$TASK_INDEX" = 1 ]; then echo "boom on $TASK_INDEX" >&2; exit 3; fi; ' + COPY,
           "input": {"items": [0, 1, 2]}, "retries": 2, "on_task_failure": policy}
    d = drop(ctx, f"fails-{policy}.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id, deadline_s=90)
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    failed = [e for e in report["entries"] if e["outcome"] == "failed"]
    assert [e["task_id"] for e in failed] == ["t000001"]
    assert failed[0]["exit_code"] == 3 and failed[0]["retries"] == 2
    assert "boom on 1" in failed[0]["stderr_tail"]
    assert b"boom on 1" in results_blob(ctx, f"{d.run_id}/tasks/t000001/stderr.txt")
    if policy == "fail":
        assert final["state"] == "failed"
        assert results_blob(ctx, f"{d.run_id}/output.jsonl") is None
        error = json.loads(results_blob(ctx, f"{d.run_id}/error.json"))
        assert "t000001" in error["message"]
    else:
        assert final["state"] == "succeeded"
        assert results_blob(ctx, f"{d.run_id}/output.jsonl") == b"0\n2\n"
        assert any("partial" in w for w in report["warnings"])
    assert_cleaned_up(ctx, batch, d.run_id)


def test_merge_command_runs_the_users_recombiner_after_all_tasks(ctx, batch):
    job = {"command": COPY, "input": {"items": [3, 1, 2]},
           "merge": {"command": 'ls "$OUTPUTS_DIR" > "$OUTPUT_DIR/order.txt"; '
                                'cat "$OUTPUTS_DIR"/*/output.bin | sort -n > "$OUTPUT_PATH"'}}
    d = drop(ctx, "recombine.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id, deadline_s=90)
    assert final["state"] == "succeeded", final
    assert results_blob(ctx, f"{d.run_id}/output.bin") == b"1\n2\n3\n"
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert report["merge_task"]["outcome"] == "succeeded"
    assert [e["task_id"] for e in report["entries"]] == ["t000000", "t000001", "t000002"]
    assert_cleaned_up(ctx, batch, d.run_id)


def test_failing_merge_command_fails_the_run_with_its_stderr(ctx):
    job = {"command": COPY, "input": {"items": [1]}, "merge": {"command": "echo recombiner broke >&2; exit 9"}}
    d = drop(ctx, "badmerge.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id, deadline_s=90)
    assert final["state"] == "failed"
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert "recombiner broke" in report["merge_task"]["stderr_tail"]
    assert results_blob(ctx, f"{d.run_id}/output.bin") is None


def test_pool_retries_and_timeout_fields_reach_batch(ctx, batch):
    job = {"command": "sleep 5", "input": {"items": [1]}, "retries": 1, "task_timeout_minutes": 7,
           "pool": {"vm_size": "standard_f4s_v2", "max_nodes": 3, "spot": True, "slots_per_node": 4}}
    d = drop(ctx, "pool.json", job)
    accept(ctx, d.container, d.name)
    spec = batch.get_job(d.run_id).pool_info.auto_pool_specification
    assert spec.pool_lifetime_option == "job" and not spec.keep_alive
    assert spec.pool.vm_size == "standard_f4s_v2" and spec.pool.task_slots_per_node == 4
    formula = spec.pool.auto_scale_formula  # spot, falling back to dedicated nodes (spot_fallback by default)
    assert "$wanted = min(3, " in formula and "$TargetLowPriorityNodes = $fallback ? min($wanted, $spotUp)" in formula
    task = batch.get_task(d.run_id, "t000000")
    assert task.constraints.max_task_retry_count == 1
    assert task.constraints.max_wall_clock_time.total_seconds() == 7 * 60
    batch.begin_delete_job(d.run_id).result()
    assert run_to_end(ctx, d.run_id)["state"] == "cancelled"


def test_existing_pool_is_used_and_never_deleted(ctx, batch):
    from azure.batch import models as bm

    pool_id = f"longlived-{ctx.settings.work_prefix}"
    batch.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=1,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    d = drop(ctx, "ownpool.json", {"command": COPY, "input": {"items": [1, 2]}, "pool": {"id": pool_id}})
    accept(ctx, d.container, d.name)
    assert batch.get_job(d.run_id).pool_info.pool_id == pool_id
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    wait_for(lambda: not jobs_left(batch, d.run_id), what="job deleted")
    assert batch.get_pool(pool_id).state == "active"
    batch.begin_delete_pool(pool_id).result()


def test_plain_resource_file_is_readable_under_resources_dir(ctx):
    put_data(ctx, "ref/words.txt", b"needle\n")
    job = {"command": 'grep -c needle "$RESOURCES_DIR/words.txt" > "$OUTPUT_PATH"',
           "input": {"items": [1, 2]}, "merge": "lines",
           "resources": [{"blob": f"{ctx.settings.data_container}/ref/words.txt"}]}
    d = drop(ctx, "plainres.json", job)
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    assert results_blob(ctx, f"{d.run_id}/output.txt") == b"1\n1\n"


def test_json_array_blob_is_split_into_jsonl_tasks(ctx):
    put_data(ctx, "arr.json", json.dumps([{"a": [1, "]"]}, {"b": "x,y"}, 3]).encode())
    job = {"command": COPY, "input": {"blob": f"{ctx.settings.data_container}/arr.json"}, "items_per_task": 2}
    d = drop(ctx, "arr.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded" and final["tasks"]["total"] == 2
    assert [json.loads(x) for x in results_blob(ctx, f"{d.run_id}/output.jsonl").splitlines()] == \
        [{"a": [1, "]"]}, {"b": "x,y"}, 3]


def test_fail_policy_stops_the_run_at_the_first_failure(ctx, batch):
    job = {"command": 'if [ "$TASK_INDEX" = 0 ]; then exit 4; fi; sleep 30', "input": {"items": [0, 1, 2, 3]},
           "retries": 0}
    d = drop(ctx, "failfast.json", job)
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id, deadline_s=20)  # far less than the 30 s the other tasks would take
    assert final["state"] == "failed"
    assert final["tasks"]["failed"] == 1 and final["tasks"]["stopped"] == 3
    assert "1 of 4 tasks failed" in final["error"] and "t000000" in final["error"]
    assert_cleaned_up(ctx, batch, d.run_id)


def test_cancel_request_stops_a_run_and_cleans_up(ctx, batch):
    d = drop(ctx, "long.json", {"command": "sleep 30", "input": {"items": [1, 2, 3]}})
    accept(ctx, d.container, d.name)
    assert status(ctx, d.run_id)["state"] == "running"
    c = drop(ctx, "stop-it.json", {"cancel": d.run_id})
    assert accept(ctx, c.container, c.name) == d.run_id
    final = status(ctx, d.run_id)
    assert final["state"] == "cancelled" and "stop-it.json" in final["error"]
    assert_cleaned_up(ctx, batch, d.run_id)
    assert accept(ctx, c.container, c.name) == d.run_id  # a duplicate delivery changes nothing
    assert status(ctx, d.run_id)["state"] == "cancelled"
    assert [e[0] for e in ctx.events.events].count("cancelled") == 1


def test_cancel_of_a_merging_run_changes_nothing_and_the_run_finishes_whole(ctx, batch):
    """A cancel racing finalize once ended a run `cancelled` with a complete output and a report
    saying it succeeded: merging runs now finish, and the cancel is a no-op."""
    from shared.watch import watch

    d = drop(ctx, "almost.json", {"command": COPY, "input": {"items": [1, 2]}})
    accept(ctx, d.container, d.name)
    wait_for(lambda: watch(ctx) is not None and status(ctx, d.run_id)["state"] == "merging", what="merging")
    c = drop(ctx, "too-late.json", {"cancel": d.run_id})
    assert accept(ctx, c.container, c.name) == d.run_id
    assert status(ctx, d.run_id)["state"] == "merging"
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    assert results_blob(ctx, f"{d.run_id}/error.json") is None
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") == b"1\n2\n"
    assert_cleaned_up(ctx, batch, d.run_id)


def test_cancel_request_for_an_unknown_run_is_rejected(ctx):
    c = drop(ctx, "stop-nothing.json", {"cancel": "nothing-0123abcd"})
    run_id = accept(ctx, c.container, c.name)
    error = json.loads(results_blob(ctx, f"{run_id}/error.json"))
    assert error["field"] == "cancel" and "no run" in error["message"]

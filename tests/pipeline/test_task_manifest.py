"""Every succeeded task, and the merge task, uploads a manifest of its OUTPUT_DIR (sizes and SHA-256)
to manifests/<task>.txt in the run's output container; a failed one uploads none and keeps its
exit code. Read from the work container before finalize deletes it."""
from __future__ import annotations

import hashlib
import json

from shared import batch as batch_mod
from shared import naming
from shared.accept import accept
from shared.manifest import ManifestEntry, check_listing, parse, verify_stream
from shared.watch import watch
from tests.pipeline.helpers import drain_finalize, drop, results_blob, run_to_end, wait_for

# task 0 leaves nested files, a name with a space, an empty file and a hidden one (not uploaded);
# task 1 leaves nothing; task 2 fails with exit code 3
COMMAND = """case "$TASK_INDEX" in
0) cd "$OUTPUT_DIR" && mkdir -p nested/deeper && cat "$INPUT_PATH" > "$OUTPUT_PATH" &&
   printf 'spaced out' > 'with space.txt' && head -c 100000 /dev/urandom > nested/deeper/random.bin &&
   : > nested/empty && echo hidden > .hidden ;;
1) : ;;
*) echo "task two fails" >&2; exit 3 ;;
esac"""


def output_container(ctx, run_id: str):
    _, out = naming.work_containers(ctx.settings.work_prefix, run_id)
    return ctx.blobs.get_container_client(out)


def blob(container, name: str) -> bytes | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return container.download_blob(name).readall()
    except ResourceNotFoundError:
        return None


def tasks_completed(client, run_id: str, count: int) -> bool:
    tasks = batch_mod.list_tasks(client, run_id, select=["id", "state"])
    return len(tasks) == count and all(t.state == "completed" for t in tasks)


def assert_manifest_matches_blobs(container, task_id: str, prefix: str) -> list[str]:
    """The manifest names exactly the blobs under `prefix`, with their sizes and SHA-256 (computed
    here from the blobs), and each blob passes verify_stream. Returns the recorded paths."""
    manifest = parse(blob(container, naming.task_manifest(task_id)))
    listed = {b.name[len(prefix):]: b.size for b in container.list_blobs(name_starts_with=prefix)}
    assert check_listing(manifest, listed) == []
    assert sorted(listed) == [e.path for e in manifest.entries]
    for entry in manifest.entries:
        data = blob(container, prefix + entry.path)
        assert entry == ManifestEntry(entry.path, len(data), hashlib.sha256(data).hexdigest())
        stream = container.download_blob(prefix + entry.path).chunks()
        assert b"".join(verify_stream(stream, entry, task_id)) == data
    return [e.path for e in manifest.entries]


def test_task_manifests_record_outputs_and_failed_tasks_keep_their_exit_code(ctx, batch):
    job = {"command": COMMAND, "input": {"items": [{"n": 0}, {"n": 1}, {"n": 2}]},
           "on_task_failure": "partial", "retries": 0}
    d = drop(ctx, "manifests.json", job)
    accept(ctx, d.container, d.name)
    # the monitor may ask for finalize, but nobody runs it yet: the work containers stay
    wait_for(lambda: watch(ctx) is not None and tasks_completed(batch, d.run_id, 3), timeout=60,
             what="all tasks completed")
    out = output_container(ctx, d.run_id)

    assert assert_manifest_matches_blobs(out, "t000000", naming.task_outputs("t000000")) == [
        "nested/deeper/random.bin", "nested/empty", "output.jsonl", "with space.txt"]
    assert blob(out, naming.task_manifest("t000001")) == b"batchdrop-manifest 1\n"  # it really wrote nothing
    assert blob(out, naming.task_manifest("t000002")) is None

    tasks = {t["id"]: t["executionInfo"] for t in batch_mod.finished_tasks(batch, d.run_id)}
    assert {t: (i["result"], i["exitCode"]) for t, i in tasks.items()} == {
        "t000000": ("success", 0), "t000001": ("success", 0), "t000002": ("failure", 3)}
    assert blob(out, f"{naming.task_logs('t000002')}stderr.txt") == b"task two fails\n"

    final = run_to_end(ctx, d.run_id, deadline_s=60)
    assert final["state"] == "succeeded", final  # partial: what succeeded is merged, as before
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") == b'{"n":0}\n'
    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    assert [(e["task_id"], e["outcome"], e["exit_code"]) for e in report["entries"]] == [
        ("t000000", "succeeded", 0), ("t000001", "succeeded", 0), ("t000002", "failed", 3)]


def test_the_merge_task_records_its_output_dir(ctx, batch):
    job = {"command": 'cat "$INPUT_PATH" > "$OUTPUT_PATH"', "input": {"items": [2, 1]},
           "merge": {"command": 'cat "$OUTPUTS_DIR"/*/output.txt | sort -n > "$OUTPUT_PATH"; '
                                'ls "$OUTPUTS_DIR" > "$OUTPUT_DIR/task list.txt"', "extension": "txt"}}
    d = drop(ctx, "merge-manifest.json", job)
    accept(ctx, d.container, d.name)

    def merge_task_done() -> bool:
        watch(ctx)
        task = batch_mod.get_task(batch, d.run_id, batch_mod.MERGE_TASK_ID)
        if task is not None and task.state == "completed":
            return True  # before the finalize that collects it (and deletes the work containers)
        drain_finalize(ctx)  # the first one starts the merge task
        return False

    wait_for(merge_task_done, timeout=90, interval=0.2, what="merge task completed")
    out = output_container(ctx, d.run_id)
    assert assert_manifest_matches_blobs(out, batch_mod.MERGE_TASK_ID, "merged/") == ["output.txt", "task list.txt"]
    assert naming.task_manifest(batch_mod.MERGE_TASK_ID) == "manifests/merge.txt"
    for task_id in ("t000000", "t000001"):
        assert assert_manifest_matches_blobs(out, task_id, naming.task_outputs(task_id)) == ["output.txt"]

    final = run_to_end(ctx, d.run_id, deadline_s=60)
    assert final["state"] == "succeeded", final
    assert results_blob(ctx, f"{d.run_id}/output.txt") == b"1\n2\n"

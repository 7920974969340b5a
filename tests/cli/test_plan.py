"""`batchdrop plan`: the table and its recommendation, --json, --sample on a tiny job, inputs counted
locally and through storage (the session's Azurite), and the errors with their exit codes."""
from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from click.testing import CliRunner

from shared import planner
from shared.pricing import PriceTable

CLEARED = ("BATCHDROP_SETTINGS", "BATCHDROP_STORAGE_ACCOUNT", "BATCHDROP_STORAGE_CONNECTION_STRING",
           "AZURE_STORAGE_CONNECTION_STRING", "BATCHDROP_DEBUG", "AZURE_ENV_NAME", "COLUMNS")
# sleeps 0.1 s an item after checking that it sees a task's contract (exit 9 if not)
CONTRACT = ('test -f "$INPUT_PATH" && test -d "$OUTPUT_DIR" && test "$(dirname "$OUTPUT_PATH")" = "$OUTPUT_DIR" '
            '&& test -f "$CONFIG_PATH" && test "$TASK_INDEX" = 0 && test "$TASK_COUNT" = 2 '
            '|| { echo "not a task contract" >&2; exit 9; }; '
            'while read -r _; do sleep 0.1; done < "$INPUT_PATH"; cp "$INPUT_PATH" "$OUTPUT_PATH"')


def write_settings(folder: Path, **values: str) -> Path:
    path = folder / f"settings-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({"Values": {"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                           "BATCH_ACCOUNT_URL": "http://127.0.0.1:9", "POOL_MAX_NODES": "10",
                                           "POOL_VM_SIZE": "standard_d2s_v3", **values}}))
    return path


def batchdrop(settings: Path, *args: str):
    """`batchdrop ARGS` in this process (stdout and stderr apart, not a terminal)."""
    from batchdrop_cli.main import cli

    env: dict[str, str | None] = {name: None for name in CLEARED}
    env["BATCHDROP_SETTINGS"] = str(settings)
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False, prog_name="batchdrop")


def job(folder: Path, doc: dict, name: str = "job.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


HUNDRED = {"command": "true", "input": {"items": list(range(100))}, "items_per_task": 10}


def test_table_and_recommendation(tmp_path):
    result = batchdrop(write_settings(tmp_path), "plan", str(job(tmp_path, HUNDRED)), "--seconds-per-item", "30",
                       "--deadline", "35")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "job.json: 100 items (inline); 30 s per item (given)" in out
    assert "auto pool: standard_d2s_v3, dedicated, 1 slot per node" in out
    assert ("assumes node allocation 240 s, per task 5 s, monitor tick 30 s (watching a last wave 15 s), "
            "queue poll 2 s") in out
    assert "deadline: 0:35:00" in out
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0] in ("->", *map(str, range(1, 101)))]
    sizes = [r[1] if r[0] == "->" else r[0] for r in rows]
    assert sizes == ["1", "2", "5", "10", "20", "50", "100"]  # 1, 2, 5, ... and the job's own 10
    assert "10 (job)" in out
    chosen = next(r for r in rows if r[0] == "->")
    # 50 a task: 2 tasks on 2 nodes, 1 wave of 1505 s: the cheapest finishing within 35 minutes
    assert chosen[1:7] == ["50", "10", "2", "2", "1", "0:25:05"]
    # wall and node time as in tests/unit/test_planner.py (1759.775 s; 2 x 240 + 2 x 1514.77 s = 0.975 h)
    assert ("recommended: items_per_task 50 with max_nodes 10: 2 tasks on 2 nodes in 1 wave, wall 0:29:19, "
            "0.97 node-hours, 0.0936 USD; the cheapest of the 6 that finish within the deadline") in out


def test_json_agrees_with_the_planner(tmp_path):
    result = batchdrop(write_settings(tmp_path), "plan", str(job(tmp_path, HUNDRED)), "--seconds-per-item", "30",
                       "--max-nodes", "2,5", "--items-per-task", "10", "--items-per-task", "50", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["items"], doc["seconds_per_item"], doc["sample"], doc["current_items_per_task"]) == (100, 30, None, 10)
    assert [(c["items_per_task"], c["max_nodes"]) for c in doc["candidates"]] == [(10, 2), (50, 2), (10, 5), (50, 5)]
    expected = planner.plan(planner.Workload(100, 30.0, task_timeout_s=3600, max_tasks=100_000), [10, 50], [2, 5],
                            planner.Pool("standard_d2s_v3"), planner.Overheads(), PriceTable.default())
    assert doc["candidates"] == [c.as_json() for c in expected.candidates]
    assert doc["recommended"] == expected.recommendation.choice.as_json()
    assert doc["meets_deadline"] is None and doc["deadline_s"] is None
    assert doc["overheads"] == planner.Overheads().as_dict()
    assert doc["candidates"][0]["cost"]["prices"]["region"] == "eastus"


def test_sample_runs_the_command_as_a_task_and_measures_it(tmp_path):
    path = job(tmp_path, {"command": CONTRACT, "input": {"items": list(range(6))}, "items_per_task": 3,
                          "config": {"k": 1}})
    result = batchdrop(write_settings(tmp_path), "plan", str(path), "--sample", "4", "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "running the job's command here on 4 of 6 items" in result.stderr
    doc = json.loads(result.stdout)
    sample = doc["sample"]
    assert (sample["items"], sample["runs"], sample["no_output"]) == (4, 1, 0)
    assert 0.4 <= sample["seconds"] < 10
    assert doc["seconds_per_item"] == pytest.approx(sample["seconds"] / 4, rel=1e-2)  # "seconds" is rounded


def test_a_failing_sample_exits_1_with_its_stderr(tmp_path):
    path = job(tmp_path, {"command": 'echo "it broke on $(wc -l < "$INPUT_PATH") lines" >&2; exit 3',
                          "input": {"items": [1, 2, 3]}})
    result = batchdrop(write_settings(tmp_path), "plan", str(path), "--sample", "2")
    assert result.exit_code == 1
    assert "the sample failed: the command exited with 3 on 2 item(s)" in result.stderr
    assert "it broke on 2 lines" in result.stderr and result.stdout == ""


def test_a_local_input_file_is_counted_as_the_run_would_split_it(tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_bytes(b'id,text\n1,plain\n2,"two\nlines"\n3,"a ""quote"""\n')
    blob_job = job(tmp_path, {"command": "true", "input": {"blob": "data/x.jsonl"}})
    result = batchdrop(write_settings(tmp_path), "plan", str(blob_job), "--input", str(csv), "--seconds-per-item",
                       "1", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["items"] == 3 and doc["items_source"] == f"local file {csv} (csv)"

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    nothing = batchdrop(write_settings(tmp_path), "plan", str(blob_job), "--input", str(empty), "--seconds-per-item",
                        "1")
    assert nothing.exit_code == 2 and "holds no jsonl records" in nothing.stderr


def test_errors_and_exit_codes(tmp_path):
    settings = write_settings(tmp_path)
    good = str(job(tmp_path, HUNDRED))
    neither = batchdrop(settings, "plan", good)
    assert neither.exit_code == 2 and "--seconds-per-item S, or --sample N" in neither.stderr
    both = batchdrop(settings, "plan", good, "--seconds-per-item", "1", "--sample", "2")
    assert both.exit_code == 2
    missing = batchdrop(settings, "plan", str(tmp_path / "nope.json"), "--seconds-per-item", "1")
    assert missing.exit_code == 4 and "does not exist" in missing.stderr
    typo = job(tmp_path, {"comand": "true", "input": {"items": [1]}}, "typo.json")
    invalid = batchdrop(settings, "plan", str(typo), "--seconds-per-item", "1")
    assert invalid.exit_code == 2 and "typo.json: invalid job file" in invalid.stderr and "comand" in invalid.stderr
    no_input = batchdrop(settings, "plan", good, "--input", str(tmp_path / "gone.jsonl"), "--seconds-per-item", "1")
    assert no_input.exit_code == 4 and "gone.jsonl does not exist" in no_input.stderr
    prefix = job(tmp_path, {"command": "true", "input": {"prefix": "data/parts/"}}, "prefix.json")
    per_task = batchdrop(settings, "plan", str(prefix), "--items-per-task", "5", "--seconds-per-item", "1")
    assert per_task.exit_code == 2 and "one task per blob" in per_task.stderr
    for bad in (["--items-per-task", "0,x"], ["--deadline", "soon"], ["--seconds-per-item", "-1"], ["--sample", "0"]):
        usage = batchdrop(settings, "plan", good, "--seconds-per-item", "1", *bad) if bad[0] != "--seconds-per-item" \
            else batchdrop(settings, "plan", good, *bad)
        assert usage.exit_code == 2, bad


def test_an_existing_pool_needs_its_size_and_is_not_priced(tmp_path):
    settings = write_settings(tmp_path)
    path = str(job(tmp_path, {**HUNDRED, "pool": {"id": "my-pool"}}))
    unsized = batchdrop(settings, "plan", path, "--seconds-per-item", "3")
    assert unsized.exit_code == 2 and "give its node count with --max-nodes" in unsized.stderr
    sized = batchdrop(settings, "plan", path, "--seconds-per-item", "3", "--max-nodes", "3")
    assert sized.exit_code == 0, sized.stderr
    assert "pool my-pool (yours): 3 node(s)" in sized.stdout
    assert "cost not estimated: runs on pool 'my-pool', shared with other work" in sized.stdout


# ------------------------------------------------------------------ inputs read through storage (Azurite)


@pytest.fixture
def storage(azurite, tmp_path):
    """A data container of this test's own on the session's Azurite, and settings naming it."""
    data = f"plan-{uuid.uuid4().hex[:8]}"
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    service.create_container(data)
    settings = write_settings(tmp_path, AzureWebJobsStorage=azurite.connection_string, DATA_CONTAINER=data)
    return service.get_container_client(data), settings


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buffer.getvalue()


def test_blob_and_prefix_inputs_are_read_through_storage(storage, tmp_path):
    container, settings = storage
    data = container.container_name
    container.upload_blob("big.jsonl", b"".join(b'{"i": %d}\n' % i for i in range(250)))
    container.upload_blob("app.zip", zipped({"app.sh": 'cp "$INPUT_PATH" "$OUTPUT_PATH"; cat "$CONFIG_PATH" >&2\n'}))
    container.upload_blob("config.json", b'{"from": "blob"}')
    for i in range(3):
        container.upload_blob(f"parts/p{i}.txt", b"one line\n")

    blob_job = job(tmp_path, {"command": 'sh "$RESOURCES_DIR/app.sh"', "input": {"blob": f"{data}/big.jsonl"},
                              "items_per_task": 25, "resources": [{"blob": f"{data}/app.zip", "unzip": True}],
                              "config": {"blob": f"{data}/config.json"}})
    counted = batchdrop(settings, "plan", str(blob_job), "--sample", "10", "--json")
    assert counted.exit_code == 0, counted.stderr
    doc = json.loads(counted.stdout)
    assert doc["items"] == 250 and doc["items_source"] == f"blob {data}/big.jsonl (jsonl)"
    assert doc["sample"]["items"] == 10 and doc["sample"]["no_output"] == 0
    assert doc["current_items_per_task"] == 25 and 25 in [c["items_per_task"] for c in doc["candidates"]]

    prefix_job = job(tmp_path, {"command": 'cp "$INPUT_PATH" "$OUTPUT_PATH"', "input": {"prefix": f"{data}/parts/"}},
                     "prefix.json")
    blobs = batchdrop(settings, "plan", str(prefix_job), "--sample", "2", "--max-nodes", "1,3")
    assert blobs.exit_code == 0, blobs.stderr
    assert f"prefix.json: 3 blobs (under {data}/parts/, one task each); " in blobs.stdout
    assert "measured on 2 blobs here" in blobs.stdout and "in 2 run(s)" in blobs.stdout

    gone = job(tmp_path, {"command": "true", "input": {"blob": f"{data}/gone.jsonl"}}, "gone.json")
    missing = batchdrop(settings, "plan", str(gone), "--seconds-per-item", "1")
    assert missing.exit_code == 4 and f"blob {data}/gone.jsonl does not exist" in missing.stderr
    nothing = job(tmp_path, {"command": "true", "input": {"prefix": f"{data}/none/"}}, "none.json")
    empty = batchdrop(settings, "plan", str(nothing), "--seconds-per-item", "1")
    assert empty.exit_code == 4 and "there are no blobs under" in empty.stderr


def test_storage_that_cannot_be_reached_exits_5(tmp_path):
    from tests.services import AZURITE_ACCOUNT, AZURITE_KEY, free_port

    port = free_port()
    dead = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};QueueEndpoint=http://127.0.0.1:{port}/q;")
    settings = write_settings(tmp_path, AzureWebJobsStorage=dead)
    path = job(tmp_path, {"command": "true", "input": {"blob": "data/x.jsonl"}})
    result = batchdrop(settings, "plan", str(path), "--seconds-per-item", "1")
    assert result.exit_code == 5 and "cannot reach blob storage" in result.stderr
    # inline items need no storage at all
    assert batchdrop(settings, "plan", str(job(tmp_path, HUNDRED, "inline.json")), "--seconds-per-item", "1").exit_code == 0

"""Live, against a deployed environment (`make test-azure`): drop a small job file into intake the
way a user does, wait for its results, check that nothing it created is left (no Batch job, no
pool, no work container), and print the run's timings.

Needs what `azd up` gives the deployer: Storage Blob Data Contributor on the account and Azure
Batch Account Reader on the Batch account (infra/modules/roles.bicep), and a sign-in that
DefaultAzureCredential finds (`az login` or `azd auth login`). The pool is an auto pool of the
deployment's default VM size (POOL_VM_SIZE) unless BATCHDROP_LIVE_VM_SIZE names another; the
Batch account needs core quota for one such node. BATCHDROP_LIVE_TIMEOUT_MIN bounds the wait
(default 45: a first pool takes minutes to allocate).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime

import pytest

from shared import naming
from tests.infra.live import environment

TIMEOUT_S = float(os.environ.get("BATCHDROP_LIVE_TIMEOUT_MIN", "45")) * 60
CLEANUP_TIMEOUT_S = 15 * 60
FINAL = ("succeeded", "failed", "rejected", "cancelled")
ITEMS = [{"id": i, "text": f"item {i}"} for i in range(6)]


@pytest.fixture(scope="module")
def deployment():
    values, reason = environment.load()
    if values is None:
        pytest.skip(reason)
    return values


@pytest.fixture(scope="module")
def clients(deployment):
    from azure.batch import BatchClient
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient

    credential = DefaultAzureCredential()
    return (BlobServiceClient(deployment["AZURE_STORAGE_BLOB_ENDPOINT"], credential=credential),
            BatchClient(endpoint=deployment["AZURE_BATCH_ACCOUNT_URL"], credential=credential))


def read_json(blobs, container: str, name: str) -> dict | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return json.loads(blobs.get_blob_client(container, name).download_blob().readall())
    except ResourceNotFoundError:
        return None


def wait_for(what: str, check, timeout_s: float, every_s: float = 10):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def leftovers(deployment, blobs, batch, run_id: str) -> list[str]:
    from azure.core.exceptions import ResourceNotFoundError

    left = []
    try:
        job = batch.get_job(run_id)
        left.append(f"Batch job {run_id} ({job.state})")
    except ResourceNotFoundError:
        pass
    for pool in batch.list_pools():
        if any(m.name == "batchdrop-run" and m.value == run_id for m in (pool.metadata or [])):
            left.append(f"pool {pool.id}")
    for container in naming.work_containers(deployment["WORK_CONTAINER_PREFIX"], run_id):
        if blobs.get_container_client(container).exists():
            left.append(f"container {container}")
    return left


def test_drop_a_job_and_watch_it_finish_and_clean_up(deployment, clients):
    blobs, batch = clients
    intake, results = deployment["INTAKE_CONTAINER"], deployment["RESULTS_CONTAINER"]
    job = {"name": "live-check", "command": 'cp "$INPUT_PATH" "$OUTPUT_PATH"', "input": {"items": ITEMS},
           "tasks": 2, "merge": "jsonl", "retries": 1, "task_timeout_minutes": 10, "pool": {"max_nodes": 1}}
    if os.environ.get("BATCHDROP_LIVE_VM_SIZE"):
        job["pool"]["vm_size"] = os.environ["BATCHDROP_LIVE_VM_SIZE"]
    blob_name = f"live-check-{uuid.uuid4().hex[:8]}.json"
    dropped = time.monotonic()
    props = blobs.get_blob_client(intake, blob_name).upload_blob(json.dumps(job).encode(), overwrite=False)
    candidates = naming.run_id_candidates("live-check", intake, blob_name, props["etag"])

    def status():
        for run_id in candidates:
            found = read_json(blobs, results, f"{run_id}/status.json")
            if found and found.get("job_file") == f"{intake}/{blob_name}" and \
                    found.get("job_file_etag") == props["etag"].strip('"'):
                return run_id, found
        return None

    run_id, _ = wait_for("status.json (is the Event Grid subscription in place? azd hooks run postdeploy)",
                             status, 10 * 60, every_s=5)
    accepted_after = time.monotonic() - dropped

    def final():
        record = read_json(blobs, results, f"{run_id}/status.json")
        return record if record and record.get("state") in FINAL else None

    record = wait_for(f"run {run_id} to end", final, TIMEOUT_S, every_s=15)
    ended_after = time.monotonic() - dropped
    error = read_json(blobs, results, f"{run_id}/error.json")
    assert record["state"] == "succeeded", f"run {run_id} ended {record['state']}: {error}"
    output = blobs.get_blob_client(results, f"{run_id}/output.jsonl").download_blob().readall().decode()
    assert [json.loads(line) for line in output.splitlines() if line.strip()] == ITEMS
    report = read_json(blobs, results, f"{run_id}/report.json")
    assert report and report["tasks"]["total"] == 2 and report["tasks"]["succeeded"] == 2

    deadline = time.monotonic() + CLEANUP_TIMEOUT_S
    while left := leftovers(deployment, blobs, batch, run_id):
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} ended {CLEANUP_TIMEOUT_S / 60:.0f} minutes ago and left: {', '.join(left)}")
        time.sleep(15)
    cleaned_after = time.monotonic() - dropped
    blobs.get_blob_client(intake, blob_name).delete_blob()

    def at(key):
        text = record.get(key)
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None

    created, submitted, finished = at("created_at"), at("submitted_at"), at("finished_at")
    durations = [t.get("duration_s") for t in report["entries"] if t.get("duration_s") is not None]
    print(f"\nrun {run_id} on {deployment['AZURE_FUNCTION_APP_NAME']} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    print(f"  dropped -> status.json seen      {accepted_after:8.1f} s")
    if created and submitted:
        print(f"  accepted -> tasks submitted      {(submitted - created).total_seconds():8.1f} s")
    if submitted and finished:
        print(f"  submitted -> finished (pool, tasks, merge) {(finished - submitted).total_seconds():8.1f} s")
    print(f"  dropped -> {record['state']:<22}{ended_after:8.1f} s")
    print(f"  dropped -> nothing left          {cleaned_after:8.1f} s")
    if durations:
        print(f"  task durations                   {', '.join(f'{d:.1f} s' for d in durations)}")

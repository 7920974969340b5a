"""Resource-file downloads and output-file uploads ride out short storage outages (issue "infrastructure
blips never fail a run"), against the real emulator and a real Azurite.

The injected outage (`POST /_emulator/storage-outage`) fails every transfer attempt as a refused
connection would; one test restarts a real on-disk Azurite instead. The emulators here have their own
retry settings (`--transfer-retries` / `--transfer-retry-delay`), so the session emulator is untouched.
"""
from __future__ import annotations

import datetime
import email.message
import http.client
import subprocess
import sys
import time
import urllib.error
import uuid
from pathlib import Path

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from batchemu.process import EmulatorProcess
from batchemu.transfer_retry import RetryPolicy, is_transient
from tests.services import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, start_azurite, stop_process, wait_for_port

from .conftest import control, make_client, read_file, uid, wait_for, wait_task

RETRIES, FIRST_DELAY = 4, 0.25  # waits 0.25 + 0.5 + 1 + 2: a 3.75 s budget
BUDGET = 3.75
LONG_OUTAGE = 60.0  # longer than any budget here; every test that starts one ends it

# A task command that starts an outage from inside the task (the URL of the emulator is in its
# environment), then writes the file its output upload will meet the outage with.
OUTAGE_SCRIPT = """\
import json, os, sys, urllib.request
req = urllib.request.Request(os.environ["AZ_BATCH_ACCOUNT_URL"] + "/_emulator/storage-outage", method="POST",
                             data=json.dumps({"seconds": float(sys.argv[1])}).encode())
urllib.request.urlopen(req, timeout=10).read()
with open("out.txt", "w") as f:
    f.write("written before the outage\\n")
"""


def _emulator(tmp_path_factory, name: str, **kwargs) -> EmulatorProcess:
    return EmulatorProcess(data_dir=tmp_path_factory.mktemp(name), container_mode="host", **kwargs).start()


@pytest.fixture(scope="module")
def retry_emu(tmp_path_factory):
    emulator = _emulator(tmp_path_factory, "retry-emu", transfer_retries=RETRIES, transfer_retry_delay=FIRST_DELAY)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def retry_client(retry_emu):
    return make_client(retry_emu)


@pytest.fixture(scope="module")
def retry_pool(retry_client):
    pid = uid("pool")
    retry_client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="standard_d2s_v3", target_dedicated_nodes=1,
                                                      task_slots_per_node=4))
    return pid


@pytest.fixture
def job(retry_emu, retry_client, retry_pool):
    """A job on the retry emulator, with its transfer counters zeroed; any outage is ended afterwards."""
    jid = uid("job")
    retry_client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=retry_pool)))
    control(retry_emu, "/_emulator/stats/reset")
    yield jid
    control(retry_emu, "/_emulator/storage-outage", method="DELETE")


@pytest.fixture(scope="module")
def blobs(azurite):
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def _container_sas(blob_port: int, name: str) -> str:
    perm = ContainerSasPermissions(read=True, write=True, create=True, list=True)
    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    return (f"http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT}/{name}?"
            + generate_container_sas(AZURITE_ACCOUNT, name, account_key=AZURITE_KEY, permission=perm, expiry=expiry))


@pytest.fixture
def container(blobs, azurite):
    """A container with one blob `in.txt`; `.sas` is its container SAS URL (read, write, list)."""
    name = f"c{uuid.uuid4().hex[:12]}"
    client = blobs.create_container(name)
    client.upload_blob("in.txt", b"input-content")

    class C:
        sas = _container_sas(azurite.blob_port, name)
        blob = client
    return C


def _blob_url(container_sas: str, blob: str) -> str:
    base, query = container_sas.split("?", 1)
    return f"{base}/{blob}?{query}"


def _output(container_sas: str) -> m.OutputFile:
    return m.OutputFile(file_pattern="out.txt", destination=m.OutputFileDestination(
        container=m.OutputFileBlobContainerDestination(container_url=container_sas, path="out.txt")),
        upload_options=m.OutputFileUploadConfiguration(upload_condition="taskcompletion"))


def _transfers(emu) -> dict:
    status, stats = control(emu, "/_emulator/stats", method="GET")
    assert status == 200
    return stats["transfers"]


def _outage(emu, seconds: float) -> dict:
    status, body = control(emu, "/_emulator/storage-outage", {"seconds": seconds})
    assert status == 200, body
    return body


def _downloading(container) -> list[m.ResourceFile]:
    return [m.ResourceFile(http_url=_blob_url(container.sas, "in.txt"), file_path="in.txt")]


@pytest.fixture(scope="module")
def outage_script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scripts") / "outage.py"
    path.write_text(OUTAGE_SCRIPT)
    return path


def _seconds(t: m.BatchTask) -> float:
    info = t.execution_info
    return (info.end_time - info.start_time).total_seconds()


# ---- which failures are retried, and how long ------------------------------------------------------------

def _http(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://storage/c/b", code, "x", email.message.Message(), None)


@pytest.mark.parametrize("exc,transient", [
    (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), True),
    (urllib.error.URLError(TimeoutError("timed out")), True),
    (ConnectionResetError(104, "reset"), True),
    (http.client.RemoteDisconnected("closed"), True),
    (http.client.IncompleteRead(b"", 10), True),
    (TimeoutError("timed out"), True),
    (_http(500), True), (_http(503), True), (_http(408), True), (_http(429), True),
    (_http(404), False), (_http(403), False), (_http(401), False), (_http(400), False), (_http(409), False),
    (urllib.error.URLError("unknown url type"), False),
    (OSError(28, "No space left on device"), False),
])
def test_only_transient_failures_are_retried(exc, transient):
    assert is_transient(exc) is transient


def test_retry_policy_delays():
    assert RetryPolicy().delays() == (0.5, 1, 2, 4, 8) and RetryPolicy().budget == 15.5
    assert RetryPolicy(7, 0.5).delays()[-2:] == (8, 8)  # capped
    assert RetryPolicy(0).delays() == () and RetryPolicy(RETRIES, FIRST_DELAY).budget == BUDGET
    with pytest.raises(ValueError):
        RetryPolicy(-1)


# ---- downloads -------------------------------------------------------------------------------------------

def test_download_rides_out_an_outage_shorter_than_the_budget(retry_emu, retry_client, job, container):
    _outage(retry_emu, 1.0)
    retry_client.create_task(job, m.BatchTaskCreateOptions(id="t", command_line="cat in.txt",
                                                           resource_files=_downloading(container)))
    t = wait_task(retry_client, job, "t")
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert read_file(retry_client, job, "t", "stdout.txt") == "input-content"
    stats = _transfers(retry_emu)
    assert stats["downloadRetries"] >= 1 and stats["outageFailures"] >= 1 and stats["exhausted"] == 0
    assert stats["retries"] == stats["downloadRetries"] and stats["uploadRetries"] == 0


def test_container_listing_rides_out_an_outage(retry_emu, retry_client, job, container):
    _outage(retry_emu, 1.0)
    retry_client.create_task(job, m.BatchTaskCreateOptions(
        id="t", command_line="cat data/in.txt",
        resource_files=[m.ResourceFile(storage_container_url=container.sas, file_path="data")]))
    t = wait_task(retry_client, job, "t")
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert read_file(retry_client, job, "t", "stdout.txt") == "input-content"
    assert _transfers(retry_emu)["downloadRetries"] >= 1


def test_download_outage_longer_than_the_budget_fails_then_reactivation_succeeds(retry_emu, retry_client, job,
                                                                                  container):
    _outage(retry_emu, LONG_OUTAGE)
    retry_client.create_task(job, m.BatchTaskCreateOptions(id="t", command_line="cat in.txt",
                                                           resource_files=_downloading(container)))
    t = wait_task(retry_client, job, "t", timeout=BUDGET + 15)
    info = t.execution_info
    assert info.result == "failure" and info.exit_code is None
    fi = info.failure_info
    assert (fi.category, fi.code) == ("servererror", "BlobDownloadMiscError")
    assert "sig=" not in fi.message and all("sig=" not in (d.value or "") for d in fi.details or [])
    assert any("refused" in (d.value or "").lower() for d in fi.details or []), fi.details
    assert _seconds(t) >= BUDGET - 0.1  # it waited out its whole budget
    stats = _transfers(retry_emu)
    assert (stats["outageFailures"], stats["downloadRetries"], stats["exhausted"]) == (RETRIES + 1, RETRIES, 1)

    # storage is back: the pipeline reactivates a task that infrastructure failed, and it runs again
    status, body = control(retry_emu, "/_emulator/storage-outage", method="DELETE")
    assert status == 200 and body["active"] is False
    retry_client.reactivate_task(job, "t")
    t = wait_task(retry_client, job, "t")
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert t.execution_info.retry_count == 0


def test_not_found_is_never_retried(retry_emu, retry_client, job, container):
    retry_client.create_task(job, m.BatchTaskCreateOptions(id="t", command_line="true", resource_files=[
        m.ResourceFile(http_url=_blob_url(container.sas, "missing.txt"), file_path="x.txt")]))
    t = wait_task(retry_client, job, "t")
    fi = t.execution_info.failure_info
    assert (fi.category, fi.code) == ("usererror", "BlobNotFound")
    assert _seconds(t) < FIRST_DELAY  # a single attempt: no wait
    assert _transfers(retry_emu)["retries"] == 0


def test_a_task_ended_while_backing_off_stops_at_once(retry_emu, retry_client, job, container):
    _outage(retry_emu, LONG_OUTAGE)
    retry_client.create_task(job, m.BatchTaskCreateOptions(id="t", command_line="true",
                                                           resource_files=_downloading(container)))
    wait_for(lambda: _transfers(retry_emu)["downloadRetries"] >= 2, BUDGET, what="the download backing off")
    began = time.monotonic()
    retry_client.terminate_task(job, "t")
    t = wait_task(retry_client, job, "t", timeout=5)
    assert time.monotonic() - began < 1.0
    assert t.execution_info.failure_info.code == "TaskEnded"
    assert _transfers(retry_emu)["exhausted"] == 0


# ---- uploads ---------------------------------------------------------------------------------------------

def test_upload_rides_out_an_outage_shorter_than_the_budget(retry_emu, retry_client, job, container, outage_script):
    retry_client.create_task(job, m.BatchTaskCreateOptions(
        id="t", command_line=f"{sys.executable} {outage_script} 1.0", output_files=[_output(container.sas)]))
    t = wait_task(retry_client, job, "t")
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert container.blob.download_blob("out.txt").readall() == b"written before the outage\n"
    stats = _transfers(retry_emu)
    assert stats["uploadRetries"] >= 1 and stats["outageFailures"] >= 1 and stats["downloadRetries"] == 0


def test_upload_outage_longer_than_the_budget_fails(retry_emu, retry_client, job, container, outage_script):
    retry_client.create_task(job, m.BatchTaskCreateOptions(
        id="t", command_line=f"{sys.executable} {outage_script} {LONG_OUTAGE}",
        output_files=[_output(container.sas)]))
    t = wait_task(retry_client, job, "t", timeout=BUDGET + 15)
    info = t.execution_info
    assert info.exit_code == 0 and info.result == "failure"
    assert (info.failure_info.category, info.failure_info.code) == ("usererror", "FileUploadMiscError")
    assert "refused" in info.failure_info.message.lower() and "sig=" not in info.failure_info.message
    assert "out.txt" not in {b.name for b in container.blob.list_blobs()}
    stats = _transfers(retry_emu)
    assert (stats["outageFailures"], stats["uploadRetries"], stats["exhausted"]) == (RETRIES + 1, RETRIES, 1)


# ---- the setting and the endpoint ------------------------------------------------------------------------

def test_zero_retries_is_a_single_attempt(tmp_path_factory, container):
    emulator = _emulator(tmp_path_factory, "once-emu", transfer_retries=0)
    try:
        assert emulator.health()["transferRetries"] == 0
        client = make_client(emulator)
        client.create_pool(m.BatchPoolCreateOptions(id="p", vm_size="standard_d2s_v3", target_dedicated_nodes=1))
        client.create_job(m.BatchJobCreateOptions(id="j", pool_info=m.BatchPoolInfo(pool_id="p")))
        _outage(emulator, LONG_OUTAGE)
        client.create_task("j", m.BatchTaskCreateOptions(id="t", command_line="true",
                                                         resource_files=_downloading(container)))
        t = wait_task(client, "j", "t")
        assert t.execution_info.failure_info.code == "BlobDownloadMiscError"
        assert _seconds(t) < 1.0
        stats = _transfers(emulator)
        assert (stats["outageFailures"], stats["retries"], stats["exhausted"]) == (1, 0, 1)
    finally:
        emulator.stop()


def test_storage_outage_endpoint(retry_emu):
    assert retry_emu.health()["transferRetries"] == RETRIES
    assert retry_emu.health()["transferRetryBudgetSeconds"] == BUDGET
    body = _outage(retry_emu, 30)
    assert body["active"] is True and 29 < body["remainingSeconds"] <= 30
    status, body = control(retry_emu, "/_emulator/storage-outage", method="GET")
    assert status == 200 and body["active"] is True
    status, body = control(retry_emu, "/_emulator/storage-outage", method="DELETE")
    assert status == 200 and body == {"active": False, "remainingSeconds": 0}
    assert _outage(retry_emu, 0.2)["active"] is True
    wait_for(lambda: control(retry_emu, "/_emulator/storage-outage", method="GET")[1]["active"] is False, 3,
             what="the outage to end by itself")
    for bad in ({"seconds": "soon"}, {"seconds": -1}, {"seconds": True}, {}, {"seconds": 10 ** 6}):
        status, err = control(retry_emu, "/_emulator/storage-outage", bad)
        assert status == 400 and err["code"] == "InvalidPropertyValue", bad
    assert _transfers(retry_emu)["storageOutage"]["active"] is False


# ---- reactivate (REST "Reactivates a Task") --------------------------------------------------------------

def _conflict(client, job_id: str, task_id: str) -> str:
    with pytest.raises(HttpResponseError) as exc:
        client.reactivate_task(job_id, task_id)
    assert exc.value.status_code == 409
    return exc.value.error.code


def test_reactivate_is_refused_for_a_succeeded_or_unfinished_task(retry_client, job):
    retry_client.create_task(job, m.BatchTaskCreateOptions(id="ok", command_line="true"))
    retry_client.create_task(job, m.BatchTaskCreateOptions(id="busy", command_line="sleep 30"))
    wait_task(retry_client, job, "ok")
    assert _conflict(retry_client, job, "ok") == "TaskSucceeded"
    wait_task(retry_client, job, "busy", state="running")
    assert _conflict(retry_client, job, "busy") == "TaskNotCompleted"
    retry_client.terminate_task(job, "busy")


def test_reactivate_resets_a_failed_task(retry_client, job):
    """It fails until a marker exists in the node's shared directory; once marked, reactivation runs it again
    (for a second, so its state right after reactivation can be seen)."""
    retry_client.create_task(job, m.BatchTaskCreateOptions(
        id="f", command_line="/bin/sh -c 'test -e $AZ_BATCH_NODE_SHARED_DIR/again-$AZ_BATCH_JOB_ID || exit 3; sleep 1'",
        constraints=m.BatchTaskConstraints(max_task_retry_count=1)))
    t = wait_task(retry_client, job, "f")
    assert (t.execution_info.exit_code, t.execution_info.retry_count) == (3, 1)
    assert t.execution_info.failure_info.code == "FailureExitCode"
    retry_client.create_task(job, m.BatchTaskCreateOptions(
        id="mark", command_line="/bin/sh -c 'touch $AZ_BATCH_NODE_SHARED_DIR/again-$AZ_BATCH_JOB_ID'"))
    wait_task(retry_client, job, "mark")
    retry_client.reactivate_task(job, "f")
    t = retry_client.get_task(job, "f")
    assert t.state in ("active", "preparing", "running")
    assert t.execution_info.retry_count == 0
    assert t.execution_info.failure_info is None and t.execution_info.exit_code is None
    t = wait_task(retry_client, job, "f")
    assert t.execution_info.result == "success" and t.execution_info.retry_count == 0


def test_reactivate_is_refused_in_a_completed_job(retry_client, job):
    retry_client.create_task(job, m.BatchTaskCreateOptions(id="f", command_line="false"))
    wait_task(retry_client, job, "f")
    retry_client.begin_terminate_job(job, options={"terminateReason": "done"}, polling_interval=1).result()
    wait_for(lambda: retry_client.get_job(job).state == "completed", 10, what="the job completed")
    assert _conflict(retry_client, job, "f") == "JobCompleted"


# ---- a real storage restart ------------------------------------------------------------------------------

def test_a_real_azurite_restart_is_absorbed(tmp_path_factory):
    """Azurite on disk is stopped (SIGTERM) while a task downloads its input, and restarted on the same
    ports and location once the download is retrying: the task succeeds, with the default settings."""
    store = start_azurite(in_memory=False)
    emulator = _emulator(tmp_path_factory, "default-emu")
    restarted: Azurite | None = None
    try:
        assert emulator.health()["transferRetries"] == 5  # the defaults: 0.5, 1, 2, 4, 8 s
        blobs = BlobServiceClient.from_connection_string(store.connection_string)
        blobs.create_container("inputs").upload_blob("in.txt", b"kept across the restart")
        sas = _container_sas(store.blob_port, "inputs")
        client = make_client(emulator)
        client.create_pool(m.BatchPoolCreateOptions(id="p", vm_size="standard_d2s_v3", target_dedicated_nodes=1))
        client.create_job(m.BatchJobCreateOptions(id="j", pool_info=m.BatchPoolInfo(pool_id="p")))

        stop_process(store.proc)  # SIGTERM: Azurite saves its databases and exits
        down = time.monotonic()
        client.create_task("j", m.BatchTaskCreateOptions(id="t", command_line="cat in.txt", resource_files=[
            m.ResourceFile(http_url=_blob_url(sas, "in.txt"), file_path="in.txt")]))
        wait_for(lambda: _transfers(emulator)["downloadRetries"] >= 1, 10, what="the download retrying")
        # down for seconds even where the first retry and the restart are quick (0.97 s on a quiet machine)
        time.sleep(max(0.0, 1.5 - (time.monotonic() - down)))
        proc = subprocess.Popen(store.proc.args, cwd=store.workdir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        restarted = Azurite(store.blob_port, store.queue_port, store.table_port, proc, store.workdir)
        wait_for_port(store.blob_port, proc)
        outage = time.monotonic() - down

        t = wait_task(client, "j", "t", timeout=30)
        assert t.execution_info.result == "success", t.execution_info.failure_info
        assert read_file(client, "j", "t", "stdout.txt") == "kept across the restart"
        stats = _transfers(emulator)
        assert stats["downloadRetries"] >= 1 and stats["outageFailures"] == 0 and stats["exhausted"] == 0
        assert outage >= 1.0, outage  # a real outage of seconds, not a blip between two attempts
    finally:
        emulator.stop()
        (restarted or store).stop()

"""Resource files and output files against a real Azurite, with SAS URLs."""
from __future__ import annotations

import datetime
import uuid

import pytest
from azure.batch import models as m
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    generate_blob_sas,
    generate_container_sas,
)

from tests.services import AZURITE_ACCOUNT, AZURITE_KEY

from .conftest import control, read_file, uid, wait_task


@pytest.fixture(scope="module")
def blobs(azurite):
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def _expiry():
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)


@pytest.fixture
def container(blobs, azurite):
    name = f"c{uuid.uuid4().hex[:12]}"
    blobs.create_container(name)
    base = f"http://127.0.0.1:{azurite.blob_port}/{AZURITE_ACCOUNT}/{name}"

    class C:
        client = blobs.get_container_client(name)
        container = name
        url = base

        @staticmethod
        def sas(read=True, write=True, list_=True):
            perm = ContainerSasPermissions(read=read, write=write, create=write, list=list_)
            return base + "?" + generate_container_sas(AZURITE_ACCOUNT, name, account_key=AZURITE_KEY,
                                                       permission=perm, expiry=_expiry())

        @staticmethod
        def blob_sas(blob):
            return f"{base}/{blob}?" + generate_blob_sas(AZURITE_ACCOUNT, name, blob, account_key=AZURITE_KEY,
                                                         permission=BlobSasPermissions(read=True), expiry=_expiry())
    return C


def test_resource_files_http_and_container(client, job_id, container):
    container.client.upload_blob("single.txt", b"single-content")
    container.client.upload_blob("inputs/a.txt", b"A")
    container.client.upload_blob("inputs/sub/b.txt", b"B")
    container.client.upload_blob("other/c.txt", b"C")
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="rf", command_line="/bin/sh -c 'cat in/one.txt; echo; cat data/inputs/a.txt data/inputs/sub/b.txt; echo; ls data; "
                              "stat -c %a in/one.txt'",
        resource_files=[
            m.ResourceFile(http_url=container.blob_sas("single.txt"), file_path="in/one.txt", file_mode="0640"),
            m.ResourceFile(storage_container_url=container.sas(), blob_prefix="inputs/", file_path="data"),
        ]))
    t = wait_task(client, job_id, "rf")
    assert t.execution_info.result == "success", t.execution_info.failure_info
    assert read_file(client, job_id, "rf", "stdout.txt").split("\n") == ["single-content", "AB", "inputs", "640", ""]


def test_resource_file_download_failure(client, job_id, container):
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="missing", command_line="true",
        resource_files=[m.ResourceFile(http_url=container.blob_sas("nope.txt"), file_path="x.txt")]))
    t = wait_task(client, job_id, "missing")
    assert t.execution_info.result == "failure"
    fi = t.execution_info.failure_info
    assert fi.category == "usererror" and fi.code == "BlobNotFound"
    assert all("sig=" not in (d.value or "") for d in fi.details)  # no SAS in errors


def test_job_prep_with_resource_files_from_azurite(client, pool_id, container):
    container.client.upload_blob("tool.sh", b"echo tool-output\n")
    jid = uid("prepres")
    client.create_job(m.BatchJobCreateOptions(
        id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
        job_preparation_task=m.BatchJobPreparationTask(
            command_line="/bin/sh -c 'cp tool.sh $AZ_BATCH_NODE_SHARED_DIR/tool-$AZ_BATCH_JOB_ID.sh'",
            resource_files=[m.ResourceFile(http_url=container.blob_sas("tool.sh"), file_path="tool.sh")])))
    client.create_task(jid, m.BatchTaskCreateOptions(
        id="use", command_line="/bin/sh -c 'sh $AZ_BATCH_JOB_PREP_WORKING_DIR/tool.sh; "
                               "sh $AZ_BATCH_NODE_SHARED_DIR/tool-$AZ_BATCH_JOB_ID.sh'"))
    t = wait_task(client, jid, "use")
    assert t.execution_info.result == "success"
    assert read_file(client, jid, "use", "stdout.txt") == "tool-output\ntool-output\n"
    client.begin_delete_job(jid, polling_interval=1).result()


def _out(pattern, url, path=None, cond="taskcompletion"):
    return m.OutputFile(file_pattern=pattern, destination=m.OutputFileDestination(
        container=m.OutputFileBlobContainerDestination(container_url=url, path=path)),
        upload_options=m.OutputFileUploadConfiguration(upload_condition=cond))


def test_output_files_patterns_and_conditions(client, job_id, container):
    url = container.sas()
    outputs = [
        _out("**/*.txt", url, path="all"),
        _out("result.txt", url, path="named/final.txt", cond="tasksuccess"),
        _out("../std*.txt", url, path="logs"),
        _out("result.txt", url, path="onfail/result.txt", cond="taskfailure"),
    ]
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="ok", command_line="/bin/sh -c 'echo r > result.txt; mkdir -p d/e; echo n > d/e/nested.txt; echo hi'",
        output_files=outputs))
    t = wait_task(client, job_id, "ok")
    assert t.execution_info.result == "success", t.execution_info.failure_info
    names = sorted(b.name for b in container.client.list_blobs())
    assert names == ["all/d/e/nested.txt", "all/result.txt", "logs/stderr.txt", "logs/stdout.txt", "named/final.txt"]
    assert container.client.download_blob("named/final.txt").readall() == b"r\n"
    assert container.client.download_blob("logs/stdout.txt").readall() == b"hi\n"

    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="bad", command_line="/bin/sh -c 'echo f > result.txt; exit 2'",
        output_files=[_out("result.txt", url, path="failed/result.txt", cond="taskfailure"),
                      _out("result.txt", url, path="success-only.txt", cond="tasksuccess")]))
    t = wait_task(client, job_id, "bad")
    assert t.execution_info.exit_code == 2
    names = {b.name for b in container.client.list_blobs()}
    assert "failed/result.txt" in names and "success-only.txt" not in names


def test_output_upload_failure_fails_task(client, job_id, container):
    read_only = container.sas(write=False)
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="noperm", command_line="/bin/sh -c 'echo x > out.txt'", output_files=[_out("out.txt", read_only)]))
    t = wait_task(client, job_id, "noperm")
    assert t.execution_info.exit_code == 0 and t.execution_info.result == "failure"
    fi = t.execution_info.failure_info
    assert fi.category == "usererror" and fi.code == "FileUploadMiscError"
    assert "sig=" not in fi.message


def test_fail_upload_fault(client, job_id, container, emu):
    status, _ = control(emu, f"/_emulator/jobs/{job_id}/tasks/up/fail-upload", {})
    assert status == 200
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="up", command_line="/bin/sh -c 'echo x > out.txt'", output_files=[_out("out.txt", container.sas())]))
    t = wait_task(client, job_id, "up")
    assert t.execution_info.exit_code == 0 and t.execution_info.result == "failure"
    assert t.execution_info.failure_info.code == "FileUploadMiscError"
    assert "out.txt" not in {b.name for b in container.client.list_blobs()}


def test_large_output_file_uses_block_upload(client, job_id, container):
    size = 70 * 1024 * 1024  # over the 64 MiB single-put threshold: Put Block x9 + Put Block List
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="big", command_line=f"/bin/sh -c 'head -c {size} /dev/zero > big.bin'",
        output_files=[_out("big.bin", container.sas(), path="large/big.bin", cond="tasksuccess")]))
    t = wait_task(client, job_id, "big", timeout=60)
    assert t.execution_info.result == "success", t.execution_info.failure_info
    props = container.client.get_blob_client("large/big.bin").get_blob_properties()
    assert props.size == size and props.blob_type == "BlockBlob"
    blocks = container.client.get_blob_client("large/big.bin").get_block_list("committed")[0]
    assert len(blocks) == 9

"""Resource zips against real Azurite and the real emulator: `storage.open_blob_seekable` (ranged reads
only, one blob version) with `zipcheck` on top, and the job preparation task's own defence."""
from __future__ import annotations

import io
import os
import stat
import uuid
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from azure.batch import models as bm
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared import batch as batchdrop_batch
from shared import storage
from shared.settings import Settings
from shared.zipcheck import unsafe_member
from tests.pipeline.helpers import put_data, wait_for


class CountingReader(storage.BlobReader):
    """The real reader, counting what it downloads."""

    downloaded = 0
    reads = 0

    def _read(self, n: int) -> bytes:
        data = super()._read(n)
        self.downloaded += len(data)
        self.reads += 1
        return data


def counting(ctx, name: str) -> CountingReader:
    opened = storage.open_blob_seekable(ctx.blobs, ctx.settings.data_container, name)
    return CountingReader(ctx.blobs.get_blob_client(ctx.settings.data_container, name), opened.size, opened.etag)


def test_reads_are_ranged_and_seekable(ctx):
    data = os.urandom(300_000)
    put_data(ctx, "r/blob.bin", data)
    reader = storage.open_blob_seekable(ctx.blobs, ctx.settings.data_container, "r/blob.bin")
    assert reader.size == len(data) and reader.seekable() and reader.readable() and not reader.writable()
    assert reader.read(10) == data[:10] and reader.tell() == 10
    assert reader.seek(-5, io.SEEK_END) == len(data) - 5 and reader.read(100) == data[-5:]
    assert reader.read(1) == b""
    reader.seek(1000)
    reader.seek(24, io.SEEK_CUR)
    assert reader.read() == data[1024:]
    buffer = bytearray(7)
    reader.seek(3)
    assert reader.readinto(buffer) == 7 and bytes(buffer) == data[3:10]
    with pytest.raises(ValueError):
        reader.seek(-1)


def test_a_multi_megabyte_zip_is_checked_from_its_tail(ctx):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("data/big.bin", os.urandom(12 * 1024 * 1024))
        z.writestr("data/../../outside.txt", b"x")
    put_data(ctx, "r/ref.zip", out.getvalue())
    reader = counting(ctx, "r/ref.zip")
    assert unsafe_member(reader) == (
        "member 'data/../../outside.txt' has a '..' part (it would be unpacked outside the unpack directory)")
    assert reader.downloaded < 128 * 1024 and reader.reads <= 3


def test_every_read_sees_the_version_it_was_opened_on(ctx):
    props = ctx.blobs.get_blob_client(ctx.settings.data_container, "r/v.bin").upload_blob(b"first", overwrite=True)
    reader = storage.open_blob_seekable(ctx.blobs, ctx.settings.data_container, "r/v.bin", etag=props["etag"])
    assert reader.read(2) == b"fi"
    put_data(ctx, "r/v.bin", b"second version")
    with pytest.raises(ResourceModifiedError):
        reader.read()
    with pytest.raises(ResourceModifiedError):
        storage.open_blob_seekable(ctx.blobs, ctx.settings.data_container, "r/v.bin", etag=props["etag"])
    with pytest.raises(ResourceNotFoundError):
        storage.open_blob_seekable(ctx.blobs, ctx.settings.data_container, "r/none.bin")


def zip_of(*members) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for member, data in members:
            z.writestr(member, data)
    return out.getvalue()


def link(name: str) -> zipfile.ZipInfo:
    """A symbolic link member (its data is the target)."""
    member = zipfile.ZipInfo(name)
    member.create_system = 3
    member.external_attr = (stat.S_IFLNK | 0o777) << 16
    return member


def run_with_resource(ctx, batch, env, archive: bytes, check: str) -> bm.BatchTask:
    """A job made by `batch.job_model` (the real preparation command) on a pool of our own, with the
    archive as its one unzipped resource, and one task running `check`. Returns the completed task."""
    name = f"r/{uuid.uuid4().hex[:8]}.zip"
    put_data(ctx, name, archive)
    url = storage.SasMinter(ctx.blobs).blob_read_url(ctx.settings.data_container, name,
                                                     datetime.now(UTC) + timedelta(hours=1))
    job_id = f"zip-{uuid.uuid4().hex[:8]}"
    batch.create_pool(bm.BatchPoolCreateOptions(id=job_id, vm_size="x", target_dedicated_nodes=1))
    plan = batchdrop_batch.JobPlan(
        job_id=job_id, run_id=job_id, command="true", image=None, output_file="out.txt",
        output_container_url="http://127.0.0.1:1/unused", task_count=1, retries=0,
        task_timeout=timedelta(minutes=5), job_timeout=timedelta(hours=1), config_url=None,
        resource_urls=((url, "ref.zip", True),), pool_id=job_id, owner="test", vm_size="x", max_nodes=1,
        spot=False, slots_per_node=1)
    batch.create_job(batchdrop_batch.job_model(plan, Settings.from_mapping(env).pool))
    batch.create_task(job_id, bm.BatchTaskCreateOptions(id="check", command_line=f"/bin/sh -c {check!r}"))
    try:
        return wait_for(lambda: (t := batch.get_task(job_id, "check")).state == "completed" and t, timeout=30,
                        what="the check task")
    finally:
        batchdrop_batch.delete_job(batch, job_id)
        batch.begin_delete_pool(job_id)  # not waited for


def test_the_preparation_task_refuses_a_zip_with_a_link_on_its_own(ctx, batch, env, tmp_path):
    archive = zip_of(("fine.txt", b"ok"), (link("escape"), str(tmp_path).encode()))
    task = run_with_resource(ctx, batch, env, archive, "true")
    assert task.execution_info.failure_info.code == "JobPreparationTaskFailed"


def test_the_preparation_task_never_writes_through_a_link(ctx, batch, env, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    archive = zip_of((link("escape"), str(tmp_path).encode()), ("escape/outside.txt", b"written through the link"))
    task = run_with_resource(ctx, batch, env, archive, "true")
    assert task.execution_info.failure_info.code == "JobPreparationTaskFailed"
    assert outside.read_text() == "untouched"


def test_the_preparation_task_keeps_dot_dot_members_inside(ctx, batch, env):
    archive = zip_of(("../../escaped.txt", b"inside after all"), ("data/ok.txt", b"ok"))
    task = run_with_resource(ctx, batch, env, archive,
                             'test -f "$AZ_BATCH_JOB_PREP_WORKING_DIR/escaped.txt" '
                             '&& test -f "$AZ_BATCH_JOB_PREP_WORKING_DIR/data/ok.txt" '
                             '&& ! test -e "$AZ_BATCH_JOB_PREP_WORKING_DIR/../../escaped.txt"')
    assert task.execution_info.exit_code == 0, task.execution_info

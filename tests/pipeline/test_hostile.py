"""Hostile job files dropped into intake against real Azurite and the real emulator: each is
rejected with error.json naming its field, and nothing is created (no job, pool or work container).

The trust boundary (docs/jobfile.md): a job file reads only from the data container and those in
INPUT_CONTAINERS; a pool it names must exist; a run has at most MAX_TASKS_PER_RUN tasks.
"""
from __future__ import annotations

import io
import json
import stat
import zipfile

import pytest
from azure.batch import models as bm

from shared import jobfile, naming, storage
from shared.accept import accept
from shared.runs import RunRecord
from tests.pipeline.helpers import (
    COPY,
    assert_rejected,
    build_context,
    drop,
    put_data,
    results_blob,
    run_to_end,
    status,
)


def job_ids(batch, run_id):
    return [j.id for j in batch.list_jobs() if j.id == run_id]


def secret_in(ctx, container: str, path: str) -> str:
    storage.ensure_container(ctx.blobs, container)
    ctx.blobs.get_blob_client(container, path).upload_blob(b'{"password": "hunter2"}\n', overwrite=True)
    return f"{container}/{path}"


@pytest.mark.parametrize("where", ["intake", "results", "control", "work", "webjobs", "unlisted"])
@pytest.mark.parametrize("field", ["input.blob", "input.prefix", "config.blob", "resources[0].blob"])
def test_a_job_file_cannot_read_containers_outside_its_data(ctx, batch, where, field):
    s = ctx.settings
    container = {
        "intake": s.intake_container,
        "results": s.results_container,
        "control": s.control_container,
        "work": naming.work_containers(s.work_prefix, "other-run-0123456789abcdef")[0],
        "webjobs": "azure-webjobs-secrets",
        "unlisted": f"private-{s.work_prefix}",
    }[where]
    ref = secret_in(ctx, container, "secret.jsonl")
    job: dict = {"command": COPY, "input": {"items": [1]}}
    if field == "input.blob":
        job["input"] = {"blob": ref}
    elif field == "input.prefix":
        job["input"] = {"prefix": f"{container}/"}
    elif field == "config.blob":
        job["config"] = {"blob": ref}
    else:
        job["resources"] = [{"blob": ref}]
    d = drop(ctx, f"steal-{where}.json", job)
    error = assert_rejected(ctx, batch, accept(ctx, d.container, d.name), field, repr(container), planted=[container])
    assert s.data_container in error["message"]  # says where inputs may come from


def test_containers_listed_in_input_containers_are_readable(env, batch):
    shared_in = f"shared-{env['WORK_CONTAINER_PREFIX']}"
    ctx = build_context({**env, "INPUT_CONTAINERS": f" {shared_in} , "})
    ref = secret_in(ctx, shared_in, "x.jsonl")
    d = drop(ctx, "listed.json", {"command": COPY, "input": {"blob": ref}})
    assert accept(ctx, d.container, d.name) == d.run_id
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
    assert results_blob(ctx, f"{d.run_id}/output.jsonl") == b'{"password": "hunter2"}\n'


def test_the_pipelines_own_containers_stay_unreadable_even_when_listed(env, batch):
    ctx = build_context({**env, "INPUT_CONTAINERS": env["INTAKE_CONTAINER"]})
    d = drop(ctx, "listed-intake.json", {"command": COPY, "input": {"prefix": f"{env['INTAKE_CONTAINER']}/"}})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "input.prefix", repr(env["INTAKE_CONTAINER"]))


def test_a_pool_that_does_not_exist_is_rejected_up_front(ctx, batch):
    d = drop(ctx, "nopool.json", {"command": COPY, "input": {"items": [1]}, "pool": {"id": "no-such-pool"}})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "pool.id", "no-such-pool", "create it first")


def test_an_image_on_a_pool_without_containers_is_rejected_up_front(ctx, batch):
    pool_id = f"plain-{ctx.settings.work_prefix}"
    batch.create_pool(bm.BatchPoolCreateOptions(
        id=pool_id, vm_size="standard_d2s_v3", target_dedicated_nodes=0,
        virtual_machine_configuration=bm.VirtualMachineConfiguration(
            image_reference=bm.BatchVmImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    try:
        d = drop(ctx, "plainpool.json", {"command": COPY, "input": {"items": [1]}, "image": "busybox:1.36",
                                         "pool": {"id": pool_id}})
        assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "pool.id", "containerConfiguration")
    finally:
        batch.begin_delete_pool(pool_id).result()


@pytest.fixture
def small_limit(env):
    return build_context({**env, "MAX_TASKS_PER_RUN": "50"})


def test_too_many_inline_items_are_rejected_with_the_count_and_the_fix(small_limit, batch):
    ctx = small_limit
    d = drop(ctx, "many.json", {"command": COPY, "input": {"items": list(range(120))}, "items_per_task": 2})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "items_per_task", "60 tasks", "at most 50",
                    "items_per_task")


def test_a_blob_of_too_many_records_is_rejected_before_anything_is_uploaded(small_limit, batch):
    ctx = small_limit
    ref = put_data(ctx, "million.txt", b"x\n" * 5_000)
    d = drop(ctx, "million.json", {"command": COPY, "input": {"blob": ref}})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "items_per_task", "more than 50")
    # 1,000 records of 10 bytes in tasks of 20: the size allows up to 250 tasks, the count pass finds 50
    ref = put_data(ctx, "fits.txt", b"xxxxxxxxx\n" * 1_000)
    ok = drop(ctx, "million-ok.json", {"command": COPY, "input": {"blob": ref}, "items_per_task": 20})
    assert accept(ctx, ok.container, ok.name) == ok.run_id
    assert status(ctx, ok.run_id)["tasks"]["total"] == 50
    assert run_to_end(ctx, ok.run_id)["state"] == "succeeded"


def test_too_many_tasks_or_prefix_blobs_are_rejected(small_limit, batch):
    ctx = small_limit
    d = drop(ctx, "tasks.json", {"command": COPY, "input": {"items": [1]}, "tasks": 51})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "tasks", "51", "at most 50")
    for i in range(51):
        put_data(ctx, f"parts/{i:03d}.bin", b"x")
    p = drop(ctx, "parts.json", {"command": COPY, "input": {"prefix": f"{ctx.settings.data_container}/parts/"}})
    assert_rejected(ctx, batch, accept(ctx, p.container, p.name), "input.prefix", "more than 50 blobs")


@pytest.mark.parametrize("name, data, fmt", [
    ("empty.csv", b"", "csv"),
    ("header-only.csv", b"a,b,c\n", "csv"),
    ("blank.jsonl", b"\n \n\n", "jsonl"),
    ("empty-array.json", b"[]", "json"),
])
def test_an_input_without_records_is_rejected_naming_input(ctx, batch, name, data, fmt):
    ref = put_data(ctx, name, data)
    d = drop(ctx, f"job-{name}.json", {"command": COPY, "input": {"blob": ref, "format": fmt}})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "input", "no records")


def test_a_run_id_collision_takes_the_next_id_and_never_touches_the_other_run(ctx, batch):
    raw = json.dumps({"command": COPY, "input": {"items": [1]}}).encode()
    name = "collide.json"
    etag = ctx.blobs.get_blob_client(ctx.settings.intake_container, name).upload_blob(raw)["etag"]
    first, second = jobfile.run_id_candidates("collide", ctx.settings.intake_container, name, etag)[:2]
    # another job file's run already lives under the first id (as if its hash collided)
    other = {"run_id": first, "name": "collide", "job_file": "intake/other.json", "job_file_etag": "0x1",
             "state": "succeeded", "tasks": {"total": 1, "active": 0, "running": 0, "succeeded": 1, "failed": 0}}
    ctx.runs.create(RunRecord.from_json(other))
    assert accept(ctx, ctx.settings.intake_container, name) == second
    assert status(ctx, first)["job_file"] == "intake/other.json"  # untouched
    assert status(ctx, second)["job_file"] == f"{ctx.settings.intake_container}/{name}"
    assert run_to_end(ctx, second)["state"] == "succeeded"
    # the same upload delivered again resolves to the same run, not a third one
    assert accept(ctx, ctx.settings.intake_container, name) == second


def test_a_rejected_job_file_never_rejects_another_run_sharing_its_id(ctx, batch):
    name = "victim.json"
    etag = ctx.blobs.get_blob_client(ctx.settings.intake_container, name).upload_blob(b"{broken")["etag"]
    first, second = jobfile.run_id_candidates("victim", ctx.settings.intake_container, name, etag)[:2]
    ctx.runs.create(RunRecord.from_json({"run_id": first, "name": "victim", "job_file": "intake/someone-else.json",
                                         "job_file_etag": "0x2", "state": "accepted", "tasks": {"total": 0}}))
    assert accept(ctx, ctx.settings.intake_container, name) == second
    assert status(ctx, first)["state"] == "accepted"
    assert status(ctx, second)["state"] == "rejected"


def zip_with(member: zipfile.ZipInfo | str, data: bytes = b"x") -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok/app.py", b"print(1)")
        z.writestr(member, data)
    return archive.getvalue()


def symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("member, words", [
    ("../../evil.sh", "'..'"),
    ("/etc/cron.d/evil", "absolute"),
    (symlink("ok/link"), "symbolic link"),
])
def test_a_zip_that_would_unpack_outside_its_directory_is_rejected_naming_the_member(ctx, batch, member, words):
    ref = put_data(ctx, "ref/tools.zip", zip_with(member))
    d = drop(ctx, "zipslip.json", {"command": COPY, "input": {"items": [1]},
                                   "resources": [{"blob": f"{ctx.settings.data_container}/ref/a.txt"},
                                                 {"blob": ref, "unzip": True}]})
    put_data(ctx, "ref/a.txt", b"a")
    name = member if isinstance(member, str) else member.filename
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "resources[1].blob", name, words)


def test_a_blob_that_is_not_a_zip_is_rejected_when_it_should_be_unpacked(ctx, batch):
    ref = put_data(ctx, "ref/fake.zip", b"PK not really a zip")
    d = drop(ctx, "fakezip.json", {"command": COPY, "input": {"items": [1]}, "resources": [{"blob": ref, "unzip": True}]})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "resources[0].blob", "not a")

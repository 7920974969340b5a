"""Helpers for pipeline integration tests: a Context on the test services, dropping job files,
and driving a run to its end with bounded polling (the monitor and finalize steps called directly)."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

from shared import jobfile
from shared.context import Context
from shared.events import RecordingPublisher
from shared.finalize import finalize
from shared.naming import run_id_of_message
from shared.runs import TERMINAL
from shared.secrets import StaticSecrets
from shared.settings import Settings
from shared.watch import watch
from tests.services import wait_for  # noqa: F401  (re-exported for the pipeline tests)

COPY = 'cat "$INPUT_PATH" > "$OUTPUT_PATH"'  # the task most tests run: its input is its output


def settings_env(azurite, emulator, suffix: str | None = None) -> dict[str, str]:
    """App settings for one test: its own containers and queue, so tests never see each other's runs."""
    s = suffix or uuid.uuid4().hex[:8]
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "BATCH_ACCOUNT_URL": emulator.url,
        "BATCH_ACCOUNT_NAME": emulator.account,
        "BATCH_ACCOUNT_KEY": emulator.key,
        "INTAKE_CONTAINER": f"intake-{s}",
        "DATA_CONTAINER": f"data-{s}",
        "RESULTS_CONTAINER": f"results-{s}",
        "CONTROL_CONTAINER": f"control-{s}",
        "FINALIZE_QUEUE": f"finalize-{s}",
        "INTAKE_QUEUE": f"intake-{s}",
        "SUBMIT_QUEUE": f"submit-{s}",
        "WORK_CONTAINER_PREFIX": f"w{s}",
        "MONITOR_SCHEDULE": "*/1 * * * * *",
        "UPLOAD_CONCURRENCY": "8",
        "SUBMIT_CONCURRENCY": "2",
        # ended runs clean up whole, as these tests check; tests/pipeline/test_rerun.py keeps task outputs
        "KEEP_TASK_OUTPUTS_HOURS": "0",
    }


def build_context(env: dict[str, str], **kwargs) -> Context:
    ctx = Context.build(Settings.from_mapping(env), env, publisher=RecordingPublisher(),
                        secret_source=StaticSecrets({}), **kwargs)
    ctx.ensure_containers()
    return ctx


def batch_client(emulator) -> BatchClient:
    return BatchClient(endpoint=emulator.url, credential=AzureNamedKeyCredential(emulator.account, emulator.key))


@dataclass
class Dropped:
    container: str
    name: str
    etag: str
    run_id: str


def drop(ctx: Context, name: str, job: dict | bytes) -> Dropped:
    """Upload a job file to intake (as a user would) and compute the run id it will get."""
    raw = job if isinstance(job, bytes) else json.dumps(job).encode()
    container = ctx.settings.intake_container
    props = ctx.blobs.get_blob_client(container, name).upload_blob(raw, overwrite=True)
    try:
        run_name = jobfile.parse_job_file(raw, blob_name=name).name
    except Exception:
        run_name = jobfile.default_name(name)
    return Dropped(container, name, props["etag"], jobfile.run_id(run_name, container, name, props["etag"]))


def put_data(ctx: Context, path: str, data: bytes) -> str:
    ctx.blobs.get_blob_client(ctx.settings.data_container, path).upload_blob(data, overwrite=True)
    return f"{ctx.settings.data_container}/{path}"


def status(ctx: Context, run_id: str) -> dict:
    """status.json as a user reads it."""
    return ctx.runs.read(run_id).to_json()


def results_blob(ctx: Context, name: str) -> bytes | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return ctx.blobs.get_blob_client(ctx.settings.results_container, name).download_blob().readall()
    except ResourceNotFoundError:
        return None


def drain_finalize(ctx: Context) -> int:
    """Do what the queue trigger does for each waiting message. Returns how many were handled."""
    handled = 0
    for msg in ctx.finalize_queue.receive_messages(messages_per_page=16, visibility_timeout=60):
        finalize(ctx, run_id_of_message(msg.content))
        ctx.finalize_queue.delete_message(msg)
        handled += 1
    return handled


def run_to_end(ctx: Context, run_id: str, deadline_s: float = 60.0, tick_s: float = 0.2) -> dict:
    """Monitor ticks and finalize until the run reaches a final state (bounded)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        watch(ctx)
        drain_finalize(ctx)
        run = ctx.runs.try_read(run_id)
        if run is not None and run.state in TERMINAL:
            return run.to_json()
        time.sleep(tick_s)
    raise TimeoutError(f"run {run_id} not finished after {deadline_s}s: {ctx.runs.try_read(run_id)}")


def work_containers_left(ctx: Context) -> list[str]:
    prefix = ctx.settings.work_prefix + "-"
    return [c.name for c in ctx.blobs.list_containers(name_starts_with=prefix)]


def jobs_left(client: BatchClient, run_id: str) -> list[str]:
    return [j.id for j in client.list_jobs() if j.id == run_id and j.state != "deleting"]


def pools_left(client: BatchClient, run_id: str) -> list[str]:
    left = []
    for pool in client.list_pools():
        if pool.state == "deleting":
            continue
        meta = {m.name: m.value for m in (pool.metadata or [])}
        if meta.get("batchdrop-run") == run_id:
            left.append(pool.id)
    return left


def assert_rejected(ctx: Context, batch: BatchClient, run_id: str, field: str, *words: str,
                    planted: tuple[str, ...] = ()) -> dict:
    """The run was rejected naming `field`, its error says each of `words`, and nothing was
    created for it (no job, no work container but the `planted` ones). Returns error.json."""
    record = status(ctx, run_id)
    assert record["state"] == "rejected", record
    error = json.loads(results_blob(ctx, f"{run_id}/error.json") or b"{}")
    assert error["field"] == field, error
    for word in words:
        assert word in error["message"], error
    assert [j.id for j in batch.list_jobs() if j.id == run_id] == []
    assert [c for c in work_containers_left(ctx) if c not in planted] == []
    return error

"""End to end: the real function app under the local functions host, a job file dropped into
intake, and the results watched the way a user watches them (bounded polling)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from shared import jobfile
from shared.settings import Settings
from shared.storage import blob_service, ensure_container
from tests.pipeline.helpers import settings_env
from tests.services import stop_process

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "heavylift"
pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(azurite, batch_emulator, tmp_path):
    """devhost as a process (what `make up` runs), on this test's own containers and queue."""
    values = {**json.loads((ROOT / "local.settings.sample.json").read_text())["Values"],
              **settings_env(azurite, batch_emulator), "MONITOR_SCHEDULE": "*/1 * * * * *"}
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    settings = Settings.from_mapping(values)
    service = blob_service(settings)
    for name in (settings.intake_container, settings.data_container, settings.results_container):
        ensure_container(service, name)
    log = open(tmp_path / "devhost.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "--app-dir", str(ROOT), "--settings", str(settings_file),
                             "--poll-interval", "0.2", "--host-id", f"e2e-{uuid.uuid4().hex[:12]}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield settings, service, tmp_path / "devhost.log"
    finally:
        stop_process(proc, grace_s=15)
        assert proc.returncode == 0, (tmp_path / "devhost.log").read_text()[-3000:]


def watch_status(service, settings, run_id, deadline_s=90):
    client = service.get_blob_client(settings.results_container, f"{run_id}/status.json")
    deadline = time.monotonic() + deadline_s
    states = []
    while time.monotonic() < deadline:
        if client.exists():
            status = json.loads(client.download_blob().readall())
            if not states or states[-1] != status["state"]:
                states.append(status["state"])
            if status["state"] in ("succeeded", "failed", "rejected", "cancelled"):
                return status, states
        time.sleep(0.25)
    raise TimeoutError(f"run {run_id} did not finish in {deadline_s}s; states seen: {states}")


def drop(service, settings, name, raw):
    props = service.get_blob_client(settings.intake_container, name).upload_blob(raw, overwrite=True)
    try:
        run_name = jobfile.parse_job_file(raw, blob_name=name).name
    except Exception:
        run_name = jobfile.default_name(name)
    return jobfile.run_id(run_name, settings.intake_container, name, props["etag"])


def test_example_job_file_runs_end_to_end(stack):
    settings, service, log = stack
    data = service.get_container_client(settings.data_container)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.write(EXAMPLE / "app.py", "app.py")
    data.upload_blob("heavylift/app.zip", archive.getvalue(), overwrite=True)
    data.upload_blob("heavylift/texts.jsonl", (EXAMPLE / "data" / "texts.jsonl").read_bytes(), overwrite=True)
    job = json.loads((EXAMPLE / "jobs" / "heavylift-blob.json").read_text())
    job["input"]["blob"] = f"{settings.data_container}/heavylift/texts.jsonl"
    job["resources"][0]["blob"] = f"{settings.data_container}/heavylift/app.zip"
    run_id = drop(service, settings, "heavylift.json", json.dumps(job).encode())

    status, states = watch_status(service, settings, run_id)
    assert status["state"] == "succeeded", (status, log.read_text()[-3000:])
    assert set(states) <= {"accepted", "running", "merging", "succeeded"} and states[-1] == "succeeded"
    assert status["tasks"]["total"] == 10 and status["tasks"]["succeeded"] == 10
    output = service.get_blob_client(settings.results_container, f"{run_id}/output.jsonl").download_blob().readall()
    records = [json.loads(line) for line in output.splitlines()]
    source = [json.loads(line) for line in (EXAMPLE / "data" / "texts.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in records] == [s["id"] for s in source]
    assert all(set(r) == {"id", "score", "hot"} for r in records)
    report = json.loads(service.get_blob_client(settings.results_container, f"{run_id}/report.json")
                        .download_blob().readall())
    assert report["tasks"]["succeeded"] == 10
    assert status["container_execution"] == "host"
    # the job file is never modified or deleted
    assert service.get_blob_client(settings.intake_container, "heavylift.json").exists()


def test_bad_job_file_is_rejected_through_the_host(stack):
    settings, service, log = stack
    run_id = drop(service, settings, "typo.json", b'{"comand": "true", "input": {"items": [1]}}')
    status, _ = watch_status(service, settings, run_id, deadline_s=30)
    assert status["state"] == "rejected"
    error = json.loads(service.get_blob_client(settings.results_container, f"{run_id}/error.json")
                       .download_blob().readall())
    assert error["field"] == "comand" and "did you mean 'command'" in error["message"]

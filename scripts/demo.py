"""`make demo`: the example job end to end on the local stack, the way a user would run it.

Starts the stack (unless `make up` already did), uploads the example app and data to `data/`,
drops the example job file into `intake/`, shows status.json as it changes, then prints where the
results are and the first lines of the merged output, and stops what it started.
"""
from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from pathlib import Path

from scripts import devstack

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "heavylift"
JOB_FILE = EXAMPLE / "jobs" / "heavylift-blob.json"
DEADLINE_S = 300


def app_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.write(EXAMPLE / "app.py", "app.py")
    return buffer.getvalue()


def upload_example(service, data_container: str) -> None:
    """The example's inputs, under data/heavylift/ (what the job files point at)."""
    container = service.get_container_client(data_container)
    container.upload_blob("heavylift/app.zip", app_zip(), overwrite=True)
    for name in ("texts.jsonl", "texts.csv"):
        container.upload_blob(f"heavylift/{name}", (EXAMPLE / "data" / name).read_bytes(), overwrite=True)
    lines = (EXAMPLE / "data" / "texts.jsonl").read_bytes().splitlines(keepends=True)
    for i in range(0, 60, 20):
        container.upload_blob(f"heavylift/presplit/part-{i // 20:03d}.jsonl", b"".join(lines[i:i + 20]), overwrite=True)
    container.upload_blob("heavylift/config.json", json.dumps({"threshold": 0.2}).encode(), overwrite=True)


def main() -> int:
    already_up = all(devstack._pid(name) is not None for name in devstack.ORDER)
    devstack.up(quiet=False)
    try:
        return run_demo()
    finally:
        if not already_up:
            devstack.down()


def run_demo() -> int:
    from shared import jobfile
    from shared.settings import Settings
    from shared.storage import blob_service

    settings = Settings.from_mapping(devstack.settings())
    service = blob_service(settings)
    upload_example(service, settings.data_container)
    raw = JOB_FILE.read_bytes()
    name = f"demo-{time.strftime('%H%M%S')}.json"
    props = service.get_blob_client(settings.intake_container, name).upload_blob(raw, overwrite=True)
    spec = jobfile.parse_job_file(raw, blob_name=name)
    run_id = jobfile.run_id(spec.name, settings.intake_container, name, props["etag"])
    results = service.get_container_client(settings.results_container)
    print(f"\ndropped {JOB_FILE.relative_to(ROOT)} as {settings.intake_container}/{name}")
    print(f"run id {run_id}; watching {settings.results_container}/{run_id}/status.json\n")

    deadline = time.monotonic() + DEADLINE_S
    last = None
    status: dict = {}
    while time.monotonic() < deadline:
        try:
            status = json.loads(results.get_blob_client(f"{run_id}/status.json").download_blob().readall())
        except Exception:
            status = {}
        line = _progress(status)
        if line and line != last:
            print(line, flush=True)
            last = line
        if status.get("state") in ("succeeded", "failed", "cancelled", "rejected"):
            break
        time.sleep(1)
    else:
        print(f"\nthe run did not finish within {DEADLINE_S}s; see .devstack/*.log")
        return 1

    print()
    if status["state"] != "succeeded":
        print(f"run {status['state']}: {status.get('error')}")
        print(f"details: {settings.results_container}/{run_id}/error.json and report.json")
        return 1
    output = status["output"]
    blob_name = output.split("/", 1)[1]
    head = results.get_blob_client(blob_name).download_blob(offset=0, length=4096).readall()
    print(f"merged output: {output}")
    print(f"report:        {settings.results_container}/{run_id}/report.json")
    if status.get("container_execution") == "host":
        print("note: no container engine here, so the tasks ran on the host (status.json says so)")
    print("\nfirst lines of the merged output:")
    for line in head.decode(errors="replace").splitlines()[:5]:
        print("  " + line)
    return 0


def _progress(status: dict) -> str | None:
    if not status:
        return None
    t = status.get("tasks", {})
    return (f"{status.get('state', '?'):10s} tasks: {t.get('total', 0)} total, {t.get('active', 0)} waiting, "
            f"{t.get('running', 0)} running, {t.get('succeeded', 0)} succeeded, {t.get('failed', 0)} failed")


if __name__ == "__main__":
    sys.exit(main())

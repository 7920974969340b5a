"""`python -m devhost` as a process: refusal at start, a real run, SIGTERM, no secrets in the log."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.services import AZURITE_KEY

from .conftest import APPS

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devhost", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_cli_refuses_an_unsupported_binding_at_start():
    proc = run_cli("--app-dir", str(APPS / "unsupported"),
                   env={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert proc.returncode == 2
    assert ("devhost: function 'changes' uses binding 'cosmosDBTrigger', which the local host does not "
            "support; use func start") in proc.stderr


def test_cli_reports_a_missing_setting_and_a_missing_app(tmp_path):
    proc = run_cli("--app-dir", str(APPS / "queues"), "--settings", str(tmp_path / "none.json"))
    assert proc.returncode == 2 and "not found" in proc.stderr
    proc = run_cli("--app-dir", str(APPS / "queues"), "--list")
    assert proc.returncode == 2 and "'%WORK_QUEUE%' does not resolve to a value" in proc.stderr
    proc = run_cli("--app-dir", str(tmp_path))
    assert proc.returncode == 2 and "no function_app.py" in proc.stderr


class _Reader(threading.Thread):
    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.lines, self.lock = stream, [], threading.Lock()

    def run(self):
        for line in self.stream:
            with self.lock:
                self.lines.append(line)

    def text(self) -> str:
        with self.lock:
            return "".join(self.lines)


def test_cli_runs_the_app_from_local_settings_and_stops_on_sigterm(tmp_path, storage, blob_service, uid):
    container = f"cli-{uid}"
    blob_service.create_container(container)
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": storage.connection_string,
        "DATA": storage.connection_string, "IN_CONTAINER": container, "EG_CONTAINER": f"eg-{uid}",
        "AzureFunctionsWebHost__hostid": f"cli-{uid}"}}))
    env = {k: v for k, v in os.environ.items() if k not in ("AzureWebJobsStorage", "DATA")}
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "--app-dir", str(APPS / "blobs"), "--settings",
                             str(settings), "--poll-interval", "0.2"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reader = _Reader(proc.stderr)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while "Host started" not in reader.text():
            assert proc.poll() is None, reader.text()
            assert time.monotonic() < deadline, reader.text()
            time.sleep(0.05)
        blob_service.get_blob_client(container, "job.json").upload_blob(b"{}")
        while "Executed 'Functions.intake' (Succeeded" not in reader.text():
            assert time.monotonic() < deadline, reader.text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    log = reader.text()
    # an invocation line names the function and the invocation id; user logs carry them too
    assert "Executing 'Functions.intake' (Reason='New blob detected(LogsAndContainerScan): " in log
    assert "[Functions.intake " in log and f"processed {container}/job.json" in log
    assert "Event Grid delivery by polling" in log  # the 'events' function
    assert AZURITE_KEY not in log and "AccountKey=" not in log
    assert "Threads still alive" not in log

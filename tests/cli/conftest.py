"""The real local stack for the `batchdrop` command: the session's Azurite and Batch emulator, and
the local functions host (devhost) as a process running the function app, on this module's own
intake/results/control containers and queue. The CLI is pointed at it through a settings file
(BATCHDROP_SETTINGS), exactly as a user points it at another deployment."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from shared.settings import Settings
from shared.storage import blob_service, ensure_container
from tests.pipeline.helpers import settings_env
from tests.services import stop_process

ROOT = Path(__file__).resolve().parents[2]
BATCHDROP = Path(sys.executable).parent / "batchdrop"
# Variables that would point the CLI elsewhere or change how it draws; tests set what they need.
_CLEARED = ("BATCHDROP_SETTINGS", "BATCHDROP_STORAGE_ACCOUNT", "BATCHDROP_STORAGE_CONNECTION_STRING",
            "AZURE_STORAGE_CONNECTION_STRING", "BATCHDROP_DEBUG", "AZURE_ENV_NAME", "FORCE_COLOR", "NO_COLOR",
            "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")


@dataclass
class CliStack:
    settings_file: Path
    values: dict[str, str]
    settings: Settings
    service: BlobServiceClient
    log: Path
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env.update({"BATCHDROP_SETTINGS": str(self.settings_file), **extra})
        return env

    def run(self, *args: str, timeout: float = 90, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        """`batchdrop ARGS` as a user runs it (stdout and stderr are pipes, not a terminal)."""
        return subprocess.run([str(BATCHDROP), *args], capture_output=True, text=True, timeout=timeout,
                              env=env if env is not None else self.env(), cwd=cwd or self.workdir)

    def call(self, *args: str, settings: Path | None = None) -> subprocess.CompletedProcess:
        """`batchdrop ARGS` run inside this process (the same code and output as `run`, without an
        interpreter start per call, which is most of a quick command's time)."""
        from click.testing import CliRunner

        from batchdrop_cli.main import cli

        env: dict[str, str | None] = {name: None for name in _CLEARED}
        env["BATCHDROP_SETTINGS"] = str(settings or self.settings_file)
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False, prog_name="batchdrop")
        return subprocess.CompletedProcess(["batchdrop", *args], result.exit_code, result.stdout, result.stderr)

    def status(self, run_id: str) -> dict | None:
        client = self.service.get_blob_client(self.settings.results_container, f"{run_id}/status.json")
        if not client.exists():
            return None
        return json.loads(client.download_blob().readall())

    def results_json(self, run_id: str, name: str) -> dict:
        client = self.service.get_blob_client(self.settings.results_container, f"{run_id}/{name}")
        return json.loads(client.download_blob().readall())

    def devhost_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="package")
def cli_stack(azurite, batch_emulator, tmp_path_factory):
    """devhost on the session's services, for the tests of this folder (stopped after them). The
    data container is the plain `data`, so the example job files (which name data/heavylift/...) run
    as the README shows; the other containers are this stack's own."""
    if not BATCHDROP.exists():
        pytest.fail(f"{BATCHDROP} is missing: `make setup` installs the project (pip install -e .)")
    tmp = tmp_path_factory.mktemp("cli")
    values = {**json.loads((ROOT / "local.settings.sample.json").read_text())["Values"],
              **settings_env(azurite, batch_emulator), "DATA_CONTAINER": "data", "MONITOR_SCHEDULE": "*/1 * * * * *",
              "KEEP_TASK_OUTPUTS_HOURS": "72"}  # as deployed: `batchdrop rerun` needs what an ended run keeps
    settings_file = tmp / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    settings = Settings.from_mapping(values)
    service = blob_service(settings)
    for name in (settings.intake_container, settings.data_container, settings.results_container,
                 settings.control_container):
        ensure_container(service, name)
    log_path = tmp / "devhost.log"
    workdir = tmp / "work"
    workdir.mkdir()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "devhost", "--app-dir", str(ROOT), "--settings",
                                 str(settings_file), "--poll-interval", "0.2", "--host-id",
                                 f"cli-{uuid.uuid4().hex[:12]}"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield CliStack(settings_file, values, settings, service, log_path, workdir)
    finally:
        stop_process(proc, grace_s=15)

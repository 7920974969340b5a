"""A task sees the Batch variables and its own settings, never the emulator's environment (which may hold
app settings: storage keys, the Batch key, a registry password)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from azure.batch import models as m

from batchemu.environment import BASE_VARIABLES
from batchemu.process import EmulatorProcess
from scripts import devstack

from .conftest import make_client, read_file, wait_task

MARKER = f"marker-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def marked_emulator(tmp_path_factory):
    """An emulator whose own environment holds a secret (as `make up` used to give it every app setting)."""
    emu = EmulatorProcess(data_dir=tmp_path_factory.mktemp("marked"), max_concurrency=2,
                          env={"SECRET_MARKER": MARKER, "AzureWebJobsStorage": f"AccountKey={MARKER}"})
    emu.start()
    yield emu
    emu.stop()
    emu.cleanup()


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_the_marker_really_is_in_the_emulators_environment(marked_emulator):
    environ = Path(f"/proc/{marked_emulator.pid}/environ").read_bytes()
    assert f"SECRET_MARKER={MARKER}".encode() in environ.split(b"\0")


def test_task_sees_only_batch_base_and_its_own_variables(marked_emulator):
    client = make_client(marked_emulator)
    client.create_pool(m.BatchPoolCreateOptions(id="p", vm_size="x", target_dedicated_nodes=1))
    client.create_job(m.BatchJobCreateOptions(
        id="j", pool_info=m.BatchPoolInfo(pool_id="p"),
        common_environment_settings=[m.EnvironmentSetting(name="JOB_VAR", value="job")]))
    client.create_task("j", m.BatchTaskCreateOptions(
        id="env", command_line="/usr/bin/env",
        environment_settings=[m.EnvironmentSetting(name="TASK_VAR", value="task")]))
    assert wait_task(client, "j", "env").execution_info.exit_code == 0
    text = read_file(client, "j", "env", "stdout.txt")
    assert MARKER not in text
    env = parse_env(text)
    assert env["JOB_VAR"] == "job" and env["TASK_VAR"] == "task" and env["AZ_BATCH_TASK_ID"] == "env"
    others = {k for k in env if not k.startswith("AZ_BATCH_") and k not in ("JOB_VAR", "TASK_VAR")}
    assert others <= set(BASE_VARIABLES) and "PATH" in others


def test_start_and_preparation_tasks_do_not_see_it_either(marked_emulator):
    client = make_client(marked_emulator)
    client.create_pool(m.BatchPoolCreateOptions(
        id="started", vm_size="x", target_dedicated_nodes=1,
        start_task=m.BatchStartTask(command_line="/bin/sh -c 'env > $AZ_BATCH_NODE_SHARED_DIR/start.env'")))
    client.create_job(m.BatchJobCreateOptions(
        id="prepared", pool_info=m.BatchPoolInfo(pool_id="started"),
        job_preparation_task=m.BatchJobPreparationTask(
            command_line="/bin/sh -c 'env > $AZ_BATCH_NODE_SHARED_DIR/prep.env'")))
    client.create_task("prepared", m.BatchTaskCreateOptions(
        id="cat", command_line="/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/start.env $AZ_BATCH_NODE_SHARED_DIR/prep.env'"))
    assert wait_task(client, "prepared", "cat").execution_info.exit_code == 0
    text = read_file(client, "prepared", "cat", "stdout.txt")
    assert text.count("AZ_BATCH_NODE_ID=") == 2  # both files were written
    assert MARKER not in text


def test_devstack_gives_app_settings_to_the_functions_host_only():
    secret = f"key-{uuid.uuid4().hex}"
    app = {"AzureWebJobsStorage": f"DefaultEndpointsProtocol=http;AccountKey={secret}",
           "BATCH_ACCOUNT_KEY": secret, "REGISTRY_PASSWORD": secret}
    shell = {"PATH": "/usr/bin:/bin", "HOME": "/home/dev", "LANG": "C.UTF-8", "AWS_SECRET": secret,
             "BATCHEMU_LOG_LEVEL": "DEBUG"}
    envs = devstack.environments(app, shell)
    for name in ("azurite", "batchemu"):
        assert secret not in "".join(f"{k}={v}" for k, v in envs[name].items()), name
        assert envs[name]["PATH"] == "/usr/bin:/bin"
    assert envs["batchemu"]["BATCHEMU_LOG_LEVEL"] == "DEBUG"  # the emulator's own settings still reach it
    assert envs["devhost"]["BATCH_ACCOUNT_KEY"] == secret

"""Durability: state survives restarts; tasks running at shutdown are requeued (requeueCount+1, no retry)."""
from __future__ import annotations

import json
import urllib.request

import pytest
from azure.batch import models as m

from batchemu.process import EmulatorProcess

from .conftest import control, make_client, read_file, wait_task


@pytest.fixture
def own_emulator(tmp_path):
    emu = EmulatorProcess(data_dir=tmp_path / "data", max_concurrency=2)
    emu.start()
    yield emu
    emu.stop()


def test_restart_persists_state_and_requeues_running(own_emulator):
    emu = own_emulator
    client = make_client(emu)
    client.create_pool(m.BatchPoolCreateOptions(id="p", vm_size="x", target_dedicated_nodes=1, task_slots_per_node=2,
                                                metadata=[m.BatchMetadataItem(name="k", value="v")]))
    client.create_pool(m.BatchPoolCreateOptions(id="empty", vm_size="x", target_dedicated_nodes=0))
    client.create_job(m.BatchJobCreateOptions(id="j", pool_info=m.BatchPoolInfo(pool_id="p")))
    client.create_job(m.BatchJobCreateOptions(id="waiting", pool_info=m.BatchPoolInfo(pool_id="empty")))
    client.create_task("j", m.BatchTaskCreateOptions(id="done", command_line="/bin/sh -c 'echo before'"))
    # the first try of "long" stays running for 60 s (slow fault), so it is certainly running at shutdown
    assert control(emu, "/_emulator/jobs/j/tasks/long/slow", {"seconds": 60, "count": 1})[0] == 200
    client.create_task("j", m.BatchTaskCreateOptions(id="long", command_line="/bin/sh -c 'echo after'",
                                                     constraints=m.BatchTaskConstraints(max_task_retry_count=0)))
    client.create_tasks("waiting", [m.BatchTaskCreateOptions(id=f"w{i}", command_line="true") for i in range(150)])
    wait_task(client, "j", "done")
    wait_task(client, "j", "long", state="running")

    assert emu.stop() == 0  # SIGTERM: clean exit
    emu.start()
    client = make_client(emu)

    assert client.get_pool("p").metadata[0].value == "v"
    done = client.get_task("j", "done")
    assert done.state == "completed" and done.execution_info.result == "success"
    assert read_file(client, "j", "done", "stdout.txt") == "before\n"
    long = wait_task(client, "j", "long", timeout=20)
    assert long.execution_info.result == "success"
    assert long.execution_info.requeue_count == 1 and long.execution_info.retry_count == 0
    assert read_file(client, "j", "long", "stdout.txt") == "after\n"
    counts = client.get_job_task_counts("waiting").task_counts
    assert counts.active == 150
    assert len(list(client.list_tasks("waiting", max_results=100))) == 150
    # new tasks keep FIFO paging order after the restart
    client.create_task("waiting", m.BatchTaskCreateOptions(id="zz-new", command_line="true"))
    assert [t.id for t in client.list_tasks("waiting")][-1] == "zz-new"


def test_hard_kill_keeps_acknowledged_writes(own_emulator):
    emu = own_emulator
    client = make_client(emu)
    client.create_pool(m.BatchPoolCreateOptions(id="p", vm_size="x", target_dedicated_nodes=0))
    client.create_job(m.BatchJobCreateOptions(id="j", pool_info=m.BatchPoolInfo(pool_id="p")))
    client.create_tasks("j", [m.BatchTaskCreateOptions(id=f"t{i}", command_line="true") for i in range(250)])
    emu.kill()  # SIGKILL, no flush
    emu.start()
    client = make_client(emu)
    assert client.get_job_task_counts("j").task_counts.active == 250


def test_container_mode_fail(tmp_path):
    with EmulatorProcess(data_dir=tmp_path / "d", container_mode="fail", max_concurrency=1) as emu:
        client = make_client(emu)
        client.create_pool(m.BatchPoolCreateOptions(id="p", vm_size="x", target_dedicated_nodes=1))
        client.create_job(m.BatchJobCreateOptions(id="j", pool_info=m.BatchPoolInfo(pool_id="p")))
        client.create_task("j", m.BatchTaskCreateOptions(
            id="c", command_line="true", container_settings=m.BatchTaskContainerSettings(image_name="alpine")))
        client.create_task("j", m.BatchTaskCreateOptions(id="plain", command_line="true"))
        t = wait_task(client, "j", "c")
        assert t.execution_info.result == "failure"
        fi = t.execution_info.failure_info
        assert fi.category == "usererror" and fi.code == "ContainerEngineUnavailable" and "container" in fi.message
        assert wait_task(client, "j", "plain").execution_info.result == "success"


def test_container_mode_docker_builds_docker_run(tmp_path, monkeypatch):
    """No engine here: a stand-in `docker` CLI on PATH records its arguments and runs the command itself."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "docker"
    fake.write_text(
        "#!/bin/sh\n"
        "printf '%s\\n' \"$@\" > \"$PWD/../docker-args.txt\"\n"
        "while [ $# -gt 0 ] && [ \"$1\" != \"alpine:3\" ]; do shift; done\n"
        "shift\nexec \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    with EmulatorProcess(data_dir=tmp_path / "d", container_mode="docker", max_concurrency=1) as emu:
        client = make_client(emu)
        client.create_pool(m.BatchPoolCreateOptions(id="p", vm_size="x", target_dedicated_nodes=1))
        client.create_job(m.BatchJobCreateOptions(id="j", pool_info=m.BatchPoolInfo(pool_id="p")))
        client.create_task("j", m.BatchTaskCreateOptions(
            id="c", command_line="echo inside", environment_settings=[m.EnvironmentSetting(name="MINE", value="1")],
            container_settings=m.BatchTaskContainerSettings(image_name="alpine:3", container_run_options="--rm")))
        t = wait_task(client, "j", "c")
        assert t.execution_info.result == "success", t.execution_info.failure_info
        assert t.get("emulatorContainerMode") == "docker"
        args = read_file(client, "j", "c", "docker-args.txt").splitlines()
        assert args[:2] == ["run", "--rm"] and "alpine:3" in args and args[-2:] == ["echo", "inside"]
        assert "-w" in args and args[args.index("-w") + 1].endswith("/workitems/j/job-1/c/wd")
        assert "MINE=1" in args and "AZ_BATCH_TASK_ID=c" in args
        assert read_file(client, "j", "c", "stdout.txt") == "inside\n"


def test_start_is_not_fooled_by_another_server_on_its_port(tmp_path):
    """Another server holding the port answers the health check; start() must notice its own child failed."""
    import http.server
    import threading

    class Impostor(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "pid": 1}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        emu = EmulatorProcess(port=impostor.server_address[1], data_dir=tmp_path / "d")
        with pytest.raises(RuntimeError, match="exited early with code 1"):
            emu.start()
        assert "cannot listen" in emu.stderr_tail()
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_health_names_the_emulator_process(emu):
    with urllib.request.urlopen(emu.url + "/_emulator/health", timeout=5) as r:
        assert json.loads(r.read())["pid"] == emu.pid

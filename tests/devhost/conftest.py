"""Fixtures for the devhost tests: a real Azurite, test apps, and hosts that clean up after themselves."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

APPS = Path(__file__).resolve().parent / "apps"


def _start_own_azurite() -> Any:
    """Azurite in memory, like tests/services.start_azurite but without --location.

    Azurite 3.37 refuses ``--inMemoryPersistence`` together with ``--location``; until the
    shared fixture is fixed this keeps the devhost tests on a real emulator.
    """
    from tests.services import Azurite, azurite_binary, free_port, stop_process, wait_for_port

    blob, queue, table = free_port(), free_port(), free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-devhost-")
    cmd = [azurite_binary(), "--inMemoryPersistence", "--silent", "--skipApiVersionCheck",
           "--disableTelemetry", "--loose", "--blobHost", "127.0.0.1", "--blobPort", str(blob),
           "--queueHost", "127.0.0.1", "--queuePort", str(queue), "--tableHost", "127.0.0.1",
           "--tablePort", str(table)]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        for port in (blob, queue, table):
            wait_for_port(port, proc)
    except Exception:
        stop_process(proc)
        raise
    return Azurite(blob, queue, table, proc, workdir)


@pytest.fixture(scope="session")
def storage(request):
    """The session's Azurite (the shared `azurite` fixture, or our own if that one cannot start)."""
    shared = None
    try:
        shared = request.getfixturevalue("azurite")
    except Exception as e:  # noqa: BLE001 - any failure of the shared fixture
        print(f"\n[devhost tests] shared azurite fixture failed ({e}); starting our own", file=sys.stderr)
    if shared is not None:
        yield shared
        return
    own = _start_own_azurite()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture(scope="session")
def blob_service(storage):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(storage.connection_string)


@pytest.fixture(scope="session")
def queue_service(storage):
    from azure.storage.queue import QueueServiceClient

    return QueueServiceClient.from_connection_string(storage.connection_string)


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def load_app():
    """Load a test app by directory name; afterwards undo its sys.path / sys.modules changes."""
    saved_path = list(sys.path)
    before = set(sys.modules)

    def load(name: str) -> tuple[Any, Any]:
        from devhost import load_function_app

        app = load_function_app(APPS / name)
        return app, sys.modules["function_app"]

    yield load
    sys.path[:] = saved_path
    for mod in set(sys.modules) - before:
        file = getattr(sys.modules[mod], "__file__", None) or ""
        if mod == "function_app" or file.startswith(str(APPS)):
            del sys.modules[mod]
    sys.modules.pop("function_app", None)


@pytest.fixture
def make_host(storage):
    """Build hosts that are always closed at the end of the test (no thread left behind)."""
    from devhost import Host

    hosts: list[Host] = []

    def make(app: Any, app_name: str, settings: dict[str, str] | None = None, **kwargs: Any) -> Host:
        base = {"AzureWebJobsStorage": storage.connection_string}
        base.update(settings or {})
        kwargs.setdefault("poll_interval", 0.2)
        host = Host(app, base, app_dir=APPS / app_name, **kwargs)
        hosts.append(host)
        return host

    yield make
    for h in hosts:
        h.close()

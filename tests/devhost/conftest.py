"""Fixtures for the devhost tests: a real Azurite, test apps, and hosts that clean up after themselves."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(scope="session")
def storage(azurite):
    """The session's Azurite (tests/conftest.py)."""
    return azurite


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

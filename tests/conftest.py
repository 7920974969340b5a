"""Session-wide real services: one Azurite and one Batch emulator for the whole test run."""
from __future__ import annotations

import pytest

from tests.services import start_azurite


@pytest.fixture(scope="session")
def azurite():
    """A real Azurite (blob, queue, table) on free ports, in memory."""
    service = start_azurite()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def batch_emulator(tmp_path_factory):
    """The real Batch emulator on a free port, with its own data directory.

    Yields a `batchemu.process.EmulatorProcess` (attributes: url, account, key, data_dir).
    """
    from batchemu.process import EmulatorProcess

    emulator = EmulatorProcess(data_dir=tmp_path_factory.mktemp("batchemu"))
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()

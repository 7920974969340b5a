"""Intake's Batch calls ride out a short outage: a create that meets a refused connection is tried
again until the service is back (azure-core does not retry a POST after a connection error, and a
blob trigger's own retries come back to back and would poison the intake)."""
from __future__ import annotations

import threading
import time

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ServiceRequestError

from batchemu.process import EmulatorProcess
from shared import batch


def test_create_job_waits_for_a_batch_service_that_comes_back(tmp_path):
    emulator = EmulatorProcess(data_dir=tmp_path / "emu")  # its port is chosen now, nothing listens yet
    client = BatchClient(emulator.url, AzureNamedKeyCredential(emulator.account, emulator.key))
    job = m.BatchJobCreateOptions(id="after-outage", pool_info=m.BatchPoolInfo(pool_id="p"))
    starter = threading.Timer(1.5, emulator.start)
    began = time.monotonic()
    starter.start()
    try:
        assert batch.create_job(client, job) is True
        assert time.monotonic() - began >= 1.5
        assert client.get_job("after-outage").id == "after-outage"
        assert batch.create_job(client, job) is False  # and a second try is the same job
    finally:
        starter.join()
        emulator.stop()


def test_an_outage_longer_than_the_budget_is_left_to_the_trigger(tmp_path):
    emulator = EmulatorProcess(data_dir=tmp_path / "emu")  # never started
    client = BatchClient(emulator.url, AzureNamedKeyCredential(emulator.account, emulator.key))
    calls: list[int] = []

    def create() -> None:
        calls.append(1)
        client.create_job(m.BatchJobCreateOptions(id="never", pool_info=m.BatchPoolInfo(pool_id="p")))

    with pytest.raises(ServiceRequestError):  # a service that never answers never looks like success
        batch.reconnecting(create, delays=(0.01, 0.01))
    assert len(calls) == 3

from __future__ import annotations

import pytest

from tests.pipeline.helpers import batch_client, build_context, settings_env


@pytest.fixture
def env(azurite, batch_emulator):
    return settings_env(azurite, batch_emulator)


@pytest.fixture
def ctx(env):
    return build_context(env)


@pytest.fixture
def batch(batch_emulator):
    return batch_client(batch_emulator)


@pytest.fixture(autouse=True)
def short_retry_backoff(monkeypatch):
    """Infrastructure retries wait 10 s, 20 s ... between monitor ticks in Azure (shared.retries); here
    the ticks come every 0.2 s and what is tested is which tasks are retried and how often, not the wait."""
    from datetime import timedelta

    from shared import retries

    monkeypatch.setattr(retries, "BACKOFF_FIRST", timedelta(milliseconds=200))
    monkeypatch.setattr(retries, "BACKOFF_MAX", timedelta(seconds=1))

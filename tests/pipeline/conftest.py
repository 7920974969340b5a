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

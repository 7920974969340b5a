"""Settings: one frozen object from named settings; secrets never show in repr."""
import dataclasses

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "BATCH_ACCOUNT_URL": "http://127.0.0.1:10100",
        "BATCH_ACCOUNT_NAME": "devbatch", "BATCH_ACCOUNT_KEY": "c2VjcmV0LWtleS12YWx1ZQ=="}


def test_defaults_and_development_storage():
    s = Settings.from_mapping(BASE)
    assert s.intake_container == "intake" and s.results_container == "results"
    assert s.finalize_queue == "batchdrop-finalize"
    assert "127.0.0.1:10000" in s.storage.connection_string.reveal()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.intake_container = "x"


def test_secrets_never_appear_in_repr():
    s = Settings.from_mapping(BASE)
    text = repr(s) + str(s)
    assert "c2VjcmV0" not in text and "Eby8vdM02" not in text


def test_identity_based_storage_uses_service_uris():
    env = {k: v for k, v in BASE.items() if k != "AzureWebJobsStorage"}
    env["AzureWebJobsStorage__accountName"] = "acct"
    s = Settings.from_mapping(env)
    assert s.storage.connection_string is None
    assert s.storage.blob_service_uri == "https://acct.blob.core.windows.net"
    assert s.storage.queue_service_uri == "https://acct.queue.core.windows.net"


@pytest.mark.parametrize("change, words", [
    ({"AzureWebJobsStorage": ""}, "storage is not configured"),
    ({"BATCH_ACCOUNT_URL": ""}, "BATCH_ACCOUNT_URL"),
    ({"BATCH_ACCOUNT_NAME": ""}, "BATCH_ACCOUNT_NAME"),
    ({"POOL_MAX_NODES": "many"}, "POOL_MAX_NODES"),
    ({"UPLOAD_CONCURRENCY": "0"}, "at least 1"),
])
def test_bad_settings_say_what_to_fix(change, words):
    with pytest.raises(ConfigurationError, match=words):
        Settings.from_mapping({**BASE, **change})

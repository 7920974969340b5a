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


def test_input_containers_and_task_limit_defaults():
    s = Settings.from_mapping(BASE)
    assert s.input_containers == () and s.max_tasks_per_run == 100_000


def test_input_containers_are_a_trimmed_comma_separated_list():
    s = Settings.from_mapping({**BASE, "INPUT_CONTAINERS": " shared-refs, ,inputs,shared-refs,", "MAX_TASKS_PER_RUN": "500"})
    assert s.input_containers == ("shared-refs", "inputs") and s.max_tasks_per_run == 500


@pytest.mark.parametrize("value", ["Data", "ab", "a_b", "inputs,bad name", "x" * 64, "a--b", "da\nta"])
def test_input_containers_must_be_container_names(value):
    with pytest.raises(ConfigurationError, match="INPUT_CONTAINERS"):
        Settings.from_mapping({**BASE, "INPUT_CONTAINERS": value})


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_max_tasks_per_run_must_be_a_positive_integer(value):
    with pytest.raises(ConfigurationError, match="MAX_TASKS_PER_RUN"):
        Settings.from_mapping({**BASE, "MAX_TASKS_PER_RUN": value})


def test_the_sample_settings_hold_the_new_settings():
    import json
    import pathlib
    sample = json.loads((pathlib.Path(__file__).resolve().parents[2] / "local.settings.sample.json").read_text())
    values = sample["Values"]
    assert values["INPUT_CONTAINERS"] == "" and values["MAX_TASKS_PER_RUN"] == "100000"
    s = Settings.from_mapping(values)
    assert s.input_containers == () and s.max_tasks_per_run == 100_000

"""Settings: one frozen object from named settings; secrets never show in repr; every numeric setting
has a range and each setting one default; storage and the app's identity are resolved as the host does."""
import dataclasses
import json
import pathlib

import pytest

from shared.errors import ConfigurationError
from shared.settings import LIMITS, Identity, PoolDefaults, Settings

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
    ({"UPLOAD_CONCURRENCY": "0"}, "UPLOAD_CONCURRENCY must be a whole number .* from 1 to 128"),
])
def test_bad_settings_say_what_to_fix(change, words):
    with pytest.raises(ConfigurationError, match=words):
        Settings.from_mapping({**BASE, **change})


def test_input_containers_and_task_limit_defaults():
    s = Settings.from_mapping(BASE)
    assert s.input_containers == () and s.max_tasks_per_run == 250_000


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
    assert values["INPUT_CONTAINERS"] == "" and values["MAX_TASKS_PER_RUN"] == "250000"
    s = Settings.from_mapping(values)
    assert s.input_containers == () and s.max_tasks_per_run == 250_000


# ----------------------------------------------------------------------------- numeric settings and their ranges


@pytest.mark.parametrize("value", ["two days", "-5", "0", "1", "1.99", "721", "nan", "inf", "-inf", "1e400", "48h"])
def test_orphan_max_age_hours_is_a_number_of_hours_in_its_range(value):
    # "two days" used to be a bare ValueError at start-up, and -5 removed the sweep's grace period
    with pytest.raises(ConfigurationError, match="setting ORPHAN_MAX_AGE_HOURS must be a number of hours from 2 to 720"):
        Settings.from_mapping({**BASE, "ORPHAN_MAX_AGE_HOURS": value})


@pytest.mark.parametrize("value, hours", [("2", 2.0), ("2.5", 2.5), (" 72 ", 72.0), ("720", 720.0), ("", 48.0)])
def test_orphan_max_age_hours_in_range_is_taken(value, hours):
    assert Settings.from_mapping({**BASE, "ORPHAN_MAX_AGE_HOURS": value}).orphan_max_age_hours == hours


def test_the_orphan_grace_period_outlasts_an_intake_with_all_its_redrives():
    from datetime import timedelta

    from shared.watch import MAX_INTAKE_REDRIVES, redrive_after

    function_timeout = timedelta(minutes=10)  # host.json functionTimeout: how long one intake try may take
    longest = sum((function_timeout + redrive_after(n) for n in range(MAX_INTAKE_REDRIVES + 1)), timedelta())
    assert timedelta(hours=LIMITS["ORPHAN_MAX_AGE_HOURS"].minimum) > longest


def _field_value(settings, dotted):
    for part in dotted.split("."):
        settings = getattr(settings, part)
    return settings


def _numeric_fields():
    numeric = ("int", "float", "int | None", "float | None")  # None: unset means "no limit" (MAX_ACTIVE_RUNS)
    out = [f.name for f in dataclasses.fields(Settings) if f.type in numeric]
    return out + [f"pool.{f.name}" for f in dataclasses.fields(PoolDefaults) if f.type in ("int", "float")]


def test_every_numeric_setting_has_a_range_that_holds_its_default():
    assert sorted(limit.field for limit in LIMITS.values()) == sorted(_numeric_fields())
    defaults = Settings.from_mapping(BASE)
    for name, limit in LIMITS.items():
        value = _field_value(defaults, limit.field)
        assert value is None or limit.minimum <= value <= limit.maximum, name


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_every_numeric_setting_refuses_junk_and_out_of_range_values_naming_itself(name):
    limit = LIMITS[name]
    for bad in ("lots", "1.5x", str(limit.minimum - 1), str(limit.maximum + 1), "nan"):
        with pytest.raises(ConfigurationError, match=f"^setting {name} must be .* from "):
            Settings.from_mapping({**BASE, name: bad})
    for good in (limit.minimum, limit.maximum):
        assert _field_value(Settings.from_mapping({**BASE, name: str(good)}), limit.field) == good


@pytest.mark.parametrize("name", ["MAX_TASKS_PER_RUN", "POOL_MAX_NODES", "UPLOAD_CONCURRENCY"])
def test_whole_number_settings_refuse_fractions(name):
    with pytest.raises(ConfigurationError, match=f"setting {name} must be a whole number"):
        Settings.from_mapping({**BASE, name: "2.5"})


def test_each_default_has_one_home_the_dataclass():
    """A setting that is absent or empty leaves the field's default: from_mapping writes none of its own."""
    s = Settings.from_mapping(BASE)
    assert s == Settings(storage=s.storage, batch=s.batch, identity=s.identity)
    every = {name: "" for name in json.loads(SAMPLE.read_text())["Values"] if name not in BASE}
    assert Settings.from_mapping({**BASE, **every}) == s
    registry = Settings.from_mapping({**BASE, "REGISTRY_SERVER": "r.example"}).registry
    assert (registry.username, registry.password_setting) == ("", "registry-password")


def test_the_sample_settings_are_all_in_range():
    s = Settings.from_mapping(json.loads(SAMPLE.read_text())["Values"])
    assert s.pool.max_nodes == 2 and s.orphan_max_age_hours == 48.0


SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "local.settings.sample.json"


# ----------------------------------------------------------------------------- storage connection and identity

NO_STORAGE = {k: v for k, v in BASE.items() if k != "AzureWebJobsStorage"}


def test_storage_is_found_as_the_functions_host_finds_it():
    # ConnectionStrings:, any case, and "__" the same as ":"
    s = Settings.from_mapping({**NO_STORAGE, "ConnectionStrings__AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert "127.0.0.1:10001/devstoreaccount1" in s.storage.connection_string.reveal()
    s = Settings.from_mapping({**NO_STORAGE, "AZUREWEBJOBSSTORAGE:blobServiceUri": "https://a.blob.core.windows.net/",
                               "azurewebjobsstorage__SERVICEURI": "https://a.queue.core.windows.net"})
    assert (s.storage.blob_service_uri, s.storage.queue_service_uri) == (
        "https://a.blob.core.windows.net", "https://a.queue.core.windows.net")
    s = Settings.from_mapping({**NO_STORAGE, "AzureWebJobsStorage": "UseDevelopmentStorage=true;"
                               "DevelopmentStorageProxyUri=http://azurite.local"})
    assert "BlobEndpoint=http://azurite.local:10000/devstoreaccount1" in s.storage.connection_string.reveal()


def test_identity_based_storage_needs_both_services():
    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage__queueServiceUri"):
        Settings.from_mapping({**NO_STORAGE, "AzureWebJobsStorage__blobServiceUri": "https://a.blob.core.windows.net"})


@pytest.mark.parametrize("env, identity", [
    ({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, Identity()),
    ({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "MANAGED_IDENTITY_CLIENT_ID": "uami"},
     Identity(client_id="uami")),
    ({"AzureWebJobsStorage__accountName": "acct"}, Identity()),
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": "uami"}, Identity(client_id="uami")),
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": "uami",
      "MANAGED_IDENTITY_CLIENT_ID": "uami"}, Identity(client_id="uami")),
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__credential": "managedidentity"},
     Identity(managed=True)),
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__credential": "ManagedIdentity",
      "AzureWebJobsStorage__clientId": "uami"}, Identity(client_id="uami", managed=True)),
])
def test_the_app_has_one_identity_taken_from_the_storage_connection_or_named(env, identity):
    assert Settings.from_mapping({**NO_STORAGE, **env}).identity == identity


def test_a_service_principal_connection_keeps_its_secret_hidden():
    s = Settings.from_mapping({**NO_STORAGE, "AzureWebJobsStorage__accountName": "acct",
                               "AzureWebJobsStorage__tenantId": "t", "AzureWebJobsStorage__clientId": "app",
                               "AzureWebJobsStorage__clientSecret": "hunter2-hunter2"})
    assert (s.identity.client_id, s.identity.tenant_id, s.identity.client_secret.reveal()) == ("app", "t", "hunter2-hunter2")
    assert "hunter2" not in repr(s) + str(s)


@pytest.mark.parametrize("env, words", [
    # the triggers would reach storage as one identity and the app as another
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": "a",
      "MANAGED_IDENTITY_CLIENT_ID": "b"}, "must name the same identity"),
    ({"AzureWebJobsStorage__accountName": "acct", "MANAGED_IDENTITY_CLIENT_ID": "b"}, "must name the same identity"),
    # the host ignores __clientId next to a connection string; the app used to give it to Batch
    ({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "AzureWebJobsStorage__clientId": "a"},
     "ignores AzureWebJobsStorage__clientId.*MANAGED_IDENTITY_CLIENT_ID"),
])
def test_settings_that_would_split_the_identity_are_refused(env, words):
    with pytest.raises(ConfigurationError, match=words):
        Settings.from_mapping({**NO_STORAGE, **env})


def test_admission_settings_default_to_no_cap_and_a_day_in_line():
    defaults = Settings.from_mapping(BASE)
    assert defaults.max_active_runs is None and defaults.max_queued_hours == 24.0
    capped = Settings.from_mapping({**BASE, "MAX_ACTIVE_RUNS": "5", "MAX_QUEUED_HOURS": "2.5"})
    assert capped.max_active_runs == 5 and capped.max_queued_hours == 2.5


def test_spot_and_gpu_pool_settings_have_defaults_and_are_read():
    pool = Settings.from_mapping(BASE).pool
    assert (pool.spot_wait_minutes, pool.spot_preemption_threshold) == (15.0, 1)
    assert (pool.gpu_image_publisher, pool.gpu_image_offer, pool.gpu_image_sku, pool.gpu_node_agent_sku_id) == \
        ("microsoft-dsvm", "ubuntu-hpc", "2204", "batch.node.ubuntu 22.04")
    pool = Settings.from_mapping({**BASE, "SPOT_WAIT_MINUTES": "0.05", "SPOT_PREEMPTION_THRESHOLD": "2",
                                  "POOL_GPU_IMAGE_SKU": "2404", "POOL_GPU_NODE_AGENT_SKU": "batch.node.ubuntu 24.04"}).pool
    assert (pool.spot_wait_minutes, pool.spot_preemption_threshold) == (0.05, 2)
    assert (pool.gpu_image_sku, pool.gpu_node_agent_sku_id) == ("2404", "batch.node.ubuntu 24.04")


def test_a_default_vm_size_that_is_an_unknown_gpu_size_is_refused():
    assert Settings.from_mapping({**BASE, "POOL_VM_SIZE": "Standard_NC6s_v3"}).pool.vm_size == "Standard_NC6s_v3"
    with pytest.raises(ConfigurationError, match="POOL_VM_SIZE: Standard_NC99 looks like a GPU"):
        Settings.from_mapping({**BASE, "POOL_VM_SIZE": "Standard_NC99"})

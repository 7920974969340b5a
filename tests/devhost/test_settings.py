"""App settings, %SETTING% resolution, connection resolution, local.settings.json and host.json."""
from __future__ import annotations

import json
import logging

import pytest

from devhost.errors import ConfigurationError, IndexingError
from devhost.hostconfig import load_host_json, parse_host_json
from devhost.logs import redact, register_secrets
from devhost.settings import Settings, apply_to_environ, default_host_id, layer_settings, load_local_settings

KEY = "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFy"
CONN = f"DefaultEndpointsProtocol=http;AccountName=acct1;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:1/acct1;"


def test_setting_tokens_are_replaced_and_lookups_ignore_case():
    s = Settings({"INTAKE_CONTAINER": "intake", "Prefix": "bd"})
    assert s.resolve("%INTAKE_CONTAINER%/{name}") == "intake/{name}"
    assert s.resolve("%prefix%-%intake_container%/x/{name}.json") == "bd-intake/x/{name}.json"
    assert s.resolve("literal/{name}") == "literal/{name}"


def test_missing_setting_is_an_indexing_error_naming_it():
    with pytest.raises(IndexingError) as e:
        Settings({}).resolve("%FINALIZE_QUEUE%", function_name="finalize", what="queue name")
    assert "'%FINALIZE_QUEUE%' does not resolve to a value" in str(e.value)
    assert "finalize" in str(e.value)


def test_connection_is_looked_up_like_the_webjobs_sdk():
    # AzureWebJobs<name> wins over <name>, ConnectionStrings:<name> over a plain <name>
    s = Settings({"AzureWebJobsDATA": CONN, "DATA": "UseDevelopmentStorage=true"})
    c = s.connection("DATA")
    assert (c.setting, c.kind, c.account_name) == ("AzureWebJobsDATA", "connection_string", "acct1")
    s = Settings({"ConnectionStrings:DATA": CONN, "DATA": "UseDevelopmentStorage=true"})
    assert s.connection("DATA").setting == "ConnectionStrings:DATA"
    s = Settings({"DATA": "UseDevelopmentStorage=true"})
    assert s.connection("DATA").account_name == "devstoreaccount1"


def test_empty_connection_means_azurewebjobsstorage():
    s = Settings({"AzureWebJobsStorage": CONN})
    for name in ("", None, "Storage", "AzureWebJobsStorage"):
        assert s.connection(name).setting == "AzureWebJobsStorage"


def test_identity_based_connections():
    s = Settings({"DATA__blobServiceUri": "https://acct2.blob.core.windows.net/",
                  "DATA__queueServiceUri": "https://acct2.queue.core.windows.net",
                  "DATA__credential": "managedidentity", "DATA__clientId": "abc"})
    c = s.connection("DATA")
    assert c.kind == "identity"
    assert c.blob_service_uri == "https://acct2.blob.core.windows.net"
    assert c.queue_service_uri == "https://acct2.queue.core.windows.net"
    assert c.account_name == "acct2"
    # serviceUri stands in for any service; accountName builds the public endpoints
    c = Settings({"X:serviceUri": "https://acct3.blob.core.windows.net"}).connection("X")
    assert c.blob_service_uri == "https://acct3.blob.core.windows.net"
    c = Settings({"Y__accountName": "acct4"}).connection("Y")
    assert c.queue_service_uri == "https://acct4.queue.core.windows.net"
    # the identity form of the host storage
    c = Settings({"AzureWebJobsStorage__accountName": "acct5"}).connection("")
    assert (c.kind, c.blob_service_uri) == ("identity", "https://acct5.blob.core.windows.net")


def test_missing_connection_names_the_settings_to_set():
    with pytest.raises(ConfigurationError) as e:
        Settings({}).connection("DATA")
    assert "DATA__blobServiceUri" in str(e.value)
    with pytest.raises(ConfigurationError) as e:
        Settings({}).connection("")
    assert "AzureWebJobsStorage__blobServiceUri" in str(e.value)  # not "Storage__blobServiceUri"


def test_development_storage_and_identity_credentials_follow_the_shared_rules():
    c = Settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).connection("")
    assert "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1" in c.connection_string
    c = Settings({"DATA__accountName": "a", "DATA__credential": "managedidentity", "DATA__clientId": "u"}).connection("DATA")
    assert (c.credential.kind, c.credential.client_id) == ("managedidentity", "u")
    c = Settings({"DATA__accountName": "a", "DATA__tenantId": "t", "DATA__clientId": "c",
                  "DATA__clientSecret": "s3cret-s3cret"}).connection("DATA")
    assert c.credential.kind == "clientsecret" and "s3cret" not in repr(c) and c.secrets() == ["s3cret-s3cret"]
    c = Settings({"DATA__accountName": "a", "DATA__clientId": "u"}).connection("DATA")
    assert (c.credential.kind, c.credential.client_id) == ("default", "u")


def test_the_log_redaction_is_the_shared_scrubber_plus_registered_values():
    token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJzdG9yYWdlIn0.c2ln"
    assert token not in redact(f"Authorization: Bearer {token}")
    assert "SharedKey acct:[REDACTED]" in redact("Authorization: SharedKey acct:c2lnbmF0dXJlc2lnbmF0dXJl")
    register_secrets(["plain-registered-value"])
    assert redact("the value plain-registered-value leaked") == "the value [REDACTED] leaked"


def test_connections_never_show_their_secret():
    c = Settings({"DATA": CONN}).connection("DATA")
    assert KEY not in repr(c) and KEY not in c.describe()
    register_secrets(c.secrets())
    assert KEY not in redact(f"failed with {CONN}")
    assert "sig=[REDACTED]" in redact("GET https://a.blob.core.windows.net/c/b?sv=2020&sig=abc%2Fdef")


def test_local_settings_are_layered_under_the_environment(tmp_path):
    p = tmp_path / "local.settings.json"
    p.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "file", "B": "file", "N": 5, "T": True},
                             "ConnectionStrings": {"DB": "Server=x"}}))
    values, conns = load_local_settings(p)
    assert values == {"A": "file", "B": "file", "N": "5", "T": "true"} and conns == {"DB": "Server=x"}
    merged = layer_settings(values, conns, environ={"b": "env", "PATH": "/bin"})
    assert merged["A"] == "file" and merged["b"] == "env" and "B" not in merged
    assert Settings(merged).get("ConnectionStrings:DB") == "Server=x"
    env = {"B": "env"}
    assert sorted(apply_to_environ(values, env)) == ["A", "N", "T"]
    assert env["B"] == "env" and env["A"] == "file"


def test_encrypted_or_broken_local_settings_are_refused(tmp_path):
    p = tmp_path / "local.settings.json"
    p.write_text(json.dumps({"IsEncrypted": True, "Values": {}}))
    with pytest.raises(ConfigurationError, match="encrypted"):
        load_local_settings(p)
    p.write_text("{ not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_local_settings(p)
    assert load_local_settings(tmp_path / "absent.json") == ({}, {})


def test_host_id_comes_from_the_setting_or_the_machine_and_app_dir(tmp_path):
    assert default_host_id(Settings({"AzureFunctionsWebHost__hostid": "My-Host"}), tmp_path) == "my-host"
    a = default_host_id(Settings({}), tmp_path)
    assert a == default_host_id(Settings({}), tmp_path) and len(a) <= 32
    assert a != default_host_id(Settings({}), tmp_path / "other")
    with pytest.raises(ConfigurationError):
        default_host_id(Settings({"AzureFunctionsWebHost:hostid": "bad_id!"}), tmp_path)


def test_host_json_defaults_and_overrides(tmp_path):
    d = parse_host_json({})
    assert (d.queues.batch_size, d.queues.max_dequeue_count, d.queues.visibility_timeout) == (16, 5, 0.0)
    assert d.queues.message_encoding == "base64" and d.function_timeout == 1800.0
    assert d.blobs.poison_blob_threshold == 5
    (tmp_path / "host.json").write_text(json.dumps({
        "version": "2.0", "functionTimeout": "00:10:00",
        "logging": {"logLevel": {"default": "Warning", "Function.intake": "Debug", "Function": "Error"}},
        "Extensions": {"Queues": {"MaxDequeueCount": 3, "visibilityTimeout": "00:00:30", "batchSize": 4,
                                  "messageEncoding": "none"},
                       "blobs": {"maxDegreeOfParallelism": 4}}}))
    c = load_host_json(tmp_path)
    assert (c.queues.batch_size, c.queues.max_dequeue_count, c.queues.visibility_timeout) == (4, 3, 30.0)
    assert c.queues.message_encoding == "none" and c.function_timeout == 600.0
    assert c.blobs.as_queues_options().batch_size == 3 and c.blobs.as_queues_options().new_batch_threshold == 1
    assert c.level_for("Function.intake.User") == logging.DEBUG
    assert c.level_for("Function.monitor.User") == logging.ERROR
    assert c.level_for("Host.Results") == logging.WARNING
    with pytest.raises(ConfigurationError):
        parse_host_json({"extensions": {"queues": {"batchSize": 64}}})
    with pytest.raises(ConfigurationError):
        parse_host_json({"functionTimeout": "ten minutes"})
    assert parse_host_json({"functionTimeout": "-1"}).function_timeout is None


def test_setting_tokens_follow_the_webjobs_resolver():
    # NameResolverExtensions.ResolveWholeString: left to right, '%%' never resolves, an unclosed '%' is an error
    s = Settings({"A": "x", "EMPTY": ""})
    assert s.resolve("%A%-%EMPTY%-%A%") == "x--x"  # a setting that is set but empty resolves to ''
    with pytest.raises(IndexingError, match="The '%' at position 4 does not have a closing '%'"):
        s.resolve("%A%/%B", function_name="f", what="blob path")
    with pytest.raises(IndexingError, match="'%%' does not resolve to a value"):
        s.resolve("50%%", what="queue name")
    with pytest.raises(IndexingError, match="'%B%' does not resolve to a value"):
        s.resolve("%A%%B%")

"""The AzureWebJobsStorage connection is resolved once (conventions.connection) for the app and the local
functions host: fed the same settings, both reach the same storage endpoints as the same identity."""
from __future__ import annotations

import pytest

from conventions import connection
from devhost.settings import Settings as HostSettings
from shared.settings import STORAGE_CONNECTION, Settings

BATCH = {"BATCH_ACCOUNT_URL": "http://127.0.0.1:10100"}
KEY = "a2V5a2V5a2V5a2V5a2V5a2V5"
CONN = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net"

MATRIX = [
    {"AzureWebJobsStorage": CONN},
    {"AzureWebJobsStorage": "UseDevelopmentStorage=true"},
    {"AzureWebJobsStorage": "usedevelopmentstorage=TRUE;DevelopmentStorageProxyUri=http://10.0.0.5"},
    {"ConnectionStrings:AzureWebJobsStorage": CONN},
    {"ConnectionStrings__AzureWebJobsStorage": CONN, "AzureWebJobsStorage": "UseDevelopmentStorage=true"},
    {"azurewebjobsstorage": CONN},
    {"AzureWebJobsStorage": "", "AzureWebJobsStorage__accountName": "acct"},
    {"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": "uami"},
    {"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__credential": "managedidentity"},
    {"AzureWebJobsStorage__blobServiceUri": "https://b.blob.core.windows.net/",
     "AzureWebJobsStorage__queueServiceUri": "https://q.queue.core.windows.net", "AzureWebJobsStorage__accountName": "x"},
    {"AzureWebJobsStorage:BlobServiceUri": "https://b.blob.core.windows.net",
     "AZUREWEBJOBSSTORAGE:SERVICEURI": "https://s.queue.core.windows.net"},
    {"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__tenantId": "t",
     "AzureWebJobsStorage__clientId": "app", "AzureWebJobsStorage__clientSecret": "s3cret"},
]


@pytest.mark.parametrize("env", MATRIX)
def test_the_app_and_the_host_read_the_storage_connection_alike(env):
    app = Settings.from_mapping({**BATCH, **env})
    host = HostSettings(env).connection(STORAGE_CONNECTION)
    secret = app.storage.connection_string
    assert (secret.reveal() if secret else None) == host.connection_string
    assert (app.storage.blob_service_uri, app.storage.queue_service_uri) == (
        (None, None) if host.kind == "connection_string" else (host.blob_service_uri, host.queue_service_uri))
    if host.credential is not None:  # identity-based: the app's identity is the connection's
        assert app.identity.client_id == host.credential.client_id
        assert app.identity.managed == (host.credential.kind == connection.MANAGED_IDENTITY)
        assert (app.identity.client_secret.reveal() if app.identity.client_secret else None) == (
            host.credential.client_secret if host.credential.kind == connection.CLIENT_SECRET else None)


def test_development_storage_is_spelled_out_once_for_both():
    c = connection.resolve({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "")
    assert c.account_name == connection.DEVELOPMENT_ACCOUNT
    for endpoint in ("BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1",
                     "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1",
                     "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1"):
        assert endpoint in (c.connection_string or "")


def test_a_missing_connection_names_the_settings_to_set():
    with pytest.raises(connection.ConnectionNotConfigured) as e:
        connection.resolve({}, "")
    assert "AzureWebJobsStorage__blobServiceUri" in str(e.value) and "'Storage__" not in str(e.value)


def test_a_resolved_connection_never_shows_its_secrets():
    c = connection.resolve({"X": CONN}, "X")
    i = connection.resolve({"X__accountName": "a", "X__tenantId": "t", "X__clientId": "c", "X__clientSecret": "s3cret!"},
                           "X")
    assert KEY not in repr(c) + c.describe() and "s3cret!" not in repr(i) + i.describe()
    assert c.secrets() == [KEY] and i.secrets() == ["s3cret!"]


def test_identity_children_next_to_a_connection_string_are_ignored_and_listed():
    c = connection.resolve({"AzureWebJobsStorage": CONN, "AzureWebJobsStorage__clientId": "x"}, STORAGE_CONNECTION)
    assert c.kind == "connection_string" and c.credential is None and c.ignored_children == ("clientid",)

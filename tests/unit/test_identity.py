"""Which credential each client gets: Storage, Batch, Event Grid and Key Vault all authenticate as the
app's one identity (shared.identity), or with their own key when one is configured.

No identity endpoint can run here, so azure-identity's credential classes are replaced by small recording
stand-ins, and so are the Batch, Event Grid and Key Vault client classes (they only record what they are
given); the storage clients are the real SDK's, which show their credential.
"""
from __future__ import annotations

import azure.eventgrid
import azure.identity
import azure.keyvault.secrets
import pytest
from azure.core.credentials import AzureKeyCredential, AzureNamedKeyCredential

from shared import batch, events, identity, secrets, storage
from shared.settings import Settings

UAMI = "11111111-2222-3333-4444-555555555555"


class RecordingCredential:
    """Stands in for an azure-identity credential: records its class and arguments, never fetches a token."""

    kind = "?"

    def __init__(self, *args, **kwargs) -> None:
        self.args = args
        self.kwargs = kwargs

    def get_token(self, *scopes, **kwargs):
        raise AssertionError("no token may be requested in a unit test")

    def described(self) -> tuple:
        return (self.kind, self.kwargs.get("client_id") or self.kwargs.get("managed_identity_client_id"), *self.args)


class ManagedIdentity(RecordingCredential):
    kind = "managed identity"


class Default(RecordingCredential):
    kind = "default chain"


class ServicePrincipal(RecordingCredential):
    kind = "client secret"

    def described(self) -> tuple:
        tenant, client_id, _secret = self.args
        return (self.kind, client_id, tenant)


class RecordingClient:
    """Stands in for BatchClient / EventGridPublisherClient / SecretClient: keeps its endpoint and credential."""

    def __init__(self, endpoint, credential=None, **kwargs) -> None:
        self.endpoint = endpoint
        self.credential = credential if credential is not None else kwargs.get("credential")


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch):
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", ManagedIdentity)
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Default)
    monkeypatch.setattr(azure.identity, "ClientSecretCredential", ServicePrincipal)
    monkeypatch.setattr(batch, "BatchClient", RecordingClient)
    monkeypatch.setattr(azure.eventgrid, "EventGridPublisherClient", RecordingClient)
    monkeypatch.setattr(azure.keyvault.secrets, "SecretClient", RecordingClient)


SERVICES = {"BATCH_ACCOUNT_URL": "https://acct.westeurope.batch.azure.com",
            "EVENTGRID_TOPIC_ENDPOINT": "https://topic.westeurope-1.eventgrid.azure.net/api/events",
            "KEY_VAULT_URL": "https://vault.vault.azure.net"}


def credentials(env: dict[str, str]) -> dict[str, object]:
    """The credential each of the app's clients was built with."""
    settings = Settings.from_mapping({**SERVICES, **env})
    return {
        "blob": storage.blob_service(settings).credential,
        "queue": storage.queue_client(settings, "q").credential,
        "batch": batch.batch_client(settings).credential,
        "events": events.publisher(settings)._client.credential,
        "key vault": secrets.secret_source(settings, {})._client.credential,
    }


def described(credential: object) -> tuple:
    return credential.described() if isinstance(credential, RecordingCredential) else (type(credential).__name__,)


@pytest.mark.parametrize("env, expected", [
    # the README's deployment: identity-based storage with a user-assigned identity. Event Grid and Key Vault
    # used to get DefaultAzureCredential() without its client id: the wrong identity
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__clientId": UAMI},
     ("managed identity", UAMI)),
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__credential": "managedidentity",
      "AzureWebJobsStorage__clientId": UAMI}, ("managed identity", UAMI)),
    # system-assigned, asked for by name
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__credential": "managedidentity"},
     ("managed identity", None)),
    # nothing named: the default chain, with no client id of ours
    ({"AzureWebJobsStorage__accountName": "acct"}, ("default chain", None)),
    # a service principal in the connection
    ({"AzureWebJobsStorage__accountName": "acct", "AzureWebJobsStorage__tenantId": "tenant",
      "AzureWebJobsStorage__clientId": "app-id", "AzureWebJobsStorage__clientSecret": "s3cret"},
     ("client secret", "app-id", "tenant")),
])
def test_every_client_authenticates_as_the_one_identity(env, expected):
    got = {client: described(c) for client, c in credentials(env).items()}
    assert got == dict.fromkeys(got, expected)


def test_with_a_connection_string_the_named_identity_serves_batch_event_grid_and_key_vault():
    got = credentials({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "MANAGED_IDENTITY_CLIENT_ID": UAMI})
    assert {k: described(v) for k, v in got.items() if k not in ("blob", "queue")} == dict.fromkeys(
        ("batch", "events", "key vault"), ("managed identity", UAMI))
    # storage signs with the connection string's account key, not with an identity
    assert type(got["blob"]).__name__ == type(got["queue"]).__name__ == "SharedKeyCredentialPolicy"
    assert got["blob"].account_name == "devstoreaccount1"


def test_keys_are_used_where_they_are_configured_and_no_identity_is_made():
    got = credentials({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "BATCH_ACCOUNT_NAME": "acct",
                       "BATCH_ACCOUNT_KEY": "a2V5", "EVENTGRID_TOPIC_KEY": "topic-key"})
    assert isinstance(got["batch"], AzureNamedKeyCredential) and got["batch"].named_key == ("acct", "a2V5")
    assert isinstance(got["events"], AzureKeyCredential) and got["events"].key == "topic-key"
    assert described(got["key vault"]) == ("default chain", None)


def test_each_call_gives_a_new_credential_of_the_same_identity():
    settings = Settings.from_mapping({**SERVICES, "AzureWebJobsStorage__accountName": "acct",
                                      "AzureWebJobsStorage__clientId": UAMI})
    a, b = identity.credential(settings), identity.credential(settings)
    assert a is not b and described(a) == described(b) == ("managed identity", UAMI)

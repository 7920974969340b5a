"""Event Grid and Key Vault cannot run here: these check our adapters against small recording clients."""
import pytest

from shared.errors import ConfigurationError
from shared.events import EventGridPublisher, NullPublisher, publisher
from shared.secrets import KeyVaultSecrets, SettingSecrets, StaticSecrets
from shared.settings import Settings


class RecordingEventGridClient:
    """Stands in for azure.eventgrid.EventGridPublisherClient: keeps what `send` is given."""

    def __init__(self, fail: bool = False):
        self.sent = []
        self.fail = fail

    def send(self, event):
        if self.fail:
            raise ConnectionError("topic unreachable")
        self.sent.append(event)


def test_lifecycle_events_are_cloudevents_with_type_and_subject():
    client = RecordingEventGridClient()
    EventGridPublisher(client).publish("succeeded", "run-1", {"output": "results/run-1/output.jsonl"})
    (event,) = client.sent
    assert event.type == "batchdrop.run.succeeded"
    assert event.subject == "runs/run-1"
    assert event.source == "/batchdrop/runs"
    assert event.data == {"output": "results/run-1/output.jsonl"}


def test_publishing_is_best_effort(caplog):
    EventGridPublisher(RecordingEventGridClient(fail=True)).publish("failed", "run-2", {})
    assert "event not published run_id=run-2" in caplog.text


def test_no_topic_means_no_events():
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "BATCH_ACCOUNT_URL": "http://x"}
    assert isinstance(publisher(Settings.from_mapping(env)), NullPublisher)


class RecordingSecretClient:
    """Stands in for azure.keyvault.secrets.SecretClient."""

    class _Secret:
        def __init__(self, value):
            self.value = value

    def __init__(self, values):
        self.values = values

    def get_secret(self, name):
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self.values:
            raise ResourceNotFoundError(f"secret {name} not found")
        return self._Secret(self.values[name])


def test_secrets_from_key_vault_settings_or_static_never_print_their_value():
    vault = KeyVaultSecrets(RecordingSecretClient({"registry-password": "hunter2"}))
    assert vault.get("registry-password").reveal() == "hunter2"
    assert "hunter2" not in repr(vault.get("registry-password"))
    with pytest.raises(ConfigurationError, match="not in the key vault"):
        vault.get("missing")
    assert SettingSecrets({"REGISTRY_PASSWORD": "pw"}).get("registry-password").reveal() == "pw"
    with pytest.raises(ConfigurationError, match="REGISTRY_PASSWORD"):
        SettingSecrets({}).get("registry-password")
    assert StaticSecrets({"a": "b"}).get("a").reveal() == "b"

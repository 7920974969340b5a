"""Secret look-ups: Key Vault in Azure, plain settings locally. Values are wrapped in `Secret`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from shared import identity
from shared.errors import ConfigurationError
from shared.settings import Secret, Settings


class SecretSource(Protocol):
    def get(self, name: str) -> Secret: ...


class SettingSecrets:
    """Secrets from app settings (local.settings.json locally): secret `a-b` is setting `A_B`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def get(self, name: str) -> Secret:
        key = name.upper().replace("-", "_")
        value = self._env.get(key)
        if not value:
            raise ConfigurationError(f"secret '{name}' is not configured: set app setting {key} or KEY_VAULT_URL")
        return Secret(value)


class KeyVaultSecrets:
    """Secrets from Azure Key Vault (the client authenticates as the app's identity, see `secret_source`)."""

    def __init__(self, client) -> None:
        self._client = client

    def get(self, name: str) -> Secret:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return Secret(self._client.get_secret(name).value)
        except ResourceNotFoundError:
            raise ConfigurationError(f"secret '{name}' is not in the key vault") from None


class StaticSecrets:
    """Stand-in for Key Vault in tests (no vault can run locally): a fixed name -> value map."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def get(self, name: str) -> Secret:
        if name not in self._values:
            raise ConfigurationError(f"secret '{name}' is not configured")
        return Secret(self._values[name])


def secret_source(settings: Settings, env: Mapping[str, str]) -> SecretSource:
    """Key Vault (KEY_VAULT_URL) through the app's one identity (shared.identity: the same as
    Storage, Batch and Event Grid use); else app settings."""
    if settings.key_vault_url:
        from azure.keyvault.secrets import SecretClient

        return KeyVaultSecrets(SecretClient(settings.key_vault_url, identity.credential(settings)))
    return SettingSecrets(env)

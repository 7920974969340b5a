"""The app's one credential for Microsoft Entra ID: Storage, Batch, Event Grid and Key Vault all get it here.

Guarantee: every client the app builds without a key authenticates as the identity `Settings.identity`
names, never as another one that happens to be around:

* a client secret (the storage connection's ``__tenantId`` + ``__clientId`` + ``__clientSecret``):
  that service principal (``ClientSecretCredential``);
* a client id (``AzureWebJobsStorage__clientId`` or MANAGED_IDENTITY_CLIENT_ID), or
  ``AzureWebJobsStorage__credential=managedidentity``: that managed identity, user-assigned with the
  client id, else system-assigned (``ManagedIdentityCredential``). Not ``DefaultAzureCredential``,
  which would try a service principal from the environment or a developer sign-in first;
* neither: ``DefaultAzureCredential`` (system-assigned identity in Azure, a developer sign-in locally).

The Functions host itself gives a ``__clientId`` without ``__credential`` to ``DefaultAzureCredential``
as its managed identity; in Azure both reach the same user-assigned identity.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


def credential(settings: Settings) -> TokenCredential:
    """A new credential for the app's identity (see the module's rules). azure-identity is imported
    only when this is called: key-based and emulator set-ups never need it."""
    from azure import identity as azure_identity

    who = settings.identity
    if who.client_secret is not None and who.client_id and who.tenant_id:
        return azure_identity.ClientSecretCredential(who.tenant_id, who.client_id, who.client_secret.reveal())
    if who.client_id or who.managed:
        return azure_identity.ManagedIdentityCredential(client_id=who.client_id)
    return azure_identity.DefaultAzureCredential()

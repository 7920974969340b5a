"""A Functions storage connection (``connection="X"`` of a trigger), resolved as the Functions host does.

Guarantee: the app (`shared.settings`) and the local functions host (`devhost.settings`) both resolve
``AzureWebJobsStorage`` with `resolve`, so the triggers and the app's own clients never read the same
settings differently. The rules are those of the WebJobs storage extensions:

* Lookups ignore case and ``__`` is the same as ``:`` (the .NET configuration rules).
* ``X`` names a configuration section, tried in this order: ``ConnectionStrings:AzureWebJobsX``,
  ``AzureWebJobsX``, ``ConnectionStrings:X``, ``X``. An empty name means ``Storage``, i.e.
  ``AzureWebJobsStorage``.
* A section with a value is a connection string; its children are then ignored (they are listed in
  `StorageConnection.ignored_children`). ``UseDevelopmentStorage=true`` becomes the explicit connection
  string of the local emulator's well-known account (on ``DevelopmentStorageProxyUri`` when given).
* A section with children only is identity-based. The blob service is ``X__blobServiceUri``, else
  ``X__serviceUri``, else ``https://<X__accountName>.blob.core.windows.net``; the queue service likewise.
  Its credential (`Credential`): ``X__credential=managedidentity`` is a managed identity (user-assigned
  when ``X__clientId`` is set); else ``X__tenantId`` + ``X__clientId`` + ``X__clientSecret`` is a
  service principal; else the default chain, trying the managed identity ``X__clientId`` when set.

Standard library only; nothing here puts a connection string, key or client secret in a repr or message.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar, overload

__all__ = [
    "CLIENT_SECRET",
    "DEFAULT_CHAIN",
    "DEVELOPMENT_ACCOUNT",
    "MANAGED_IDENTITY",
    "ConnectionNotConfigured",
    "Credential",
    "StorageConnection",
    "resolve",
    "section_key",
]

# Kinds of `Credential`
MANAGED_IDENTITY = "managedidentity"
CLIENT_SECRET = "clientsecret"
DEFAULT_CHAIN = "default"

DEVELOPMENT_ACCOUNT = "devstoreaccount1"
# The storage emulator's well-known key (published by Microsoft; the same for every Azurite)
_DEVELOPMENT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_DEVELOPMENT_PORTS = {"Blob": 10000, "Queue": 10001, "Table": 10002}


class ConnectionNotConfigured(ValueError):
    """No section of the connection's name holds a value or identity settings. The message names the
    settings to set and never holds a value."""


def section_key(name: str) -> str:
    """The key a setting is compared by: case ignored, ``__`` the same as ``:``."""
    return name.replace("__", ":").lower()


@dataclass(frozen=True)
class Credential:
    """How an identity-based connection authenticates: `kind` is MANAGED_IDENTITY, CLIENT_SECRET or
    DEFAULT_CHAIN. Its repr never shows the client secret."""

    kind: str
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StorageConnection:
    """A resolved connection. Its repr never shows the connection string or a secret."""

    name: str  # the configured name; "Storage" for AzureWebJobsStorage
    setting: str  # the section it was found under, e.g. "AzureWebJobsStorage"
    kind: str  # "connection_string" | "identity"
    connection_string: str | None = field(default=None, repr=False)
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    credential: Credential | None = None  # identity-based connections only
    # lower-cased children of a connection-string section (the host ignores them), e.g. ("clientid",)
    ignored_children: tuple[str, ...] = ()

    def child(self, name: str) -> str:
        """The setting name of one of this section's children, for messages: ``AzureWebJobsStorage__clientId``."""
        return f"{self.setting}__{name}"

    def _parts(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in (self.connection_string or "").split(";"):
            if "=" in item:
                k, v = item.split("=", 1)
                out[k.strip().lower()] = v.strip()
        return out

    @property
    def account_name(self) -> str | None:
        if self.kind == "connection_string":
            return self._parts().get("accountname")
        uri = self.blob_service_uri or self.queue_service_uri or ""
        host = re.sub(r"^[a-z]+://", "", uri, flags=re.IGNORECASE).split("/")[0]
        return host.split(".")[0] or None

    def describe(self) -> str:
        """Safe text for logs: the setting name and the account, never a secret."""
        how = "identity" if self.kind == "identity" else "connection string"
        return f"{self.setting} ({how}, account {self.account_name or '?'})"

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line (account key, SAS token, client secret)."""
        parts = self._parts()
        found = [parts[key] for key in ("accountkey", "sharedaccesssignature") if parts.get(key)]
        if self.credential is not None and self.credential.client_secret:
            found.append(self.credential.client_secret)
        return found


C = TypeVar("C", bound=StorageConnection)


@overload
def resolve(settings: Mapping[str, str], name: str | None) -> StorageConnection: ...
@overload
def resolve(settings: Mapping[str, str], name: str | None, cls: type[C]) -> C: ...


def resolve(settings: Mapping[str, str], name: str | None, cls: type[StorageConnection] = StorageConnection):
    """The connection `name` names in `settings` (a flat name -> value map of app settings).

    Raises ConnectionNotConfigured when no section of that name has a value or children. `cls` lets a
    caller get its own subclass (with the SDK clients it builds) of the same resolved value."""
    values = {section_key(k): v for k, v in settings.items() if v is not None}
    configured = (name or "").strip() or "Storage"
    for candidate in (f"ConnectionStrings:AzureWebJobs{configured}", f"AzureWebJobs{configured}",
                      f"ConnectionStrings:{configured}", configured):
        key = section_key(candidate)
        prefix = key + ":"
        children = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
        value = (values.get(key) or "").strip()
        if value:
            return cls(name=configured, setting=candidate, kind="connection_string",
                       connection_string=_explicit(value), ignored_children=tuple(sorted(children)))
        if children:
            return _identity(cls, configured, candidate, children)
    base = "AzureWebJobsStorage" if configured == "Storage" else configured
    raise ConnectionNotConfigured(
        f"storage connection '{configured}' is not configured: set app setting '{base}' to a connection "
        f"string, or '{base}__blobServiceUri' / '{base}__queueServiceUri' (or '{base}__accountName') for an "
        "identity-based connection")


def _identity(cls: type[C], name: str, setting: str, kids: Mapping[str, str]) -> C:
    def service_uri(sub: str) -> str | None:
        for key in (f"{sub}serviceuri", "serviceuri"):
            if (kids.get(key) or "").strip():
                return kids[key].strip().rstrip("/")
        account = (kids.get("accountname") or "").strip()
        return f"https://{account}.{sub}.core.windows.net" if account else None

    def opt(key: str) -> str | None:
        return (kids.get(key) or "").strip() or None

    client_id, tenant_id, secret = opt("clientid"), opt("tenantid"), opt("clientsecret")
    if (opt("credential") or "").lower() == MANAGED_IDENTITY:
        credential = Credential(MANAGED_IDENTITY, client_id=client_id)
    elif client_id and tenant_id and secret:
        credential = Credential(CLIENT_SECRET, client_id=client_id, tenant_id=tenant_id, client_secret=secret)
    else:
        credential = Credential(DEFAULT_CHAIN, client_id=client_id, tenant_id=tenant_id)
    return cls(name=name, setting=setting, kind="identity", blob_service_uri=service_uri("blob"),
               queue_service_uri=service_uri("queue"), credential=credential)


def _explicit(connection_string: str) -> str:
    """``UseDevelopmentStorage=true`` spelled out (the emulator's account and endpoints); others unchanged."""
    parts: dict[str, str] = {}
    for item in connection_string.split(";"):
        if "=" in item:
            k, v = item.split("=", 1)
            parts[k.strip().lower()] = v.strip()
    if parts.get("usedevelopmentstorage", "").lower() != "true":
        return connection_string
    base = (parts.get("developmentstorageproxyuri") or "http://127.0.0.1").rstrip("/")
    scheme = base.split("://", 1)[0] if "://" in base else "http"
    endpoints = "".join(f"{service}Endpoint={base}:{port}/{DEVELOPMENT_ACCOUNT};"
                        for service, port in _DEVELOPMENT_PORTS.items())
    return (f"DefaultEndpointsProtocol={scheme};AccountName={DEVELOPMENT_ACCOUNT};AccountKey={_DEVELOPMENT_KEY};"
            + endpoints)

"""App settings, ``%NAME%`` resolution and storage connections, resolved the way the host does.

* App settings are a flat name -> value map (``local.settings.json`` ``Values`` layered under
  the process environment: the environment wins, as with ``func start``). Lookups are
  case-insensitive and ``__`` is the same as ``:`` (the .NET configuration rules the host uses).
* ``%NAME%`` inside a trigger's path / queueName / schedule is replaced by setting NAME; a
  missing setting is an indexing error (``'%NAME%' does not resolve to a value.``).
* ``connection="X"`` names a configuration section, looked up as the WebJobs SDK does:
  ``ConnectionStrings:AzureWebJobsX``, ``AzureWebJobsX``, ``ConnectionStrings:X``, ``X``.
  A section with a value is a connection string; a section with children
  (``X__blobServiceUri``, ``X__queueServiceUri``, ``X__serviceUri``, ``X__accountName``,
  ``X__credential``, ``X__clientId``) is an identity-based connection. An empty connection
  means ``Storage``, i.e. ``AzureWebJobsStorage``. The rules live in `conventions.connection`,
  which the app (shared/) resolves AzureWebJobsStorage with too: host and app never disagree.

Nothing here ever puts a connection string or key in a message or a repr.
"""
from __future__ import annotations

import json
import os
import re
import socket
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conventions import connection

from .errors import ConfigurationError, IndexingError

__all__ = [
    "Settings", "StorageConnection", "load_local_settings", "layer_settings", "default_host_id",
    "validate_host_id", "apply_to_environ",
]

def _norm(key: str) -> str:
    return key.replace("__", ":").lower()


class Settings:
    """Case-insensitive app settings with the .NET ``__`` == ``:`` rule."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, str] = {}
        self._names: dict[str, str] = {}
        for k, v in (values if values is not None else os.environ).items():
            if v is None:
                continue
            self._values[_norm(k)] = str(v)
            self._names[_norm(k)] = k

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(_norm(name), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _norm(name) in self._values

    def children(self, section: str) -> dict[str, str]:
        """Direct and nested children of a section, keyed by the lower-cased remainder."""
        prefix = _norm(section) + ":"
        return {k[len(prefix):]: v for k, v in self._values.items() if k.startswith(prefix)}

    def section_exists(self, name: str) -> bool:
        return name in self or bool(self.children(name))

    def is_true(self, name: str) -> bool:
        return (self.get(name) or "").strip().lower() in ("1", "true", "yes")

    # -- %NAME% -----------------------------------------------------------------------
    def resolve(self, expression: str | None, *, function_name: str | None = None,
                what: str = "value") -> str | None:
        """Replace every ``%NAME%`` by the setting's value, as the WebJobs SDK's
        ``NameResolverExtensions.ResolveWholeString`` does: tokens are read left to right, ``%%``
        names the empty setting (which never resolves), a ``%`` without its closing ``%`` is an
        error, and a setting that is set but empty resolves to the empty string."""
        if expression is None:
            return None
        where = f"function '{function_name}': " if function_name else ""
        out: list[str] = []
        i = 0
        while True:
            start = expression.find("%", i)
            if start < 0:
                out.append(expression[i:])
                return "".join(out)
            end = expression.find("%", start + 1)
            if end < 0:
                raise IndexingError(
                    f"devhost: {where}the {what} '{expression}': The '%' at position {start} does not "
                    "have a closing '%'")
            name = expression[start + 1:end]
            value = self.get(name) if name else None
            if value is None:
                why = (f"app setting '{name}' is not set" if name
                       else "'%%' names no setting; a literal '%' cannot be written here")
                raise IndexingError(
                    f"devhost: {where}'%{name}%' does not resolve to a value (the {what} names it; {why}).")
            out.append(expression[i:start])
            out.append(value)
            i = end + 1

    # -- connections ------------------------------------------------------------------
    def connection(self, name: str | None) -> StorageConnection:
        """Resolve a binding's ``connection`` the way the WebJobs storage extension does
        (`conventions.connection`, the resolver the app uses for AzureWebJobsStorage too)."""
        try:
            return connection.resolve(self._values, name, StorageConnection)
        except connection.ConnectionNotConfigured as e:
            raise ConfigurationError(f"devhost: {e}") from None


@dataclass(frozen=True)
class StorageConnection(connection.StorageConnection):
    """A resolved connection (see `conventions.connection`) and the SDK clients the host makes from
    it. Its repr never shows the connection string or a secret."""

    def _credential(self) -> Any:
        """The credential the Functions host builds for an identity-based connection."""
        from azure import identity  # lazy: only identity-based connections need it

        c = self.credential or connection.Credential(connection.DEFAULT_CHAIN)
        if c.kind == connection.MANAGED_IDENTITY:
            return identity.ManagedIdentityCredential(client_id=c.client_id)
        if c.kind == connection.CLIENT_SECRET and c.tenant_id and c.client_id and c.client_secret:
            return identity.ClientSecretCredential(c.tenant_id, c.client_id, c.client_secret)
        return identity.DefaultAzureCredential(managed_identity_client_id=c.client_id)

    def blob_service_client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        if self.kind == "connection_string":
            return BlobServiceClient.from_connection_string(self.connection_string or "")
        if not self.blob_service_uri:
            raise ConfigurationError(
                f"devhost: connection '{self.name}' has no blob service URI: set "
                f"'{self.child('blobServiceUri')}'")
        return BlobServiceClient(self.blob_service_uri, credential=self._credential())

    def queue_service_client(self) -> Any:
        from azure.storage.queue import QueueServiceClient

        if self.kind == "connection_string":
            return QueueServiceClient.from_connection_string(self.connection_string or "")
        if not self.queue_service_uri:
            raise ConfigurationError(
                f"devhost: connection '{self.name}' has no queue service URI: set "
                f"'{self.child('queueServiceUri')}'")
        return QueueServiceClient(self.queue_service_uri, credential=self._credential())


# -- local.settings.json ------------------------------------------------------------------
def load_local_settings(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Return (Values, ConnectionStrings) of a local.settings.json; empty when the file is absent."""
    p = Path(path)
    if not p.exists():
        return {}, {}
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"devhost: {p} is not valid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"devhost: {p} must hold a JSON object")
    if data.get("IsEncrypted"):
        raise ConfigurationError(
            f"devhost: {p} is encrypted (IsEncrypted: true); decrypt it with "
            "`func settings decrypt` first")
    values = data.get("Values") or {}
    conns = data.get("ConnectionStrings") or {}
    if not isinstance(values, dict) or not isinstance(conns, dict):
        raise ConfigurationError(f"devhost: {p}: Values and ConnectionStrings must be objects")

    def flat(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return v if isinstance(v, str) else json.dumps(v)

    return ({str(k): flat(v) for k, v in values.items() if v is not None},
            {str(k): (v.get("ConnectionString", "") if isinstance(v, dict) else flat(v))
             for k, v in conns.items() if v is not None})


def layer_settings(values: Mapping[str, str], connection_strings: Mapping[str, str] | None = None,
                   environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """local.settings.json under the environment: a variable that is set wins over the file."""
    env = dict(os.environ if environ is None else environ)
    merged = {f"ConnectionStrings:{k}": v for k, v in (connection_strings or {}).items()}
    merged.update(values)
    env_norm = {_norm(k) for k in env}
    out = {k: v for k, v in merged.items() if _norm(k) not in env_norm}
    out.update(env)
    return out


def apply_to_environ(values: Mapping[str, str], environ: Any = None) -> list[str]:
    """Export settings as environment variables of this (worker) process; env values win.

    Returns the names that were set. ``ConnectionStrings:X`` is exported as
    ``ConnectionStrings__X`` (a valid variable name meaning the same to the host).
    """
    env = os.environ if environ is None else environ
    done = []
    present = {_norm(k) for k in env}
    for k, v in values.items():
        name = k.replace(":", "__")
        if _norm(name) in present:
            continue
        env[name] = v
        done.append(name)
    return done


def default_host_id(settings: Settings, app_dir: str | os.PathLike[str] | None) -> str:
    """``AzureFunctionsWebHost__hostid`` or, like a local func host, ``<machine>-<hash of app dir>``."""
    configured = settings.get("AzureFunctionsWebHost:hostid")
    if configured:
        host_id = configured.strip().lower()
    else:
        machine = re.sub(r"[^a-z0-9-]", "", socket.gethostname().lower()) or "devhost"
        digest = zlib.crc32(str(Path(app_dir or ".").resolve()).encode()) & 0x7FFFFFFF
        host_id = f"{machine}-{digest}"
    return validate_host_id(host_id[:32].strip("-"))


def validate_host_id(host_id: str) -> str:
    """Host ids name a queue (``azure-webjobs-blobtrigger-<id>``): 1-32 of a-z, 0-9 and dashes."""
    host_id = host_id.strip().lower()
    if len(host_id) > 32 or not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", host_id):
        raise ConfigurationError(
            f"devhost: host id '{host_id}' is invalid: use lower-case letters, digits and dashes "
            "(at most 32 characters)")
    return host_id

"""Where batchdrop's storage (and, optionally, Batch) is: the local stack or a deployment.

The first of these that applies wins:

1. ``--settings FILE`` or ``BATCHDROP_SETTINGS``: a local.settings.json-style file (its "Values").
2. ``--account NAME`` or ``BATCHDROP_STORAGE_ACCOUNT``: that storage account (a name, or a blob
   endpoint URL), reached with ``DefaultAzureCredential`` (what ``az login`` gives).
3. ``BATCHDROP_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_CONNECTION_STRING``: a connection string.
4. An azd environment: ``azure.yaml`` in this folder or above, and ``.azure/<env>/.env`` (env from
   ``AZURE_ENV_NAME`` or ``.azure/config.json``) naming the storage account among the deployment's
   outputs (``BATCHDROP_STORAGE_ACCOUNT``, ``AZURE_STORAGE_ACCOUNT_NAME`` or ``AZURE_STORAGE_BLOB_ENDPOINT``).
5. The local stack: ``local.settings.json`` in this folder or the project's, else the project's
   ``local.settings.sample.json`` (what ``make up`` uses).

In 2-4 the container names and limits come from the same app setting names (``INTAKE_CONTAINER``,
``DATA_CONTAINER``, ``RESULTS_CONTAINER``, ``INPUT_CONTAINERS``, ``MAX_JOB_FILE_BYTES``, ...) in the
azd outputs and then the environment, else their defaults. Batch is optional (only ``logs`` of a
running task uses it): ``BATCH_ACCOUNT_URL`` (azd: ``AZURE_BATCH_ACCOUNT_URL``), with
``BATCH_ACCOUNT_NAME`` + ``BATCH_ACCOUNT_KEY`` for a shared key, else ``DefaultAzureCredential``.

The settings are read into `shared.settings.Settings`, so names and limits are the pipeline's own.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchdrop_cli.errors import UNREACHABLE, CliError
from shared.errors import ConfigurationError
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.batch import BatchClient
    from azure.storage.blob import BlobServiceClient

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = "local.settings.json"
SAMPLE_FILE = "local.settings.sample.json"

# Settings that name containers and limits (the same names as the app's settings).
LAYOUT_SETTINGS = ("INTAKE_CONTAINER", "DATA_CONTAINER", "RESULTS_CONTAINER", "CONTROL_CONTAINER",
                   "WORK_CONTAINER_PREFIX", "INPUT_CONTAINERS", "MAX_JOB_FILE_BYTES", "MAX_TASKS_PER_RUN")
BATCH_SETTINGS = ("BATCH_ACCOUNT_URL", "BATCH_ACCOUNT_NAME", "BATCH_ACCOUNT_KEY")
# Settings requires a Batch URL; the CLI needs Batch only for live logs, so it stands in when none is set
# (never contacted: `Target.batch_configured` is False then).
_NO_BATCH = "https://batch-not-configured.invalid"

HOW_TO_CONFIGURE = (
    "local stack: `make up` (batchdrop reads local.settings.json, else local.settings.sample.json); "
    "a deployment: --account NAME or BATCHDROP_STORAGE_ACCOUNT (signed in with `az login`), "
    "BATCHDROP_STORAGE_CONNECTION_STRING, or --settings FILE / BATCHDROP_SETTINGS")


@dataclass(frozen=True)
class Target:
    """The resolved settings, and where they came from (for messages; never holds a secret in text)."""

    settings: Settings
    source: str
    batch_configured: bool

    @property
    def endpoint(self) -> str:
        """The blob endpoint, for messages (no key, no SAS)."""
        storage = self.settings.storage
        if storage.blob_service_uri:
            return storage.blob_service_uri
        parts = _conn_parts(storage.connection_string.reveal() if storage.connection_string else "")
        if "blobendpoint" in parts:
            return parts["blobendpoint"].rstrip("/")
        account = parts.get("accountname", "?")
        suffix = parts.get("endpointsuffix", "core.windows.net")
        return f"{parts.get('defaultendpointsprotocol', 'https')}://{account}.blob.{suffix}"

    def blob_service(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        # fail fast when nothing listens (the SDK's default retries wait 15 s and more between tries)
        retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3, retry_connect=0,
                                 random_jitter_range=1)
        options: dict[str, Any] = dict(retry_policy=retry, connection_timeout=10)
        storage = self.settings.storage
        if storage.connection_string is not None:
            return BlobServiceClient.from_connection_string(storage.connection_string.reveal(), **options)
        return BlobServiceClient(self.endpoint, credential=_user_credential(), **options)

    def batch_client(self) -> BatchClient | None:
        """None when no Batch account is configured (Batch is optional for the CLI)."""
        if not self.batch_configured:
            return None
        from azure.batch import BatchClient

        access = self.settings.batch
        if access.account_key is not None:
            from azure.core.credentials import AzureNamedKeyCredential

            key = AzureNamedKeyCredential(access.account_name or "", access.account_key.reveal())
            return BatchClient(endpoint=access.account_url, credential=key, retry_connect=1)
        return BatchClient(endpoint=access.account_url, credential=_user_credential(), retry_connect=1)


def _user_credential():
    """Whoever runs the CLI (az login, environment, workload or managed identity); never a browser prompt."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def _conn_parts(connection_string: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in connection_string.split(";"):
        if "=" in item:
            key, value = item.split("=", 1)
            out[key.strip().lower()] = value.strip()
    return out


def resolve(*, settings_file: str | None = None, account: str | None = None,
            environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Target:
    """The target of this invocation (see the module's docstring for the order). Raises CliError
    (UNREACHABLE) naming what to set when nothing usable is configured."""
    env = dict(os.environ if environ is None else environ)
    here = Path.cwd() if cwd is None else cwd
    settings_file = settings_file or env.get("BATCHDROP_SETTINGS") or None
    if settings_file:
        path = Path(settings_file)
        flag = "--settings" if settings_file != env.get("BATCHDROP_SETTINGS") else "BATCHDROP_SETTINGS"
        return _from_values(_read_settings_file(path), f"{path} ({flag})")
    account = account or env.get("BATCHDROP_STORAGE_ACCOUNT") or None
    if account:
        return _from_values({**_layout(env), **_account_values(account)}, f"storage account {account}")
    for name in ("BATCHDROP_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_CONNECTION_STRING"):
        if env.get(name):
            return _from_values({**_layout(env), "AzureWebJobsStorage": env[name]}, f"connection string in {name}")
    azd = _azd_values(here, env)
    if azd is not None:
        values, where = azd
        return _from_values(values, where)
    for path in (here / SETTINGS_FILE, PROJECT_ROOT / SETTINGS_FILE, PROJECT_ROOT / SAMPLE_FILE):
        if path.is_file():
            return _from_values(_read_settings_file(path), f"{path} (the local stack)")
    raise CliError("no storage is configured for batchdrop", UNREACHABLE, hint=HOW_TO_CONFIGURE)


def offline_settings(**kwargs: Any) -> Settings:
    """Settings for work that needs no service (validate): the configured ones when there are any,
    else the defaults."""
    try:
        return resolve(**kwargs).settings
    except CliError:
        return _settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "defaults")


def _layout(env: Mapping[str, str]) -> dict[str, str]:
    return {k: env[k] for k in (*LAYOUT_SETTINGS, *BATCH_SETTINGS) if env.get(k)}


def _account_values(account: str) -> dict[str, str]:
    """Identity-based storage for an account name or a blob endpoint URL."""
    if "://" in account:
        blob = account.rstrip("/")
        return {"AzureWebJobsStorage__blobServiceUri": blob,
                "AzureWebJobsStorage__queueServiceUri": blob.replace(".blob.", ".queue.", 1)}
    return {"AzureWebJobsStorage__accountName": account}


def _read_settings_file(path: Path) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise CliError(f"settings file {path} does not exist", UNREACHABLE, hint=HOW_TO_CONFIGURE) from None
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read settings file {path}: {e}", UNREACHABLE) from None
    values = doc.get("Values") if isinstance(doc, dict) else None
    if not isinstance(values, dict):
        raise CliError(f"settings file {path} has no \"Values\" object (the local.settings.json format)", UNREACHABLE)
    return {str(k): str(v) for k, v in values.items() if v is not None}


def _azd_values(start: Path, env: Mapping[str, str]) -> tuple[dict[str, str], str] | None:
    """The deployment's outputs from the azd environment of the project `start` is in, if any names
    the storage account."""
    for folder in (start, *start.parents):
        if (folder / "azure.yaml").is_file():
            break
    else:
        return None
    name = env.get("AZURE_ENV_NAME")
    if not name:
        try:
            name = json.loads((folder / ".azure" / "config.json").read_text()).get("defaultEnvironment")
        except (OSError, ValueError, AttributeError):
            return None
    dotenv = folder / ".azure" / str(name) / ".env"
    if not name or not dotenv.is_file():
        return None
    outputs = _read_dotenv(dotenv)
    account = (outputs.get("BATCHDROP_STORAGE_ACCOUNT") or outputs.get("AZURE_STORAGE_BLOB_ENDPOINT")
               or outputs.get("AZURE_STORAGE_ACCOUNT_NAME"))
    if not account:
        return None
    values = {**_layout(outputs), **_layout(env), **_account_values(account)}
    endpoint = outputs.get("AZURE_BATCH_ACCOUNT_URL") or outputs.get("AZURE_BATCH_ACCOUNT_ENDPOINT")
    if endpoint and "BATCH_ACCOUNT_URL" not in values:
        values["BATCH_ACCOUNT_URL"] = endpoint if "://" in endpoint else f"https://{endpoint}"
    return values, f"azd environment {name!r} ({dotenv})"


def _read_dotenv(path: Path) -> dict[str, str]:
    """KEY=value lines, as azd writes them (values may be double-quoted)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip().removeprefix("export ").strip()] = value
    return out


def _settings(values: Mapping[str, str], source: str) -> Settings:
    values = dict(values)
    if not values.get("BATCH_ACCOUNT_URL"):
        values["BATCH_ACCOUNT_URL"] = _NO_BATCH
    try:
        return Settings.from_mapping(values)
    except ConfigurationError as e:
        raise CliError(f"settings from {source}: {e}", UNREACHABLE) from None


def _from_values(values: Mapping[str, str], source: str) -> Target:
    settings = _settings(values, source)
    return Target(settings, source, batch_configured=bool(values.get("BATCH_ACCOUNT_URL")))

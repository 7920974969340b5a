"""One immutable settings object, read once from named app settings.

Every setting the app reads is listed here (and in local.settings.sample.json). Secrets are
held in `Secret` wrappers so that a settings object can be logged or printed without leaking them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import ConfigurationError
from shared.jobfile import valid_container_name

STORAGE_CONNECTION = "AzureWebJobsStorage"  # the Functions connection name the triggers use


class Secret:
    """A string that never shows itself in repr/str (so never in logs or tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class StorageAccess:
    """Either a connection string (Azurite, account keys) or identity-based service URIs."""

    connection_string: Secret | None = None
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    managed_identity_client_id: str | None = None


@dataclass(frozen=True)
class BatchAccess:
    account_url: str
    account_name: str | None = None
    account_key: Secret | None = None  # None: DefaultAzureCredential (managed identity)


@dataclass(frozen=True)
class PoolDefaults:
    vm_size: str = "standard_d2s_v3"
    max_nodes: int = 10
    slots_per_node: int = 1
    image_publisher: str = "microsoft-dsvm"
    image_offer: str = "ubuntu-hpc"
    image_sku: str = "2204"
    node_agent_sku_id: str = "batch.node.ubuntu 22.04"


@dataclass(frozen=True)
class Registry:
    server: str
    username: str
    password_setting: str  # name of the setting or Key Vault secret holding the password


@dataclass(frozen=True)
class Settings:
    storage: StorageAccess
    batch: BatchAccess
    intake_container: str = "intake"
    data_container: str = "data"
    results_container: str = "results"
    control_container: str = "batchdrop-runs"
    finalize_queue: str = "batchdrop-finalize"
    work_prefix: str = "bd"
    max_job_file_bytes: int = 1_048_576
    upload_concurrency: int = 16
    submit_concurrency: int = 4
    pool: PoolDefaults = field(default_factory=PoolDefaults)
    registry: Registry | None = None
    key_vault_url: str | None = None
    eventgrid_endpoint: str | None = None
    eventgrid_key: Secret | None = None
    orphan_max_age_hours: float = 48.0
    # Containers job files may read besides data_container; never the pipeline's own (see
    # jobfile.ReadPolicy, which refuses those whatever is listed here).
    input_containers: tuple[str, ...] = ()
    max_tasks_per_run: int = 100_000

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build from app settings (os.environ in the Functions host). Raises ConfigurationError."""

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else default

        def integer(name: str, default: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigurationError(f"setting {name} must be an integer, got {raw!r}") from None
            if value < 1:
                raise ConfigurationError(f"setting {name} must be at least 1, got {value}")
            return value

        conn = get(STORAGE_CONNECTION)
        blob_uri = get(f"{STORAGE_CONNECTION}__blobServiceUri")
        account = get(f"{STORAGE_CONNECTION}__accountName")
        if blob_uri is None and account:
            blob_uri = f"https://{account}.blob.core.windows.net"
        queue_uri = get(f"{STORAGE_CONNECTION}__queueServiceUri")
        if queue_uri is None and account:
            queue_uri = f"https://{account}.queue.core.windows.net"
        if conn is None and blob_uri is None:
            raise ConfigurationError(
                f"storage is not configured: set {STORAGE_CONNECTION} (a connection string) or "
                f"{STORAGE_CONNECTION}__blobServiceUri and {STORAGE_CONNECTION}__queueServiceUri (managed identity)"
            )
        if conn is None and queue_uri is None:
            raise ConfigurationError(f"set {STORAGE_CONNECTION}__queueServiceUri for identity-based storage")
        if conn == "UseDevelopmentStorage=true":
            conn = (
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
                "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
            )
        storage = StorageAccess(
            connection_string=Secret(conn) if conn else None,
            blob_service_uri=blob_uri,
            queue_service_uri=queue_uri,
            managed_identity_client_id=get(f"{STORAGE_CONNECTION}__clientId"),
        )

        batch_url = get("BATCH_ACCOUNT_URL")
        if batch_url is None:
            raise ConfigurationError("setting BATCH_ACCOUNT_URL is required (e.g. https://<account>.<region>.batch.azure.com)")
        key = get("BATCH_ACCOUNT_KEY")
        name = get("BATCH_ACCOUNT_NAME")
        if key and not name:
            raise ConfigurationError("BATCH_ACCOUNT_KEY is set but BATCH_ACCOUNT_NAME is not; shared-key auth needs both")
        batch = BatchAccess(account_url=batch_url.rstrip("/"), account_name=name, account_key=Secret(key) if key else None)

        defaults = PoolDefaults()
        pool = PoolDefaults(
            vm_size=get("POOL_VM_SIZE", defaults.vm_size),
            max_nodes=integer("POOL_MAX_NODES", defaults.max_nodes),
            slots_per_node=integer("POOL_SLOTS_PER_NODE", defaults.slots_per_node),
            image_publisher=get("POOL_IMAGE_PUBLISHER", defaults.image_publisher),
            image_offer=get("POOL_IMAGE_OFFER", defaults.image_offer),
            image_sku=get("POOL_IMAGE_SKU", defaults.image_sku),
            node_agent_sku_id=get("POOL_NODE_AGENT_SKU", defaults.node_agent_sku_id),
        )
        registry = None
        if get("REGISTRY_SERVER"):
            registry = Registry(
                server=get("REGISTRY_SERVER"),
                username=get("REGISTRY_USERNAME", ""),
                password_setting=get("REGISTRY_PASSWORD_SECRET", "registry-password"),
            )
        eg_key = get("EVENTGRID_TOPIC_KEY")
        return cls(
            storage=storage,
            batch=batch,
            intake_container=get("INTAKE_CONTAINER", "intake"),
            data_container=get("DATA_CONTAINER", "data"),
            results_container=get("RESULTS_CONTAINER", "results"),
            control_container=get("CONTROL_CONTAINER", "batchdrop-runs"),
            finalize_queue=get("FINALIZE_QUEUE", "batchdrop-finalize"),
            work_prefix=get("WORK_CONTAINER_PREFIX", "bd"),
            max_job_file_bytes=integer("MAX_JOB_FILE_BYTES", 1_048_576),
            upload_concurrency=integer("UPLOAD_CONCURRENCY", 16),
            submit_concurrency=integer("SUBMIT_CONCURRENCY", 4),
            pool=pool,
            registry=registry,
            key_vault_url=get("KEY_VAULT_URL"),
            eventgrid_endpoint=get("EVENTGRID_TOPIC_ENDPOINT"),
            eventgrid_key=Secret(eg_key) if eg_key else None,
            orphan_max_age_hours=float(get("ORPHAN_MAX_AGE_HOURS", "48")),
            input_containers=_container_list("INPUT_CONTAINERS", get("INPUT_CONTAINERS") or ""),
            max_tasks_per_run=integer("MAX_TASKS_PER_RUN", 100_000),
        )


def _container_list(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of container names: whitespace trimmed, empty entries dropped,
    repeats kept once, each a valid container name (else ConfigurationError)."""
    containers: list[str] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry or entry in containers:
            continue
        if not valid_container_name(entry):
            raise ConfigurationError(
                f"setting {name} lists {entry!r}, which is not a valid container name: use 3 to 63 "
                f"lowercase letters, digits and single hyphens, comma-separated (e.g. \"shared-refs,inputs\")")
        containers.append(entry)
    return tuple(containers)

"""One immutable settings object, read once from named app settings.

Every setting the app reads is listed here (and in local.settings.sample.json). Each has one default:
the field's default below (a setting that is absent or empty leaves it). Every numeric setting has a
range (`LIMITS`); a value outside it, or not a number, stops start-up with a ConfigurationError
naming the setting. Secrets are held in `Secret` wrappers so that a settings object can be logged or
printed without leaking them.

The storage connection (``AzureWebJobsStorage`` and its identity-based forms) is resolved by
`conventions.connection`, the resolver the local functions host uses too, so the triggers and the
app's own clients never read it differently. The app has one identity (`Identity`) for Storage,
Batch, Event Grid and Key Vault; `shared.identity.credential` turns it into a credential.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from conventions import connection
from shared import gpus
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


@dataclass(frozen=True)
class Identity:
    """Who the app is to Microsoft Entra ID: one identity for Storage, Batch, Event Grid and Key Vault.

    `client_id` names a user-assigned managed identity (or, with `tenant_id` and `client_secret`, a
    service principal); `managed` says a managed identity is wanted even without one (the system-
    assigned identity). Neither: the default credential chain."""

    client_id: str | None = None
    managed: bool = False
    tenant_id: str | None = None
    client_secret: Secret | None = None


@dataclass(frozen=True)
class BatchAccess:
    account_url: str
    account_name: str | None = None
    account_key: Secret | None = None  # None: the app's identity (shared.identity.credential)


@dataclass(frozen=True)
class PoolDefaults:
    vm_size: str = "standard_d2s_v3"
    max_nodes: int = 10
    slots_per_node: int = 1
    image_publisher: str = "microsoft-dsvm"
    image_offer: str = "ubuntu-hpc"
    image_sku: str = "2204"
    node_agent_sku_id: str = "batch.node.ubuntu 22.04"
    # the image of GPU (N-series) pools: NVIDIA drivers and container toolkit installed (docs/jobfile.md)
    gpu_image_publisher: str = "microsoft-dsvm"
    gpu_image_offer: str = "ubuntu-hpc"
    gpu_image_sku: str = "2204"
    gpu_node_agent_sku_id: str = "batch.node.ubuntu 22.04"
    # spot pools with fallback (shared.batch.autoscale_formula): how long spot nodes may take to come before
    # dedicated nodes stand in, and how many spot nodes preempted at once make the pool give up on them
    spot_wait_minutes: float = 15.0
    spot_preemption_threshold: int = 1


@dataclass(frozen=True)
class Registry:
    server: str
    username: str = ""
    password_setting: str = "registry-password"  # name of the setting or Key Vault secret holding the password


@dataclass(frozen=True)
class Settings:
    storage: StorageAccess
    batch: BatchAccess
    identity: Identity = field(default_factory=Identity)
    intake_container: str = "intake"
    data_container: str = "data"
    results_container: str = "results"
    control_container: str = "batchdrop-runs"
    finalize_queue: str = "batchdrop-finalize"
    intake_queue: str = "batchdrop-intake"  # intake requests the monitor re-drives (shared.redrive)
    submit_queue: str = "batchdrop-submit"  # continuations of a submission in chunks (shared.submit)
    work_prefix: str = "bd"
    max_job_file_bytes: int = 1_048_576
    upload_concurrency: int = 16
    submit_concurrency: int = 4
    # submission in chunks (shared.submit): an intake hands the rest of a run to a continuation once it has
    # worked this long; a chunk holds at most this many tasks
    intake_budget_seconds: float = 240.0
    submit_chunk_tasks: int = 1000
    # merging in parts (shared.merge_parts): likewise for finalize, a part being this many tasks' outputs
    finalize_budget_seconds: float = 240.0
    finalize_part_tasks: int = 2000
    # a monitor tick goes on watching the runs in their last wave (shared.watch.in_tail) this long, so finalize
    # is asked for as they end (shared.watch); 0: at the next tick
    monitor_tail_seconds: float = 0.0
    pool: PoolDefaults = field(default_factory=PoolDefaults)
    registry: Registry | None = None
    key_vault_url: str | None = None
    eventgrid_endpoint: str | None = None
    eventgrid_key: Secret | None = None
    orphan_max_age_hours: float = 48.0
    # a run that ended with tasks that did not succeed keeps their outputs this long, for a rerun (shared.rerun);
    # 0: it keeps nothing and cannot be rerun
    keep_task_outputs_hours: float = 72.0
    # Containers job files may read besides data_container; never the pipeline's own (see
    # jobfile.ReadPolicy, which refuses those whatever is listed here).
    input_containers: tuple[str, ...] = ()
    # what one finalize invocation holds in memory for report.json (benchmarks/report_scale.py: 3.2 KiB a task)
    max_tasks_per_run: int = 250_000
    # how often one task is run again after an infrastructure failure or a lost output (shared.retries)
    infra_retries: int = 3
    price_table_blob: str | None = None  # "container/path" of a price table replacing shared/prices.json
    # admission (shared.admission): at most this many runs admitted at once (None: no cap), and how long a
    # run may wait in the line before it fails
    max_active_runs: int | None = None
    max_queued_hours: float = 24.0

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build from app settings (os.environ in the Functions host). Raises ConfigurationError."""
        read = _Reader(env)
        storage, identity = _storage_and_identity(env, read)

        batch_url = read.get("BATCH_ACCOUNT_URL")
        if batch_url is None:
            raise ConfigurationError("setting BATCH_ACCOUNT_URL is required (e.g. https://<account>.<region>.batch.azure.com)")
        key = read.get("BATCH_ACCOUNT_KEY")
        name = read.get("BATCH_ACCOUNT_NAME")
        if key and not name:
            raise ConfigurationError("BATCH_ACCOUNT_KEY is set but BATCH_ACCOUNT_NAME is not; "
                                     "shared-key auth needs both")
        batch = BatchAccess(account_url=batch_url.rstrip("/"), account_name=name,
                            account_key=Secret(key) if key else None)

        pool = PoolDefaults(**_present(
            vm_size=read.get("POOL_VM_SIZE"),
            max_nodes=read.get("POOL_MAX_NODES", int),
            slots_per_node=read.get("POOL_SLOTS_PER_NODE", int),
            image_publisher=read.get("POOL_IMAGE_PUBLISHER"),
            image_offer=read.get("POOL_IMAGE_OFFER"),
            image_sku=read.get("POOL_IMAGE_SKU"),
            node_agent_sku_id=read.get("POOL_NODE_AGENT_SKU"),
            gpu_image_publisher=read.get("POOL_GPU_IMAGE_PUBLISHER"),
            gpu_image_offer=read.get("POOL_GPU_IMAGE_OFFER"),
            gpu_image_sku=read.get("POOL_GPU_IMAGE_SKU"),
            gpu_node_agent_sku_id=read.get("POOL_GPU_NODE_AGENT_SKU"),
            spot_wait_minutes=read.get("SPOT_WAIT_MINUTES", float),
            spot_preemption_threshold=read.get("SPOT_PREEMPTION_THRESHOLD", int),
        ))
        try:
            gpus.gpu_count(pool.vm_size)
        except gpus.UnknownGpuSize as e:
            raise ConfigurationError(f"setting POOL_VM_SIZE: {e}") from None
        server = read.get("REGISTRY_SERVER")
        registry = None if server is None else Registry(server, **_present(
            username=read.get("REGISTRY_USERNAME"), password_setting=read.get("REGISTRY_PASSWORD_SECRET")))
        eg_key = read.get("EVENTGRID_TOPIC_KEY")
        containers = read.get("INPUT_CONTAINERS")
        return cls(storage=storage, batch=batch, identity=identity, pool=pool, registry=registry, **_present(
            intake_container=read.get("INTAKE_CONTAINER"),
            data_container=read.get("DATA_CONTAINER"),
            results_container=read.get("RESULTS_CONTAINER"),
            control_container=read.get("CONTROL_CONTAINER"),
            finalize_queue=read.get("FINALIZE_QUEUE"),
            intake_queue=read.get("INTAKE_QUEUE"),
            submit_queue=read.get("SUBMIT_QUEUE"),
            work_prefix=read.get("WORK_CONTAINER_PREFIX"),
            max_job_file_bytes=read.get("MAX_JOB_FILE_BYTES", int),
            upload_concurrency=read.get("UPLOAD_CONCURRENCY", int),
            submit_concurrency=read.get("SUBMIT_CONCURRENCY", int),
            intake_budget_seconds=read.get("INTAKE_BUDGET_SECONDS", float),
            submit_chunk_tasks=read.get("SUBMIT_CHUNK_TASKS", int),
            finalize_budget_seconds=read.get("FINALIZE_BUDGET_SECONDS", float),
            finalize_part_tasks=read.get("FINALIZE_PART_TASKS", int),
            monitor_tail_seconds=read.get("MONITOR_TAIL_SECONDS", float),
            key_vault_url=read.get("KEY_VAULT_URL"),
            eventgrid_endpoint=read.get("EVENTGRID_TOPIC_ENDPOINT"),
            eventgrid_key=Secret(eg_key) if eg_key else None,
            orphan_max_age_hours=read.get("ORPHAN_MAX_AGE_HOURS", float),
            keep_task_outputs_hours=read.get("KEEP_TASK_OUTPUTS_HOURS", float),
            input_containers=None if containers is None else _container_list("INPUT_CONTAINERS", containers),
            max_tasks_per_run=read.get("MAX_TASKS_PER_RUN", int),
            infra_retries=read.get("INFRA_RETRIES", int),
            price_table_blob=read.get("PRICE_TABLE_BLOB"),
            max_active_runs=read.get("MAX_ACTIVE_RUNS", int),
            max_queued_hours=read.get("MAX_QUEUED_HOURS", float),
        ))


@dataclass(frozen=True)
class Limit:
    """The range of a numeric setting (inclusive), what the number counts, and why the range is what it is."""

    field: str  # the Settings field it sets ("pool.max_nodes" for a PoolDefaults field)
    minimum: int | float
    maximum: int | float
    unit: str
    why: str = ""


LIMITS: dict[str, Limit] = {
    "MAX_JOB_FILE_BYTES": Limit("max_job_file_bytes", 1024, 64 * 1024 * 1024, "bytes",
                                "a job file is read into memory whole; put large inputs in a blob"),
    "MAX_TASKS_PER_RUN": Limit("max_tasks_per_run", 1, 1_000_000, "tasks",
                               "task ids and shard names have six digits so that name order is task order"),
    "INFRA_RETRIES": Limit("infra_retries", 0, 10, "tries per task",
                           "each one waits a backoff of up to two minutes; more only hides a real outage"),
    "UPLOAD_CONCURRENCY": Limit("upload_concurrency", 1, 128, "parallel shard uploads"),
    "SUBMIT_CONCURRENCY": Limit("submit_concurrency", 1, 64, "parallel add-task calls"),
    "INTAKE_BUDGET_SECONDS": Limit("intake_budget_seconds", 0, 540, "seconds",
                                   "an invocation must end well within the Consumption plan's 10 minutes; "
                                   "0 submits one chunk per invocation"),
    "FINALIZE_BUDGET_SECONDS": Limit("finalize_budget_seconds", 0, 540, "seconds",
                                     "a finalize hands the rest of a merge to the next invocation after this; "
                                     "0 merges one part per invocation"),
    "MONITOR_TAIL_SECONDS": Limit("monitor_tail_seconds", 0, 15, "seconds",
                                  "a tick, tail included, stays within its 20 s budget, below the schedule's interval"),
    "FINALIZE_PART_TASKS": Limit("finalize_part_tasks", 1, 50_000, "tasks",
                                 "a part's merged bytes are staged as blocks of one blob"),
    "SUBMIT_CHUNK_TASKS": Limit("submit_chunk_tasks", 1, 10_000, "tasks",
                                "status.json's submitted count moves once per chunk"),
    "POOL_MAX_NODES": Limit("pool.max_nodes", 1, 10_000, "nodes"),
    "POOL_SLOTS_PER_NODE": Limit("pool.slots_per_node", 1, 256, "task slots per node",
                                 "Azure Batch allows at most 256"),
    "MAX_ACTIVE_RUNS": Limit("max_active_runs", 1, 100_000, "runs",
                             "runs beyond it wait in the line (state queued) until one ends"),
    "MAX_QUEUED_HOURS": Limit("max_queued_hours", 0.1, 24 * 30, "hours",
                              "a run that waited longer in the line fails"),
    "SPOT_WAIT_MINUTES": Limit("pool.spot_wait_minutes", 0.01, 24 * 60, "minutes",
                               "a spot pool with fallback adds dedicated nodes when spot nodes take longer"),
    "SPOT_PREEMPTION_THRESHOLD": Limit("pool.spot_preemption_threshold", 1, 10_000, "nodes",
                                       "this many spot nodes preempted at once make the pool fall back at once"),
    # the sweep must never take the work of an intake still within its re-drives (shared.watch: about an hour
    # at most) for an orphan: at least 2 hours
    "ORPHAN_MAX_AGE_HOURS": Limit("orphan_max_age_hours", 2, 24 * 30, "hours",
                                  "younger leftovers may belong to an intake still within its retries"),
    "KEEP_TASK_OUTPUTS_HOURS": Limit("keep_task_outputs_hours", 0, 24 * 30, "hours",
                                     "a run's task outputs are kept this long after it ended, for a rerun"),
}


class _Reader:
    """Named app settings. An empty value is the same as an absent one: the field's default applies."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, kind: type[int]) -> int | None: ...
    @overload
    def get(self, name: str, kind: type[float]) -> float | None: ...

    def get(self, name: str, kind: type[int | float] | None = None) -> str | int | float | None:
        """The setting's text, or (with `kind`) its number, checked against LIMITS[name]."""
        raw = self._env.get(name)
        if raw is None or raw == "":
            return None
        if kind is None:
            return raw
        limit = LIMITS[name]  # every numeric setting has a range
        noun = "a whole number" if kind is int else "a number"
        expected = f"{noun} of {limit.unit} from {limit.minimum:,} to {limit.maximum:,}"
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ConfigurationError(f"setting {name} must be {expected}, got {raw!r}") from None
        if not math.isfinite(value) or not limit.minimum <= value <= limit.maximum:
            why = f" ({limit.why})" if limit.why else ""
            raise ConfigurationError(f"setting {name} must be {expected}{why}, got {raw!r}")
        return value


def _present(**values: Any) -> dict[str, Any]:
    """The values that were set; the others are left to the dataclass's defaults (their one home)."""
    return {k: v for k, v in values.items() if v is not None}


def _storage_and_identity(env: Mapping[str, str], read: _Reader) -> tuple[StorageAccess, Identity]:
    """The storage connection as the Functions host resolves it, and the app's one identity.

    The identity is the identity-based connection's (its ``__credential``, ``__clientId``, and
    ``__tenantId`` + ``__clientSecret``), so the app reaches storage as the triggers do; with a
    connection string, MANAGED_IDENTITY_CLIENT_ID names it (else the default chain). Settings that
    would make the triggers and the app use different identities are refused."""
    try:
        conn = connection.resolve(env, STORAGE_CONNECTION)
    except connection.ConnectionNotConfigured as e:
        raise ConfigurationError(f"storage is not configured: {e}") from None
    named = read.get("MANAGED_IDENTITY_CLIENT_ID")
    if conn.kind == "connection_string":
        if "clientid" in conn.ignored_children:
            raise ConfigurationError(
                f"{conn.setting} is a connection string, so the Functions host ignores {conn.child('clientId')}: "
                f"remove it, and set MANAGED_IDENTITY_CLIENT_ID to the user-assigned identity Batch, Event Grid "
                f"and Key Vault should use")
        return StorageAccess(connection_string=Secret(conn.connection_string or "")), Identity(client_id=named)
    for uri, child in ((conn.blob_service_uri, "blobServiceUri"), (conn.queue_service_uri, "queueServiceUri")):
        if uri is None:
            raise ConfigurationError(
                f"set {conn.child(child)} (or {conn.child('accountName')}) for identity-based storage")
    cred = conn.credential or connection.Credential(connection.DEFAULT_CHAIN)
    if named is not None and named != cred.client_id:
        raise ConfigurationError(
            f"MANAGED_IDENTITY_CLIENT_ID and {conn.child('clientId')} must name the same identity (the app uses one "
            f"identity for Storage, Batch, Event Grid and Key Vault, and the Functions host reaches storage as "
            f"{conn.child('clientId')} says): set {conn.child('clientId')} to the same client id, or leave "
            f"MANAGED_IDENTITY_CLIENT_ID unset")
    secret = cred.kind == connection.CLIENT_SECRET
    identity = Identity(client_id=cred.client_id, managed=cred.kind == connection.MANAGED_IDENTITY,
                        tenant_id=cred.tenant_id if secret else None,
                        client_secret=Secret(cred.client_secret) if secret and cred.client_secret else None)
    return StorageAccess(blob_service_uri=conn.blob_service_uri, queue_service_uri=conn.queue_service_uri), identity


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

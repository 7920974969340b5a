"""The infrastructure and the code agree: app settings, container and queue names, the roles the
code needs, the outputs the hooks and the live test read, azure.yaml, and the package azd deploys.

These tests read the code itself (Settings.from_mapping with a recording mapping, the functions'
bindings as the worker indexes them), so a setting added to the app without the Bicep, or to the
Bicep without the app, fails here.
"""
from __future__ import annotations

import functools
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import fields

import pytest
import yaml

from conventions import connection
from functions import wiring
from shared import telemetry
from shared.settings import PoolDefaults, Settings
from tests.infra import bicep
from tests.infra.bicep import INFRA, ROOT, Opaque

DOCS = ROOT / "docs" / "deploy.md"
README = ROOT / "README.md"
PLACEHOLDER = "placeholder"

# Read by the app, deliberately not set in Azure (each is documented in the README's Configuration table).
NOT_SET_IN_AZURE = {
    "AzureWebJobsStorage": "identity-based storage: AzureWebJobsStorage__accountName/__credential/__clientId",
    "BATCH_ACCOUNT_NAME": "only with a shared key, and the Batch account takes Entra ID tokens only",
    "BATCH_ACCOUNT_KEY": "the Batch account takes Entra ID tokens only",
    "MANAGED_IDENTITY_CLIENT_ID": "AzureWebJobsStorage__clientId names the app's one identity",
    "EVENTGRID_TOPIC_KEY": "the topic has local auth disabled; the app publishes with its identity",
    "PRICE_TABLE_BLOB": "optional: a price table of the user's own; without it the shipped shared/prices.json",
    "MAX_ACTIVE_RUNS": "optional: no cap unless the operator sets one (Batch's own quotas queue runs anyway)",
    "MAX_QUEUED_HOURS": "optional: the documented default (24) applies",
    "SUBMIT_CHUNK_TASKS": "optional: the documented default (1000) applies",
    "FINALIZE_PART_TASKS": "optional: the documented default (2000) applies",
}
# Set in Azure, read by the Functions host and the Python worker rather than by Settings.from_mapping
# (shared/telemetry.py reads the first and the last to know whether the worker configured telemetry).
HOST_SETTINGS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Application Insights (the Functions host and the worker's distro)",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra ID auth for telemetry (the host; the worker's exporter)",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "the Python worker configures azure-monitor-opentelemetry",
}
STORAGE_CHILDREN = {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId"}
# Settings a parallel change adds to shared/settings.py: setting -> Settings field. Until the field is
# there, the assertions about that setting are skipped with the reason (pending_reason), not failed.
PENDING_SETTINGS = {"INFRA_RETRIES": "infra_retries", "INTAKE_QUEUE": "intake_queue"}


class Recording(Mapping):
    """App settings that remember which names were asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def get(self, name, default=None):
        self.asked.add(name)
        return self._values.get(name, default)

    def __contains__(self, name) -> bool:
        self.asked.add(name)
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def main() -> bicep.Template:
    return bicep.Template.load(bicep.MAIN)


def app_settings() -> dict[str, object]:
    """The function app's settings as main.bicep deploys them with its parameter defaults."""
    functionapp = main().module_template("functionApp")
    resource = next(r for r in functionapp.resources() if r.type == "Microsoft.Web/sites/config")
    assert functionapp.evaluate(resource.body["name"]) == "appsettings"
    return functionapp.evaluate(resource.body["properties"])


def concrete(settings: Mapping[str, object]) -> dict[str, str]:
    """Settings with a placeholder for each value only Azure knows (resource names, URLs, ids)."""
    return {k: PLACEHOLDER if isinstance(v, Opaque) else str(v) for k, v in settings.items()}


@functools.lru_cache(maxsize=1)
def indexed_functions() -> dict[str, dict]:
    """The function app as the worker indexes it: name -> function.json (a fresh import, as
    tests/contract does: indexing the same app object twice is refused)."""
    for name in [m for m in sys.modules if m == "function_app" or m.startswith("functions")]:
        del sys.modules[name]
    app = importlib.import_module("function_app").app
    return {f.get_function_name(): json.loads(f.get_function_json()) for f in app.get_functions()}


def binding_settings() -> set[str]:
    """%NAME% settings of the functions' bindings."""
    return set(re.findall(r"%(\w+)%", json.dumps(indexed_functions())))


def settings_the_app_reads() -> set[str]:
    recording = Recording(concrete(app_settings()))
    Settings.from_mapping(recording)
    wiring.intake_source(recording)
    return recording.asked | binding_settings()


def missing_fields() -> dict[str, str]:
    """PENDING_SETTINGS whose Settings field does not exist yet: setting -> field."""
    have = {f.name for f in fields(Settings)}
    return {name: field for name, field in PENDING_SETTINGS.items() if field not in have}


def pending_reason(names: Iterator[str] | set[str]) -> str:
    missing = missing_fields()
    return "; ".join(f"{name}: shared/settings.py has no Settings.{missing[name]} yet (the parallel change adds it)"
                     for name in sorted(names) if name in missing)


def documented_settings() -> str:
    text = README.read_text()
    return text[text.index("## Configuration"):text.index("## The local stack")]


# ----------------------------------------------------------------------------- app settings


def test_every_setting_the_app_reads_is_set_by_the_bicep_or_deliberately_left_out():
    bicep_settings = set(app_settings())
    reads = settings_the_app_reads()
    missing = sorted(reads - bicep_settings - set(NOT_SET_IN_AZURE))
    assert not missing, f"the app reads settings infra/modules/functionapp.bicep does not set: {missing}"
    both = sorted(bicep_settings & set(NOT_SET_IN_AZURE))
    assert not both, f"set in Azure although NOT_SET_IN_AZURE says why not: {both}"


def test_settings_left_out_are_documented_with_their_defaults():
    table = documented_settings()
    for name in NOT_SET_IN_AZURE:
        assert f"`{name}`" in table, f"{name} is not in the README's Configuration table"


def test_no_setting_in_the_bicep_is_unknown_to_the_app():
    known = settings_the_app_reads() | set(HOST_SETTINGS) | STORAGE_CHILDREN | set(missing_fields())
    unknown = sorted(set(app_settings()) - known)
    assert not unknown, f"infra/modules/functionapp.bicep sets settings nothing reads: {unknown}"


@pytest.mark.parametrize("name", sorted(PENDING_SETTINGS))
def test_the_parallel_changes_settings_are_set_and_read_with_their_defaults(name):
    """INFRA_RETRIES (Settings.infra_retries, default 3) and INTAKE_QUEUE (Settings.intake_queue,
    default batchdrop-intake): set by the Bicep, read by the app, and the Bicep's value is the default."""
    values = concrete(app_settings())
    assert name in values, f"infra/modules/functionapp.bicep does not set {name}"
    if name in missing_fields():
        pytest.skip(pending_reason({name}))
    assert name in settings_the_app_reads(), f"Settings.from_mapping does not read {name}"
    field = PENDING_SETTINGS[name]
    default = {f.name: f.default for f in fields(Settings)}[field]
    assert getattr(Settings.from_mapping(values), field) == default == {"INFRA_RETRIES": 3,
                                                                        "INTAKE_QUEUE": "batchdrop-intake"}[name]


def test_the_storage_connection_is_identity_based_with_the_apps_identity():
    """The three AzureWebJobsStorage__ children are read as the Functions host reads them."""
    values = concrete(app_settings())
    values["AzureWebJobsStorage__accountName"] = "stexample"
    values["AzureWebJobsStorage__clientId"] = "11111111-2222-3333-4444-555555555555"
    conn = connection.resolve(values, "AzureWebJobsStorage")
    assert conn.kind == "identity"
    assert conn.blob_service_uri == "https://stexample.blob.core.windows.net"
    assert conn.queue_service_uri == "https://stexample.queue.core.windows.net"
    assert conn.credential.kind == connection.MANAGED_IDENTITY
    assert conn.credential.client_id == "11111111-2222-3333-4444-555555555555"
    settings = Settings.from_mapping(values)
    assert settings.identity.client_id == "11111111-2222-3333-4444-555555555555" and settings.identity.managed
    assert settings.batch.account_key is None, "Batch must be reached with the identity"
    assert settings.eventgrid_key is None and settings.key_vault_url == PLACEHOLDER


def test_bicep_values_are_the_documented_defaults():
    """With main.bicep's parameter defaults, every setting equals the app's own default (so Azure
    behaves as the README's Configuration table says), and the whole set is valid."""
    values = concrete(app_settings())
    settings = Settings.from_mapping(values)
    defaults = {f.name: f.default for f in fields(Settings) if f.default is not f.default_factory}
    for name in ("intake_container", "data_container", "results_container", "control_container", "finalize_queue",
                 "work_prefix", "max_job_file_bytes", "upload_concurrency", "submit_concurrency",
                 "orphan_max_age_hours", "input_containers", "max_tasks_per_run"):
        assert getattr(settings, name) == defaults[name], name
    assert settings.pool == PoolDefaults()
    assert settings.registry is not None and settings.registry.password_setting == "registry-password"
    assert values["INTAKE_SOURCE"] == "EventGrid" and values["MONITOR_SCHEDULE"] == "*/30 * * * * *"
    assert "`*/30 * * * * *` in Azure" in documented_settings()


def test_the_intake_trigger_takes_event_grid_events_in_azure():
    import azure.functions as func

    assert wiring.intake_source({"INTAKE_SOURCE": concrete(app_settings())["INTAKE_SOURCE"]}) == func.BlobSource.EVENT_GRID


# ----------------------------------------------------------------------------- names


def test_container_and_queue_names_agree():
    template = main()
    storage = template.module_template("storage")
    containers, queues = storage.values["containerNames"], storage.values["queueNames"]
    values = concrete(app_settings())
    settings = Settings.from_mapping(values)
    for name in (settings.intake_container, settings.data_container, settings.results_container,
                 settings.control_container):
        assert name in containers, f"container {name} is not created by main.bicep"
    assert queues == [settings.finalize_queue, values["INTAKE_QUEUE"], values["SUBMIT_QUEUE"]]
    assert values["SUBMIT_QUEUE"] == settings.submit_queue
    functionapp = template.module_template("functionApp")
    assert functionapp.values["deploymentContainer"] in containers
    assert storage.values["resultsContainer"] == settings.results_container
    outputs = {k: template.evaluate(v["value"]) for k, v in template.outputs.items()}
    assert (outputs["INTAKE_CONTAINER"], outputs["DATA_CONTAINER"], outputs["RESULTS_CONTAINER"],
            outputs["CONTROL_CONTAINER"], outputs["FINALIZE_QUEUE"], outputs["WORK_CONTAINER_PREFIX"]) == (
        settings.intake_container, settings.data_container, settings.results_container, settings.control_container,
        settings.finalize_queue, settings.work_prefix)
    assert outputs["REGISTRY_PASSWORD_SECRET"] == settings.registry.password_setting
    assert outputs["INTAKE_QUEUE"] == values["INTAKE_QUEUE"] == "batchdrop-intake"


def test_the_intake_queue_is_the_apps_intake_queue():
    if "INTAKE_QUEUE" in missing_fields():
        pytest.skip(pending_reason({"INTAKE_QUEUE"}))
    template = main()
    settings = Settings.from_mapping(concrete(app_settings()))
    outputs = {k: template.evaluate(v["value"]) for k, v in template.outputs.items()}
    assert settings.intake_queue in template.module_template("storage").values["queueNames"]
    assert outputs["INTAKE_QUEUE"] == settings.intake_queue


def test_the_lifecycle_rule_deletes_results_only():
    storage = main().module_template("storage")
    policy = next(r for r in storage.resources() if r.type.endswith("/managementPolicies"))
    rule = storage.evaluate(policy.body)["properties"]["policy"]["rules"]
    assert len(rule) == 1 and rule[0]["definition"]["filters"]["prefixMatch"] == ["results/"]
    assert rule[0]["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"] == 30


def test_the_event_subscription_targets_the_intake_function_and_container():
    template = bicep.Template.load(INFRA / "modules" / "intake-events.bicep",
                                   {"intakeContainer": "intake", "functionAppHostName": "app.example",
                                    "systemTopicName": "topic", "blobsExtensionKey": "KEY"})
    sub = template.evaluate(next(r for r in template.resources() if not r.existing).body)
    blob_functions = [name for name, fn in indexed_functions().items()
                      if any(b["type"] == "blobTrigger" for b in fn["bindings"])]
    assert blob_functions == [template.parameter("functionName")]
    url = sub["properties"]["destination"]["properties"]["endpointUrl"]
    assert url == "https://app.example/runtime/webhooks/blobs?functionName=Host.Functions.intake&code=KEY"
    assert sub["properties"]["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/intake/"
    assert sub["properties"]["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]


# ----------------------------------------------------------------------------- roles

BUILTIN_ROLES = {  # name -> id, as Microsoft's built-in roles reference lists them
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Blob Delegator": "db58b8e5-c6ad-4a2a-8342-4190687cbf4a",
    "Azure Batch Data Contributor": "6aaa78f1-f7de-44ca-8722-c64a23943cae",
    "Azure Batch Account Reader": "11076f67-66f6-4be0-8f6b-f0609fd05cc9",
    "Azure Batch Service Orchestration Role": "a35466a1-cfd6-450a-b35e-683fcdf30363",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
PRINCIPALS = {"appPrincipalId": "function app", "poolPrincipalId": "shared pool", "deployerPrincipalId": "deployer",
              "batchServicePrincipalObjectId": "Azure Batch"}
SCOPES = {"Microsoft.Storage/storageAccounts": "storage account", "Microsoft.Batch/batchAccounts": "Batch account",
          "Microsoft.KeyVault/vaults": "key vault", "Microsoft.EventGrid/topics": "lifecycle topic",
          "Microsoft.ContainerRegistry/registries": "registry", "Microsoft.Insights/components": "Application Insights"}


def bicep_role_assignments() -> set[tuple[str, str, str]]:
    """(role id, scope, principal) of every role assignment in infra/."""
    found = set()
    for template in bicep.all_templates():
        resources = {r.symbol: r for r in template.resources()}
        for r in resources.values():
            if r.type != "Microsoft.Authorization/roleAssignments":
                continue
            role = r.body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
            scope = SCOPES[resources[r.body["scope"]].type] if "scope" in r.body else "subscription"
            found.add((role, scope, PRINCIPALS[r.body["properties"]["principalId"]]))
    return found


def docs_role_table() -> list[dict[str, str]]:
    """Rows of the role table in docs/deploy.md: | role | id | scope | principal | needed by |"""
    rows = []
    for line in DOCS.read_text().splitlines():
        cells = [c.strip().strip("`*") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", cells[1]):
            rows.append({"role": cells[0], "id": cells[1], "scope": cells[2], "principal": cells[3], "why": cells[4]})
    return rows


def test_the_docs_role_table_names_real_roles():
    rows = docs_role_table()
    assert rows, "docs/deploy.md has no role table"
    for row in rows:
        assert BUILTIN_ROLES.get(row["role"]) == row["id"], row
        assert len(row["why"].split()) >= 3, f"{row['role']}: say which code needs it"


def test_every_role_the_docs_name_is_assigned_and_nothing_else():
    documented = {(r["id"], r["scope"], r["principal"]) for r in docs_role_table()}
    assigned = bicep_role_assignments()
    assert documented - assigned == set(), "in docs/deploy.md but not assigned by infra/"
    assert assigned - documented == set(), "assigned by infra/ but not in docs/deploy.md's role table"


def test_the_function_app_has_one_role_per_need_of_the_code():
    app_roles = {BUILTIN_ROLES_BY_ID[r] for r, _, who in bicep_role_assignments() if who == "function app"}
    assert app_roles == {"Storage Blob Data Owner", "Storage Queue Data Contributor", "Storage Blob Delegator",
                         "Azure Batch Data Contributor", "Key Vault Secrets User", "EventGrid Data Sender",
                         "Monitoring Metrics Publisher"}


BUILTIN_ROLES_BY_ID = {v: k for k, v in BUILTIN_ROLES.items()}


def test_the_app_may_use_every_queue_main_bicep_creates():
    """Storage Queue Data Contributor is assigned on the account, so it covers the finalize and the
    intake queue alike (and the host's own queues): a new queue needs no assignment of its own."""
    queue_role = BUILTIN_ROLES["Storage Queue Data Contributor"]
    assert (queue_role, "storage account", "function app") in bicep_role_assignments()
    queues = main().module_template("storage").values["queueNames"]
    assert set(queues) >= {"batchdrop-finalize", "batchdrop-intake", "batchdrop-submit"}


# ----------------------------------------------------------------------------- telemetry


def test_telemetry_is_opentelemetry_from_the_worker_with_the_apps_identity():
    """The three parts the Functions OpenTelemetry docs ask for go together: host.json's telemetryMode,
    PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true (exactly: the distro compares the string), the
    distro in requirements.txt; and both the host and the worker's exporter authenticate as the app's
    identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING, Monitoring Metrics Publisher)."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    settings = app_settings()
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    assert isinstance(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"], Opaque)
    identity = settings["AzureWebJobsStorage__clientId"]
    assert isinstance(identity, Opaque)
    assert str(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]) == f"<ClientId={identity};Authorization=AAD>"
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(re.match(r"azure-monitor-opentelemetry\b(?!-)", line) for line in requirements)
    assert (BUILTIN_ROLES["Monitoring Metrics Publisher"], "Application Insights", "function app") in bicep_role_assignments()


def test_with_the_bicep_settings_the_worker_configures_telemetry_and_the_app_adds_the_run_id():
    """shared/telemetry.py, given the deployed settings, leaves the distro to the worker (a second
    configure_azure_monitor would make an exporter nothing uses) and filters the root's handlers."""
    import logging

    calls = []
    root = logging.getLogger("tests.infra.telemetry-root")
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        mode = telemetry.configure(concrete(app_settings()), setup=lambda **kw: calls.append(kw), root=root)
    finally:
        root.removeHandler(handler)
    assert mode == telemetry.WORKER and calls == []
    assert any(isinstance(f, telemetry.RunIdFilter) for f in handler.filters)


# ----------------------------------------------------------------------------- azd wiring


def azure_yaml() -> dict:
    return yaml.safe_load((ROOT / "azure.yaml").read_text())


def test_azure_yaml_points_at_the_infra_and_the_staged_app():
    doc = azure_yaml()
    assert doc["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    (name, service), = doc["services"].items()
    assert service["host"] == "function" and service["language"] == "python"
    assert (ROOT / service["project"]).resolve() == (INFRA / "app").resolve()
    assert main().module_body("functionApp")["params"]["serviceName"] == name, "azd-service-name tag"
    for event in ("prerestore", "prepackage"):
        for os_name in ("posix", "windows"):
            assert service["hooks"][event][os_name]["run"].split()[-1] == "../hooks/stage_app.py"
    assert (INFRA / "hooks" / "stage_app.py").exists()


def test_azure_yaml_hooks_run_the_hooks_script():
    from infra.hooks import azd_hooks

    hooks = azure_yaml()["hooks"]
    assert set(hooks) == set(azd_hooks.HOOKS)
    for event, spec in hooks.items():
        for os_name in ("posix", "windows"):
            words = spec[os_name]["run"].split()
            assert words[1:] == ["infra/hooks/azd_hooks.py", event] and spec[os_name]["continueOnError"] is False


def test_every_value_the_hooks_and_live_test_read_is_an_output():
    from infra.hooks import azd_hooks
    from tests.infra.live import environment

    outputs = set(main().outputs)
    needed = {name for names in azd_hooks.NEEDS.values() for name in names} | set(environment.REQUIRED)
    assert needed - outputs == set()


def test_main_parameters_cover_every_parameter_without_default():
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    template = main()
    required = template.required_parameters()
    assert required <= set(params)
    assert set(params) <= set(template.parameters)


def test_the_staged_package_holds_the_app_and_nothing_local(tmp_path):
    """What azd deploys: function_app.py with every package it imports, indexable on its own, and
    none of the local tools (emulator, devhost, tests)."""
    from infra.hooks import stage_app

    staged = stage_app.stage(ROOT, tmp_path / "app")
    assert {"function_app.py", "host.json", "requirements.txt", "functions", "shared"} <= set(staged)
    assert not set(staged) & stage_app.LOCAL_ONLY
    (tmp_path / "app" / "app_env").mkdir()  # azd's restore made its virtual environment: kept, not shipped
    assert stage_app.stage(ROOT, tmp_path / "app") == staged  # a second run: the same
    assert (tmp_path / "app" / "app_env").is_dir()
    ignored = (tmp_path / "app" / ".funcignore").read_text().split()
    assert {".venv/", "app_env/", "__pycache__/"} <= set(ignored)
    local = sorted(stage_app.local_modules(ROOT))
    probe = (
        "import json, sys; sys.path.insert(0, '.'); import function_app\n"
        "outside = sorted(n for n, m in sys.modules.items() if n.split('.')[0] in %r\n"
        "                 and not (getattr(m, '__file__', None) or '').startswith(%r))\n"
        "fns = {f.get_function_name(): f.get_trigger().get_binding_name() for f in function_app.app.get_functions()}\n"
        "print(json.dumps({'fns': fns, 'outside': outside}))\n"
    ) % (local, str(tmp_path / "app"))
    env = {"PATH": "/usr/bin:/bin", "INTAKE_SOURCE": "EventGrid", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path / "app", capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    # the functions the repository's app indexes (tests/contract pins what they are), no more, no fewer
    in_repository = {name: next(b["type"] for b in fn["bindings"] if b["type"].endswith("Trigger"))
                     for name, fn in indexed_functions().items()}
    assert {"intake", "monitor", "finalize"} <= set(in_repository)
    assert result["fns"] == in_repository
    assert result["outside"] == [], f"imported from the repository, not the package: {result['outside']}"

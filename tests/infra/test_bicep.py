"""Offline checks of infra/: every file parses, every resource's properties are the ARM schema's,
and every api-version is a current GA one."""
from __future__ import annotations

import copy

import pytest

from tests.infra import armschema, bicep

FILES = bicep.bicep_files()


def test_infra_has_the_expected_files():
    names = {p.relative_to(bicep.INFRA).as_posix() for p in FILES}
    assert {"main.bicep", "modules/intake-events.bicep", "modules/roles.bicep", "modules/functionapp.bicep"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(bicep.INFRA).as_posix())
def test_every_bicep_file_parses(path):
    parsed = bicep.parse(path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path} declares nothing"


def test_main_uses_every_module():
    """A module no template references is never deployed (intake-events.bicep is deployed by the
    postdeploy hook; its use is checked in test_hooks)."""
    used = {(bicep.INFRA / m["detail"]["path"]).resolve() for m in bicep.parse(bicep.MAIN)["modules"].values()}
    modules = {p.resolve() for p in (bicep.INFRA / "modules").glob("*.bicep")}
    assert modules - used == {(bicep.INFRA / "modules" / "intake-events.bicep").resolve()}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(bicep.INFRA).as_posix())
def test_resource_properties_are_the_arm_schemas(path):
    facts = armschema.load_facts()
    template = bicep.Template.load(path)
    problems = [p for r in template.resources() for p in armschema.check(template, r, facts)]
    assert not problems, "\n".join(problems)


def _months(version: str) -> int:
    year, month = version[:7].split("-")
    return int(year) * 12 + int(month)


def test_api_versions_are_current_ga():
    """GA only, and the newest GA version the schemas know or one at most 18 months older than it
    (new enough to have today's property names, old enough to be rolled out in every region)."""
    facts = armschema.load_facts()["resources"]
    stale = []
    for resource in bicep.all_resources():
        assert "preview" not in resource.api_version, f"{resource.label}: preview api-version"
        newest = facts[armschema.key(resource)]["ga_versions"][-1]
        if _months(newest) - _months(resource.api_version) > 18:
            stale.append(f"{resource.label}: newest GA is {newest}")
    assert not stale, "\n".join(stale)


def test_one_api_version_per_resource_type():
    versions: dict[str, set[str]] = {}
    for resource in bicep.all_resources():
        versions.setdefault(resource.type, set()).add(resource.api_version)
    assert {t: v for t, v in versions.items() if len(v) > 1} == {}


def test_the_schema_check_catches_a_wrong_name_and_a_wrong_value():
    """The check is not vacuous: a misspelt property and an impossible enum value are reported."""
    facts = armschema.load_facts()
    template = bicep.Template.load(bicep.INFRA / "modules" / "storage.bicep")
    account = next(r for r in template.resources() if r.symbol == "account")
    assert armschema.check(template, account, facts) == []
    account.body = copy.deepcopy(account.body)
    account.body["properties"]["allowSharedKeyAcces"] = False
    account.body["properties"]["minimumTlsVersion"] = "TLS1_9"
    problems = "\n".join(armschema.check(template, account, facts))
    assert "allowSharedKeyAcces is not a property" in problems
    assert "'TLS1_9' is not one of" in problems

    template = bicep.Template.load(bicep.INFRA / "modules" / "functionapp.bicep")
    app = next(r for r in template.resources() if r.symbol == "app")
    app.body = copy.deepcopy(app.body)
    app.body["properties"]["functionAppConfig"]["runtime"]["Name"] = "python"
    problems = "\n".join(armschema.check(template, app, facts))
    assert "functionAppConfig.runtime.Name is not a property" in problems and "did you mean 'name'" in problems

    # a required property left out
    template = bicep.Template.load(bicep.INFRA / "modules" / "keyvault.bicep")
    vault = next(r for r in template.resources() if r.symbol == "vault")
    vault.body = copy.deepcopy(vault.body)
    del vault.body["properties"]["tenantId"]
    assert "properties lacks required property tenantId" in "\n".join(armschema.check(template, vault, facts))

    # a parameter's @allowed values are checked like literals
    template = bicep.Template.load(bicep.INFRA / "modules" / "batch.bicep")
    account = next(r for r in template.resources() if r.symbol == "account")
    assert armschema.check(template, account, facts) == []
    template.json = copy.deepcopy(template.json)
    allowed = next(d for d in template.parameters["poolAllocationMode"]["decorators"] if d["type"] == "allowed")
    allowed["argument"].append("Spot")
    assert "poolAllocationMode = 'Spot' is not one of" in "\n".join(armschema.check(template, account, facts))


def test_security_settings_that_the_design_depends_on():
    """The identity-only promises of docs/deploy.md, as the Bicep states them."""
    def one(module, symbol):
        template = bicep.Template.load(bicep.INFRA / "modules" / module)
        resource = next(r for r in template.resources() if r.symbol == symbol)
        return template.evaluate(resource.body)

    storage = one("storage.bicep", "account")["properties"]
    assert storage["allowSharedKeyAccess"] is False and storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2" and one("storage.bicep", "account")["kind"] == "StorageV2"
    assert one("batch.bicep", "account")["properties"]["allowedAuthenticationModes"] == ["AAD"]
    assert one("keyvault.bicep", "vault")["properties"]["enableRbacAuthorization"] is True
    assert one("registry.bicep", "registry")["properties"]["adminUserEnabled"] is False
    assert one("registry.bicep", "registry")["sku"] == {"name": "Basic"}
    assert one("monitoring.bicep", "applicationInsights")["properties"]["DisableLocalAuth"] is True
    assert one("eventgrid.bicep", "runsTopic")["properties"]["disableLocalAuth"] is True
    assert one("eventgrid.bicep", "runsTopic")["properties"]["inputSchema"] == "CloudEventSchemaV1_0"
    site = one("functionapp.bicep", "app")
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}
    assert site["properties"]["functionAppConfig"]["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert one("functionapp.bicep", "plan")["sku"] == {"name": "FC1", "tier": "FlexConsumption"}

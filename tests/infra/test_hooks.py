"""The azd hooks (infra/hooks/azd_hooks.py), run as azd runs them, with a stub `az` on PATH
(tests/infra/stub_az.py) that records every call: idempotent on re-runs, clear when azd's
environment values are missing, and no secret on any command line."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.infra import bicep
from tests.infra.bicep import INFRA, ROOT

HOOKS = INFRA / "hooks" / "azd_hooks.py"
PYTHON = os.environ.get("BATCHDROP_HOOK_PYTHON", sys.executable)  # the hooks support Python 3.9+
STUB = Path(__file__).with_name("stub_az.py")

DEPLOY_VALUES = {
    "AZURE_RESOURCE_GROUP": "rg-test", "AZURE_FUNCTION_APP_NAME": "func-abc",
    "AZURE_FUNCTION_APP_URL": "https://func-abc.azurewebsites.net", "AZURE_EVENTGRID_SYSTEM_TOPIC_NAME": "evgst-abc",
    "INTAKE_CONTAINER": "intake",
}
PROVISION_VALUES = {
    "AZURE_RESOURCE_GROUP": "rg-test", "AZURE_CONTAINER_REGISTRY_NAME": "crabc", "REGISTRY_TOKEN_NAME": "batchdrop-pull",
    "AZURE_KEY_VAULT_NAME": "kv-abc", "REGISTRY_PASSWORD_SECRET": "registry-password",
}


class Az:
    """The stub's directory: its state and the calls it saw."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "az"
        self.bin = root / "bin"
        self.dir.mkdir()
        self.bin.mkdir()
        exe = self.bin / "az"
        exe.write_text(f"#!/bin/sh\nexec {sys.executable} {STUB} \"$@\"\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)

    def set(self, **state) -> None:
        current = self.state()
        current.update(state)
        (self.dir / "state.json").write_text(json.dumps(current))

    def state(self) -> dict:
        path = self.dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def calls(self) -> list[dict]:
        path = self.dir / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def commands(self) -> list[str]:
        """Each call's command words (those before its first option)."""
        out = []
        for call in self.calls():
            words = []
            for word in call["argv"]:
                if word.startswith("-"):
                    break
                words.append(word)
            out.append(" ".join(words))
        return out


@pytest.fixture
def az(tmp_path):
    return Az(tmp_path)


def run(hook: str, az: Az, values: dict[str, str], **extra: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{az.bin}:/usr/bin:/bin", "HOME": str(az.dir), "STUB_AZ_DIR": str(az.dir),
           "BATCHDROP_HOOK_KEY_INTERVAL_S": "0", "BATCHDROP_HOOK_RBAC_INTERVAL_S": "0", **values, **extra}
    return subprocess.run([PYTHON, str(HOOKS), hook], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def argv_text(az: Az) -> str:
    return "\n".join(" ".join(c["argv"]) for c in az.calls())


# ----------------------------------------------------------------------------- missing values, missing CLI


@pytest.mark.parametrize("hook, values", [("postdeploy", DEPLOY_VALUES), ("postprovision", PROVISION_VALUES)])
def test_missing_azd_values_fail_clearly_before_any_call(az, hook, values):
    partial = dict(values)
    first, second = list(values)[:2]
    del partial[first]
    partial[second] = "  "
    done = run(hook, az, partial)
    assert done.returncode == 2
    assert f"azd environment values missing: {first}, {second}" in done.stderr
    assert "azd provision" in done.stderr and f"azd hooks run {hook}" in done.stderr
    assert az.calls() == []


def test_without_the_azure_cli_the_hooks_say_so(az):
    (az.bin / "az").unlink()
    for hook, values in (("preprovision", {}), ("postdeploy", DEPLOY_VALUES), ("postprovision", PROVISION_VALUES)):
        done = run(hook, az, values)
        assert done.returncode == 1 and "the Azure CLI (az) is not on PATH" in done.stderr, (hook, done.stderr)


def test_preprovision_needs_the_batch_service_principal_in_user_subscription_mode(az):
    done = run("preprovision", az, {"BATCH_POOL_ALLOCATION_MODE": "UserSubscription"})
    assert done.returncode == 2 and "BATCH_SERVICE_PRINCIPAL_OBJECT_ID" in done.stderr
    assert "az ad sp show --id ddbf3205-c6bd-46ae-8127-60eb93363864" in done.stderr
    assert run("preprovision", az, {"BATCH_POOL_ALLOCATION_MODE": "UserSubscription",
                                    "BATCH_SERVICE_PRINCIPAL_OBJECT_ID": "0000"}).returncode == 0
    assert run("preprovision", az, {}).returncode == 0
    assert run("preprovision", az, {"BATCH_POOL_ALLOCATION_MODE": "Spot"}).returncode == 2


# ----------------------------------------------------------------------------- postdeploy


def test_postdeploy_subscribes_intake_and_a_rerun_changes_nothing(az):
    az.set(keys=["blobkey-1"])
    first = run("postdeploy", az, DEPLOY_VALUES)
    assert first.returncode == 0, first.stderr
    calls_once = az.calls()
    second = run("postdeploy", az, DEPLOY_VALUES)
    assert second.returncode == 0, second.stderr
    calls = az.calls()

    def same(call):  # the private parameters file gets a new temporary name each time
        return {**call, "argv": ["@params" if a.startswith("@") else a for a in call["argv"]]}

    assert [same(c) for c in calls[len(calls_once):]] == [same(c) for c in calls_once], "a re-run makes the same calls"
    assert az.commands() == ["functionapp keys list", "deployment group create"] * 2

    create = calls[1]
    argv = create["argv"]
    assert argv[argv.index("--name") + 1] == "batchdrop-intake-events"  # one fixed deployment: a PUT
    assert Path(argv[argv.index("--template-file") + 1]) == INFRA / "modules" / "intake-events.bicep"
    assert argv[argv.index("--resource-group") + 1] == "rg-test"
    params = json.loads(create["file"])["parameters"]
    assert create["file_mode"] == "0o600"
    assert {k: v["value"] for k, v in params.items()} == {
        "systemTopicName": "evgst-abc", "functionAppHostName": "func-abc.azurewebsites.net",
        "intakeContainer": "intake", "blobsExtensionKey": "blobkey-1"}
    template = bicep.Template.load(INFRA / "modules" / "intake-events.bicep")
    required = template.required_parameters()
    assert set(params) == required, "the hook passes exactly the module's required parameters"
    assert "blobkey-1" not in argv_text(az), "the webhook key is never on a command line"
    assert list(az.state()["deployments"]) == ["batchdrop-intake-events"]


def test_postdeploy_waits_for_the_blob_extension_key(az):
    az.set(keys=["", "", "blobkey-2"])
    done = run("postdeploy", az, DEPLOY_VALUES, BATCHDROP_HOOK_KEY_TRIES="5")
    assert done.returncode == 0, done.stderr
    assert az.commands() == ["functionapp keys list"] * 3 + ["deployment group create"]
    assert done.stdout.count("waiting for the blob extension's key") == 2


def test_postdeploy_gives_up_clearly_when_the_key_never_comes(az):
    az.set(keys=[""])
    done = run("postdeploy", az, DEPLOY_VALUES, BATCHDROP_HOOK_KEY_TRIES="3")
    assert done.returncode == 1
    assert "no blobs_extension system key after 3 tries" in done.stderr and "azd hooks run postdeploy" in done.stderr
    assert az.commands() == ["functionapp keys list"] * 3, "nothing is created without the key"


def test_postdeploy_uses_the_subscription_azd_chose(az):
    az.set(keys=["k"])
    assert run("postdeploy", az, {**DEPLOY_VALUES, "AZURE_SUBSCRIPTION_ID": "sub-1"}).returncode == 0
    for call in az.calls():
        assert call["argv"][call["argv"].index("--subscription") + 1] == "sub-1"


# ----------------------------------------------------------------------------- postprovision


def test_postprovision_stores_a_password_once_and_a_rerun_changes_nothing(az):
    first = run("postprovision", az, PROVISION_VALUES)
    assert first.returncode == 0, first.stderr
    assert az.commands() == ["acr token show", "keyvault secret show", "acr token credential generate",
                             "keyvault secret set"]
    secret = az.state()["secrets"]["registry-password"]
    assert secret["value"] == "s3cret-1", "the stored value is the generated password, nothing added"
    assert "s3cret" not in argv_text(az) and "s3cret" not in first.stdout + first.stderr
    assert az.calls()[-1]["file_mode"] == "0o600"
    token = az.state()["token"]["passwords"][0]
    assert secret["tags"] == {"token-password-created": token["creationTime"]}
    assert secret["expires"] == token["expiry"]

    second = run("postprovision", az, PROVISION_VALUES)
    assert second.returncode == 0 and "nothing to do" in second.stdout
    assert az.commands()[4:] == ["acr token show", "keyvault secret show"], "a re-run only reads"
    assert az.state()["generated"] == 1


@pytest.mark.parametrize("change, why", [
    ("reset", "the token has no password1"),
    ("rotated", "is not the token's current password1"),
    ("expiring", "expires"),
])
def test_postprovision_renews_a_password_the_token_no_longer_takes(az, change, why):
    assert run("postprovision", az, PROVISION_VALUES).returncode == 0
    token = az.state()["token"]
    if change == "reset":
        token["passwords"] = []
    elif change == "rotated":
        token["passwords"][0]["creationTime"] = "2020-01-01T00:00:00+00:00"
    else:
        token["passwords"][0]["expiry"] = (datetime.now(UTC) + timedelta(days=10)).isoformat()
    az.set(token=token)
    done = run("postprovision", az, PROVISION_VALUES)
    assert done.returncode == 0 and why in done.stdout
    assert az.state()["generated"] == 2 and az.state()["secrets"]["registry-password"]["value"] == "s3cret-2"


def test_postprovision_waits_for_new_role_assignments_to_reach_key_vault(az):
    az.set(forbidden=2)
    done = run("postprovision", az, PROVISION_VALUES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("not permitted yet") == 2
    assert az.state()["secrets"]["registry-password"]["value"] == "s3cret-1"


def test_postprovision_gives_up_clearly_when_still_forbidden(az):
    az.set(forbidden=1000)
    done = run("postprovision", az, PROVISION_VALUES, BATCHDROP_HOOK_RBAC_WAIT_S="0")
    assert done.returncode == 1 and "still forbidden" in done.stderr and "Key Vault Secrets Officer" in done.stderr
    assert "acr token credential generate" not in az.commands()


def test_the_hook_scripts_are_python_3_9():
    """azd runs them with whatever python3 the machine has (Ubuntu 22.04: 3.10)."""
    import ast

    for script in (HOOKS, INFRA / "hooks" / "stage_app.py"):
        ast.parse(script.read_text(), filename=str(script), feature_version=(3, 9))
        assert "from datetime import UTC" not in script.read_text()


def test_times_as_azure_writes_them():
    from infra.hooks import azd_hooks

    assert azd_hooks._parse_time("2027-12-02T18:05:11.1234567Z") == datetime(2027, 12, 2, 18, 5, 11, 123456, tzinfo=UTC)
    assert azd_hooks._parse_time("2027-12-02T18:05:11+00:00").tzinfo is not None


def test_the_hooks_script_needs_only_the_standard_library():
    """azd runs it with the machine's python3, before any venv exists."""
    env = {"PATH": os.environ["PATH"]}
    done = subprocess.run([sys.executable, "-S", "-c", "import runpy; runpy.run_path(%r)" % str(HOOKS)],
                          env=env, capture_output=True, text=True)
    assert "ModuleNotFoundError" not in done.stderr

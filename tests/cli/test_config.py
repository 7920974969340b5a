"""Where the CLI looks for its storage (no services needed): flags, environment, azd outputs,
local settings files, in that order."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchdrop_cli import config
from batchdrop_cli.errors import UNREACHABLE, CliError

LOCAL = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "BATCH_ACCOUNT_URL": "http://127.0.0.1:10100",
         "BATCH_ACCOUNT_NAME": "devbatch", "BATCH_ACCOUNT_KEY": "a2V5", "INTAKE_CONTAINER": "drops"}


def settings_file(folder: Path, values: dict, name: str = "local.settings.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def azd_project(folder: Path, env_name: str, lines: list[str]) -> None:
    (folder / "azure.yaml").write_text("name: batchdrop\n")
    (folder / ".azure" / env_name).mkdir(parents=True)
    (folder / ".azure" / "config.json").write_text(json.dumps({"version": 1, "defaultEnvironment": env_name}))
    (folder / ".azure" / env_name / ".env").write_text("\n".join(lines) + "\n")


def test_local_settings_in_the_current_folder(tmp_path):
    settings_file(tmp_path, LOCAL)
    target = config.resolve(environ={}, cwd=tmp_path)
    assert target.settings.intake_container == "drops"
    assert target.endpoint == "http://127.0.0.1:10000/devstoreaccount1"
    assert target.batch_configured and str(tmp_path / "local.settings.json") in target.source


def test_the_projects_settings_are_the_fallback(tmp_path):
    target = config.resolve(environ={}, cwd=tmp_path)
    assert target.source.startswith(str(config.PROJECT_ROOT))
    assert target.endpoint == "http://127.0.0.1:10000/devstoreaccount1"


def test_an_explicit_settings_file_wins_over_everything(tmp_path):
    settings_file(tmp_path, {**LOCAL, "INTAKE_CONTAINER": "here"})
    chosen = settings_file(tmp_path, {**LOCAL, "INTAKE_CONTAINER": "chosen"}, "other.json")
    env = {"BATCHDROP_STORAGE_ACCOUNT": "acct", "BATCHDROP_SETTINGS": str(chosen)}
    assert config.resolve(environ=env, cwd=tmp_path).settings.intake_container == "chosen"
    assert config.resolve(settings_file=str(chosen), account="x", environ={}, cwd=tmp_path).source.endswith(
        "(--settings)")


def test_account_uses_the_identity_and_environment_names(tmp_path):
    settings_file(tmp_path, LOCAL)  # ignored: an account was named
    env = {"BATCHDROP_STORAGE_ACCOUNT": "prodstore", "RESULTS_CONTAINER": "out", "AzureWebJobsStorage": "ignored"}
    target = config.resolve(environ=env, cwd=tmp_path)
    assert target.endpoint == "https://prodstore.blob.core.windows.net"
    assert target.settings.storage.connection_string is None
    assert (target.settings.results_container, target.settings.intake_container) == ("out", "intake")
    assert not target.batch_configured and target.batch_client() is None
    url = config.resolve(account="https://prodstore.blob.core.usgovcloudapi.net/", environ={}, cwd=tmp_path)
    assert url.endpoint == "https://prodstore.blob.core.usgovcloudapi.net"


def test_connection_string_from_the_environment(tmp_path):
    conn = ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net")
    target = config.resolve(environ={"AZURE_STORAGE_CONNECTION_STRING": conn}, cwd=tmp_path)
    assert target.endpoint == "https://acct.blob.core.windows.net"
    assert "a2V5" not in target.source and "AZURE_STORAGE_CONNECTION_STRING" in target.source


def test_azd_environment_outputs(tmp_path):
    azd_project(tmp_path, "dev", ['AZURE_STORAGE_ACCOUNT_NAME="bdstore"', 'INTAKE_CONTAINER="jobs"',
                                  'AZURE_BATCH_ACCOUNT_URL="https://bdbatch.westeurope.batch.azure.com"'])
    nested = tmp_path / "sub" / "dir"
    nested.mkdir(parents=True)
    settings_file(nested, LOCAL)  # the azd environment is preferred to the local stack
    target = config.resolve(environ={}, cwd=nested)
    assert target.endpoint == "https://bdstore.blob.core.windows.net"
    assert target.settings.intake_container == "jobs" and "azd environment 'dev'" in target.source
    assert target.batch_configured
    assert target.settings.batch.account_url == "https://bdbatch.westeurope.batch.azure.com"
    # an environment without a storage account output is not a deployment to talk to
    (tmp_path / "x").mkdir()
    azd_project(tmp_path / "x", "empty", ["AZURE_LOCATION=westeurope"])
    settings_file(tmp_path / "x", LOCAL)
    assert "local stack" in config.resolve(environ={}, cwd=tmp_path / "x").source


def test_bad_settings_say_what_is_wrong(tmp_path):
    with pytest.raises(CliError) as missing:
        config.resolve(settings_file=str(tmp_path / "nope.json"), environ={}, cwd=tmp_path)
    assert missing.value.code == UNREACHABLE and "does not exist" in missing.value.message
    broken = settings_file(tmp_path, {**LOCAL, "MAX_JOB_FILE_BYTES": "lots"}, "broken.json")
    with pytest.raises(CliError) as invalid:
        config.resolve(settings_file=str(broken), environ={}, cwd=tmp_path)
    assert "MAX_JOB_FILE_BYTES" in invalid.value.message

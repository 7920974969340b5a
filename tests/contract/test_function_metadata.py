"""The function app as the real Python worker indexes it (`app.get_functions()`).

A change here would break the app under the real Functions host (or Core Tools), so it fails here.
"""
from __future__ import annotations

import importlib
import json
import sys

import pytest

EXPECTED = {
    "intake": {"type": "blobTrigger", "path": "%INTAKE_CONTAINER%/{name}", "connection": "AzureWebJobsStorage",
               "source": "LogsAndContainerScan", "name": "jobfile"},
    "monitor": {"type": "timerTrigger", "schedule": "%MONITOR_SCHEDULE%", "runOnStartup": False,
                "useMonitor": False, "name": "timer"},
    "finalize": {"type": "queueTrigger", "queueName": "%FINALIZE_QUEUE%", "connection": "AzureWebJobsStorage",
                 "name": "msg"},
    "intake_request": {"type": "queueTrigger", "queueName": "%INTAKE_QUEUE%", "connection": "AzureWebJobsStorage",
                       "name": "msg"},
    "submit_continuation": {"type": "queueTrigger", "queueName": "%SUBMIT_QUEUE%",
                            "connection": "AzureWebJobsStorage", "name": "msg"},
}


def load_app(monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for name in [m for m in sys.modules if m == "function_app" or m.startswith("functions")]:
        del sys.modules[name]
    return importlib.import_module("function_app").app


def functions_by_name(app) -> dict:
    return {f.get_function_name(): json.loads(f.get_function_json()) for f in app.get_functions()}


def test_every_trigger_has_the_expected_type_path_connection_and_source(monkeypatch):
    monkeypatch.delenv("INTAKE_SOURCE", raising=False)
    functions = functions_by_name(load_app(monkeypatch))
    assert set(functions) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        bindings = functions[name]["bindings"]
        assert len(bindings) == 1, f"{name} must have exactly its trigger binding (the pipeline uses SDK clients)"
        binding = bindings[0]
        assert binding["direction"] == "IN"
        for key, value in expected.items():
            assert binding.get(key) == value, f"{name}.{key}: {binding.get(key)!r} != {value!r}"


def test_event_grid_source_is_chosen_by_a_setting(monkeypatch):
    functions = functions_by_name(load_app(monkeypatch, INTAKE_SOURCE="EventGrid"))
    assert functions["intake"]["bindings"][0]["source"] == "EventGrid"


def test_function_app_is_wiring_only_and_shared_never_imports_the_functions_runtime():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    for path in (root / "shared").glob("*.py"):
        text = path.read_text()
        assert "azure.functions" not in text and "import azure.functions" not in text, path.name
    app_text = (root / "function_app.py").read_text()
    assert "def " not in app_text, "function_app.py must only wire blueprints"


def test_monitor_never_runs_on_startup(monkeypatch):
    functions = functions_by_name(load_app(monkeypatch))
    assert functions["monitor"]["bindings"][0]["runOnStartup"] is False


@pytest.mark.parametrize("name", ["host.json", "local.settings.sample.json"])
def test_host_files_follow_core_tools_conventions(name):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    data = json.loads((root / name).read_text())
    if name == "host.json":
        assert data["version"] == "2.0"
        assert data["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
        assert data["extensionBundle"]["version"].startswith("[4.")
    else:
        values = data["Values"]
        assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
        assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
        for setting in ("BATCH_ACCOUNT_URL", "BATCH_ACCOUNT_NAME", "BATCH_ACCOUNT_KEY", "INTAKE_CONTAINER",
                        "MONITOR_SCHEDULE", "FINALIZE_QUEUE", "RESULTS_CONTAINER"):
            assert values.get(setting), f"{setting} missing from local.settings.sample.json"


def test_every_setting_the_app_reads_is_in_the_sample():
    """Settings.from_mapping reads named settings; each must appear in local.settings.sample.json."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    source = (root / "shared" / "settings.py").read_text() + (root / "functions" / "wiring.py").read_text()
    read = set(re.findall(r'(?:get|integer)\("([A-Z_]+)"', source)) | set(re.findall(r'env\.get\("([A-Z_]+)"', source))
    sample = json.loads((root / "local.settings.sample.json").read_text())["Values"]
    missing = sorted(read - set(sample))
    assert not missing, f"settings read but not in the sample: {missing}"

"""devhost's view of the project's own function_app.py: the worker's metadata, resolved by the host's rules."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from devhost import Host, load_function_app
from devhost.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_devhost_indexes_the_project_app_as_the_worker_sees_it(monkeypatch):
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    monkeypatch.delenv("INTAKE_SOURCE", raising=False)
    saved_path = list(sys.path)
    for name in [m for m in sys.modules if m == "function_app" or m.startswith("functions")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        app = load_function_app(ROOT)  # exactly one FunctionApp, as the worker requires
        host = Host(app, values, app_dir=ROOT)
        host.close()
        settings = Settings(values)
        for spec in host.functions:
            raw = json.loads(spec.raw_bindings[0])  # what the worker sends the host
            if spec.trigger_type == "blobTrigger":
                assert spec.path == settings.resolve(raw["path"]) == "intake/{name}"
                assert spec.source == raw["source"] == "LogsAndContainerScan"
            elif spec.trigger_type == "queueTrigger":
                assert spec.queue_name == settings.resolve(raw["queueName"]).lower()
            else:
                assert str(spec.schedule) == f"Cron: '{values['MONITOR_SCHEDULE']}'"
                assert spec.use_monitor is raw["useMonitor"] is False
            assert spec.connection == raw.get("connection")
        assert {s.name for s in host.functions} == {"intake", "intake_request", "submit_continuation", "monitor", "finalize"}
        assert host.sync_pool.requested is None  # the sample leaves the worker's default pool
    finally:
        sys.path[:] = saved_path

"""shared.telemetry: the run id on every log record about a run, and Application Insights configured
only where a connection string says so.

The filter is tested with real `logging` records through real loggers and handlers. The distro's
``configure_azure_monitor`` is replaced by a recorder (it would start exporters and threads), and so
is azure-identity's ManagedIdentityCredential (it only records its client id). One test runs the
real OpenTelemetry logging handler and Application Insights envelope conversion, when installed.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import azure.identity
import pytest

from shared import telemetry

ROOT = Path(__file__).resolve().parents[2]
RUN = "heavylift-first-3f2a9c1e0b4d5a6f"
OTHER = "other-job-0123456789abcdef"
UAMI = "11111111-2222-3333-4444-555555555555"
CONNECTION_STRING = ("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                     "IngestionEndpoint=https://example.invalid/")
AZURE = {  # the settings infra/modules/functionapp.bicep gives the app, as far as these tests need them
    "APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING,
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": f"ClientId={UAMI};Authorization=AAD",
    "AzureWebJobsStorage__accountName": "stexample",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": UAMI,
    "BATCH_ACCOUNT_URL": "https://acct.westeurope.batch.azure.com",
}


class Collecting(logging.Handler):
    """Keeps every record it is given, as the handler saw it (after its filters)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RecordingSetup:
    """Stands in for azure.monitor.opentelemetry.configure_azure_monitor: records each call."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[dict] = []
        self.fail = fail

    def __call__(self, **kwargs) -> None:
        self.calls.append(kwargs)
        if self.fail is not None:
            raise self.fail


class ManagedIdentity:
    """Stands in for azure.identity.ManagedIdentityCredential: records its client id, fetches no token."""

    def __init__(self, client_id: str | None = None, **kwargs) -> None:
        self.client_id = client_id

    def get_token(self, *scopes, **kwargs):
        raise AssertionError("no token may be requested in a unit test")


@pytest.fixture
def logger():
    """A fresh logger (not propagating to the root) with a collecting handler that has the filter."""
    name = f"tests.telemetry.{uuid.uuid4().hex}"
    lg = logging.getLogger(name)
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    handler = Collecting()
    lg.addHandler(handler)
    telemetry.install_filter(lg)
    yield lg, handler
    lg.removeHandler(handler)


def run_ids(handler: Collecting) -> list[str | None]:
    return [getattr(r, "run_id", None) for r in handler.records]


# ----------------------------------------------------------------------------- the filter


def test_a_record_whose_message_names_a_run_carries_that_run_id(logger):
    lg, handler = logger
    lg.info("finalize requested run_id=%s", RUN)
    lg.warning("claim renewal failed run_id=%s step=%s: %s", RUN, "merge", "gone")
    lg.info("accepted run_id=%s job_file=%s", OTHER, "intake/a.json")
    assert run_ids(handler) == [RUN, RUN, OTHER]
    assert handler.records[0].getMessage() == f"finalize requested run_id={RUN}"  # the message is untouched


def test_a_record_about_no_run_is_kept_without_a_run_id(logger):
    lg, handler = logger
    lg.info("monitor tick runs=%d past_due=%s", 3, False)
    lg.info("run_id=%s", None)  # not a run id
    lg.info("run_id=%s", "Not_A_Run")  # not a run id either
    lg.info("task_run_id=%s", RUN)  # another key that merely ends in run_id
    lg.info("run_id=%s", RUN + "0")  # a longer token is not the run id it starts with
    assert len(handler.records) == 5
    assert all(not hasattr(r, "run_id") for r in handler.records)


def test_the_first_run_a_message_names_is_the_one(logger):
    lg, handler = logger
    lg.warning("run id collision run_id=%s other run_id=%s", RUN, OTHER)
    assert run_ids(handler) == [RUN]


def test_run_context_wins_over_the_message_and_nests(logger):
    lg, handler = logger
    with telemetry.run_context(RUN):
        lg.info("merge task started")
        lg.info("finalize requested run_id=%s", OTHER)
        with telemetry.run_context(OTHER):
            lg.info("inner")
        lg.info("outer again")
    lg.info("outside")
    assert run_ids(handler) == [RUN, RUN, OTHER, RUN, None]
    assert telemetry.current_run() is None


def test_run_context_ends_even_when_the_block_raises(logger):
    lg, handler = logger
    with pytest.raises(RuntimeError), telemetry.run_context(RUN):
        raise RuntimeError("finalize failed")
    lg.info("after")
    assert run_ids(handler) == [None]


def test_run_context_is_the_callers_thread_only(logger):
    lg, handler = logger
    with telemetry.run_context(RUN):
        worker = threading.Thread(target=lambda: lg.info("from another thread"))
        worker.start()
        worker.join()
    assert run_ids(handler) == [None]


def test_a_run_id_the_caller_gives_is_kept(logger):
    lg, handler = logger
    with telemetry.run_context(RUN):
        lg.info("explicit run_id=%s", RUN, extra={"run_id": OTHER})
    assert run_ids(handler) == [OTHER]


def test_a_record_whose_arguments_do_not_fit_its_format_is_passed_on_without_a_run_id():
    """The handler reports the formatting error itself; the filter neither raises nor drops the record."""
    record = logging.getLogger("shared.watch").makeRecord(
        "shared.watch", logging.INFO, __file__, 1, "run_id=%s step=%s", (RUN,), None)  # one argument short
    assert telemetry.RunIdFilter().filter(record) is True
    assert not hasattr(record, "run_id")


def test_records_of_child_loggers_get_the_run_id_at_the_parents_handler():
    """The filter sits on handlers: a logger's own filters never see what its children propagate."""
    parent = logging.getLogger(f"tests.telemetry.{uuid.uuid4().hex}")
    parent.propagate = False
    parent.setLevel(logging.INFO)
    handler = Collecting()
    parent.addHandler(handler)
    try:
        telemetry.install_filter(parent)
        telemetry.install_filter(parent)  # idempotent: still one filter
        assert sum(isinstance(f, telemetry.RunIdFilter) for f in handler.filters) == 1
        logging.getLogger(parent.name + ".shared.watch").info("finalize requested run_id=%s", RUN)
    finally:
        parent.removeHandler(handler)
    assert run_ids(handler) == [RUN]


def test_run_id_in_reads_the_pipelines_log_lines():
    assert telemetry.run_id_in(f"submitted run_id={RUN} tasks=12") == RUN
    assert telemetry.run_id_in(f"claim lost run_id={RUN} step=merge") == RUN
    assert telemetry.run_id_in(f"could not re-queue finalize run_id={RUN} error=boom") == RUN
    assert telemetry.run_id_in(f"cleaned up run_id={RUN}.") == RUN
    assert telemetry.run_id_in("orphan sweep deleted 2 item(s): bd-x, bd-y") is None


# ----------------------------------------------------------------------------- configure


def private_root() -> tuple[logging.Logger, Collecting]:
    """Stands in for the root logger, with one handler, as the worker leaves it."""
    root = logging.getLogger(f"tests.telemetry.root.{uuid.uuid4().hex}")
    root.propagate = False
    handler = Collecting()
    root.addHandler(handler)
    return root, handler


@pytest.mark.parametrize("value", [None, "", "   "])
def test_without_a_connection_string_nothing_is_configured(value):
    env = {k: v for k, v in AZURE.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    if value is not None:
        env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = value
    setup = RecordingSetup()
    root, handler = private_root()
    assert telemetry.configure(env, setup=setup, root=root) == telemetry.OFF
    assert setup.calls == [] and handler.filters == []


def test_without_a_connection_string_the_app_imports_neither_the_distro_nor_opentelemetry():
    """function_app as the local host and the tests import it: no connection string, nothing loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "PYTHON_APPLICATIONINSIGHTS_"))}
    probe = ("import json, logging, sys\n"
             "import function_app\n"
             "from shared import telemetry\n"
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry' or m.startswith('azure.monitor'))\n"
             "filtered = [h for h in logging.getLogger().handlers if any(isinstance(f, telemetry.RunIdFilter) for f in h.filters)]\n"
             "print(json.dumps({'loaded': loaded, 'filtered': len(filtered)}))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"loaded": [], "filtered": 0}


def test_when_the_worker_configured_the_distro_only_the_filter_is_added():
    """PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true: the worker called configure_azure_monitor before
    importing function_app; a second call would only make an exporter nothing uses."""
    setup = RecordingSetup()
    root, handler = private_root()
    env = {**AZURE, "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"}
    assert telemetry.configure(env, setup=setup, root=root) == telemetry.WORKER
    assert setup.calls == []
    assert [type(f) for f in handler.filters] == [telemetry.RunIdFilter]


def test_otherwise_the_app_configures_the_distro_once_with_its_identity(monkeypatch):
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", ManagedIdentity)
    setup = RecordingSetup()
    root, handler = private_root()
    assert telemetry.configure(AZURE, setup=setup, root=root) == telemetry.APP
    (call,) = setup.calls
    assert call["connection_string"] == CONNECTION_STRING
    assert isinstance(call["credential"], ManagedIdentity) and call["credential"].client_id == UAMI
    assert call["logger_name"] == ""  # the root logger: every module's records reach it
    assert [type(f) for f in handler.filters] == [telemetry.RunIdFilter]
    assert telemetry.configure(AZURE, setup=setup, root=root) == telemetry.APP  # a second call: nothing new
    assert len(setup.calls) == 1 and len(handler.filters) == 1


def test_telemetry_that_cannot_be_set_up_never_stops_the_app(monkeypatch, caplog):
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", ManagedIdentity)
    setup = RecordingSetup(fail=ValueError("Must pass in valid TokenCredential."))
    root, handler = private_root()
    with caplog.at_level(logging.WARNING, logger=telemetry.__name__):
        assert telemetry.configure(AZURE, setup=setup, root=root) == telemetry.OFF
    assert "Application Insights not configured error=ValueError" in caplog.text
    assert handler.filters == []
    missing = {k: v for k, v in AZURE.items() if k != "BATCH_ACCOUNT_URL"}  # settings the app cannot start with
    assert telemetry.configure(missing, setup=RecordingSetup(), root=root) == telemetry.OFF


# ----------------------------------------------------------------------------- the real exporter path


def test_opentelemetry_exports_the_run_id_as_an_application_insights_custom_dimension():
    """The real OpenTelemetry logging handler (the one the distro puts on the root logger) turns the
    record's run_id into a log attribute, and the Azure Monitor exporter turns that into a property of
    the telemetry item: customDimensions.run_id."""
    pytest.importorskip("azure.monitor.opentelemetry")
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    try:
        from opentelemetry.instrumentation.logging.handler import LoggingHandler
    except ImportError:  # older OpenTelemetry kept it in the SDK
        from opentelemetry.sdk._logs import LoggingHandler  # type: ignore[no-redef]
    try:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemory
    except ImportError:
        from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemory  # type: ignore[no-redef]
    try:
        from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
    except ImportError:
        pytest.skip("the exporter's envelope conversion moved (a private function): check by hand")

    exported = InMemory()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exported))
    lg = logging.getLogger(f"tests.telemetry.otel.{uuid.uuid4().hex}")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    lg.addHandler(LoggingHandler(logger_provider=provider))
    telemetry.install_filter(lg)
    lg.info("finalize requested run_id=%s", RUN)
    with telemetry.run_context(OTHER):
        lg.info("merge task started")
    lg.info("monitor tick runs=%d", 2)
    provider.shutdown()

    items = [_convert_log_to_envelope(item) for item in exported.get_finished_logs()]
    dimensions = [item.data.base_data.properties.get("run_id") for item in items]
    assert dimensions == [RUN, OTHER, None]

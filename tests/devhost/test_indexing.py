"""Indexing the app like the worker, resolving it like the host, refusing what devhost cannot run."""
from __future__ import annotations

import json

import azure.functions as func
import pytest

from devhost import Host, IndexingError, UnsupportedBindingError, index_functions
from devhost.settings import Settings

from .conftest import APPS


def test_refuses_an_unsupported_trigger_by_name(load_app):
    app, _ = load_app("unsupported")
    with pytest.raises(UnsupportedBindingError) as e:
        Host(app, {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, app_dir=APPS / "unsupported")
    assert str(e.value) == ("devhost: function 'changes' uses binding 'cosmosDBTrigger', which the local "
                            "host does not support; use func start")
    assert e.value.function_name == "changes" and e.value.binding == "cosmosDBTrigger"


def test_refuses_output_and_input_bindings_by_name(load_app):
    app, _ = load_app("outbinding")
    with pytest.raises(UnsupportedBindingError) as e:
        Host(app, {}, app_dir=APPS / "outbinding")
    assert "function 'copy' uses binding 'blob' (output)" in str(e.value)


def test_refuses_http_triggers():
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="hello")
    def hello(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("hi")

    with pytest.raises(UnsupportedBindingError, match="uses binding 'httpTrigger'"):
        index_functions(app, Settings({}))


def test_refuses_a_trigger_annotation_the_worker_would_refuse(load_app):
    app, _ = load_app("badparams")
    with pytest.raises(IndexingError, match='type of msg binding "queueTrigger" does not match its Python annotation'):
        Host(app, {}, app_dir=APPS / "badparams")


def test_refuses_parameters_without_bindings():
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="work", connection="")
    def f(msg: func.QueueMessage, extra: str) -> None:
        pass

    with pytest.raises(IndexingError, match="declared in Python but not in the bindings"):
        index_functions(app, Settings({}))


def test_project_shaped_app_is_indexed_with_settings_resolved(load_app):
    app, _ = load_app("blobs")
    specs = {s.name: s for s in index_functions(app, Settings({"IN_CONTAINER": "intake", "EG_CONTAINER": "drops"}),
                                                APPS / "blobs")}
    intake, events = specs["intake"], specs["events"]
    assert (intake.path, intake.connection, intake.source, intake.param_name) == \
        ("intake/{name}", "DATA", "LogsAndContainerScan", "jobfile")
    assert (events.path, events.source) == ("drops/jobs/{name}.json", "EventGrid")
    assert intake.function_id == "Host.Functions.intake"
    assert json.loads(intake.raw_bindings[0])["path"] == "%IN_CONTAINER%/{name}"  # what the worker sent


def test_missing_setting_in_a_trigger_fails_indexing(load_app):
    app, _ = load_app("blobs")
    with pytest.raises(IndexingError, match="'%IN_CONTAINER%' does not resolve to a value"):
        index_functions(app, Settings({}), APPS / "blobs")


def test_queue_and_timer_triggers_are_resolved(load_app):
    app, _ = load_app("queues")
    specs = {s.name: s for s in index_functions(app, Settings({"WORK_QUEUE": "Work-Items", "ASYNC_QUEUE": "aq1"}))}
    assert specs["finalize"].queue_name == "work-items"  # the host lower-cases queue names
    assert specs["finalize"].connection == "AzureWebJobsStorage"
    assert specs["finalize_async"].is_async and specs["finalize_async"].requires_context
    assert specs["finalize_async"].bind_type == "generic" and specs["finalize_async"].data_type == "string"
    app, _ = load_app("timers")
    specs = {s.name: s for s in index_functions(app, Settings({"TICK_SCHEDULE": "*/5 * * * * *"}))}
    assert str(specs["tick"].schedule) == "Cron: '*/5 * * * * *'"
    assert specs["tick"].use_monitor is False and specs["tick"].run_on_startup is False
    assert specs["daily"].use_monitor is True  # default for schedules of a minute or more


def test_bad_schedule_and_bad_queue_name_fail_indexing(load_app):
    app, _ = load_app("timers")
    with pytest.raises(IndexingError, match="not recognized as a valid cron expression or timespan"):
        index_functions(app, Settings({"TICK_SCHEDULE": "often"}))
    app, _ = load_app("queues")
    with pytest.raises(IndexingError, match="not a valid queue name"):
        index_functions(app, Settings({"WORK_QUEUE": "a_b", "ASYNC_QUEUE": "aq1"}))


def test_the_same_app_can_be_indexed_again_as_after_a_restart(load_app):
    app, _ = load_app("timers")
    s = Settings({"TICK_SCHEDULE": "00:00:01"})

    def summary(specs):
        return [(f.name, f.function_id, str(f.schedule), f.use_monitor, f.param_name) for f in specs]

    expected = [("tick", "Host.Functions.tick", "Constant: 00:00:01", False, "timer"),
                ("daily", "Host.Functions.daily", "Cron: '0 30 9 * * *'", True, "timer")]
    assert summary(index_functions(app, s)) == expected
    assert summary(index_functions(app, s)) == expected  # a second indexing (a restart) sees the same app


def test_host_json_functions_list_and_disabled_setting(load_app):
    app, _ = load_app("timers")
    s = Settings({"TICK_SCHEDULE": "00:00:01"})
    assert [f.name for f in index_functions(app, s, only=["daily"])] == ["daily"]
    s = Settings({"TICK_SCHEDULE": "00:00:01", "AzureWebJobs.daily.Disabled": "true"})
    assert [f.name for f in index_functions(app, s)] == ["tick"]


def test_two_names_for_the_app_fail_indexing_as_in_the_worker(load_app):
    # The worker's loader counts module attributes holding a FunctionRegister, not distinct apps.
    with pytest.raises(IndexingError) as e:
        load_app("twonames")
    assert "more than one FunctionApp or other top level function app instances are defined" in str(e.value)
    assert "(app, application)" in str(e.value)


def _blob_app(source):
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="in/{name}", connection="", source=source)
    def f(blob: func.InputStream) -> None:
        pass

    return app


@pytest.mark.parametrize(("source", "expected"), [
    (func.BlobSource.EVENT_GRID, "EventGrid"), ("eventgrid", "EventGrid"), ("LOGSANDCONTAINERSCAN", "LogsAndContainerScan"),
    ("1", "EventGrid"), ("0", "LogsAndContainerScan"), (None, "LogsAndContainerScan")])
def test_blob_source_is_read_as_the_host_reads_the_enum(source, expected):
    [spec] = index_functions(_blob_app(source), Settings({}))
    assert spec.source == expected


@pytest.mark.parametrize("source", ["%INTAKE_SOURCE%", "Events", "", "7"])
def test_a_source_the_host_cannot_convert_fails_indexing(source):
    with pytest.raises(IndexingError, match=f"Could not convert '{source}' to BlobTriggerSource"):
        index_functions(_blob_app(source), Settings({"INTAKE_SOURCE": "EventGrid"}))


def test_a_trigger_connection_that_is_not_configured_fails_at_host_start(load_app):
    app, _ = load_app("queues")
    with pytest.raises(IndexingError, match="function 'finalize': storage connection 'AzureWebJobsStorage' is not configured"):
        Host(app, {"WORK_QUEUE": "work", "ASYNC_QUEUE": "aq1"}, app_dir=APPS / "queues")

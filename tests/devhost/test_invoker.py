"""Invocations without storage: the worker's objects, functionTimeout warnings, log lines and levels."""
from __future__ import annotations

import io
import json
import logging
import threading

import azure.functions as func

from devhost.hostconfig import parse_host_json
from devhost.indexing import index_functions
from devhost.invoker import Datum, EventLoopThread, Invoker
from devhost.logs import register_secrets, setup_logging
from devhost.settings import Settings

RELEASE = threading.Event()


def _app() -> func.FunctionApp:
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="0 0 * * * *", use_monitor=False)
    def slow(timer: func.TimerRequest) -> None:
        logging.getLogger("user.code").info("user line from slow")
        RELEASE.wait(5)

    @app.timer_trigger(arg_name="timer", schedule="0 0 * * * *", use_monitor=False)
    def chatty(timer: func.TimerRequest) -> None:
        logging.getLogger("user.code").debug("debug detail")
        logging.getLogger("user.code").warning("careful: AccountKey=c2VjcmV0c2VjcmV0c2VjcmV0;")
        raise ValueError("bad tick")

    return app


def _specs():
    return {s.name: s for s in index_functions(_app(), Settings({}))}


def test_function_timeout_is_logged_but_the_invocation_goes_on(caplog):
    spec = _specs()["slow"]
    invoker = Invoker(function_timeout=0.1, loop=EventLoopThread())
    RELEASE.clear()
    timer = threading.Timer(0.5, RELEASE.set)
    timer.start()
    with caplog.at_level(logging.INFO, logger="devhost"):
        result = invoker.invoke(spec, Datum(json.dumps({"IsPastDue": False}), "json"), {}, reason="test")
    timer.join()
    assert result.succeeded and result.duration >= 0.4
    assert f"Timeout value of 00:00:00.100 exceeded by function 'Functions.slow' (Id: '{result.invocation_id}')" \
        in caplog.text


def test_log_lines_carry_the_invocation_and_honour_host_json_levels():
    specs = _specs()
    config = parse_host_json({"logging": {"logLevel": {"default": "Information", "Function.chatty.User": "Warning"}}})
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    handler = setup_logging(logging.INFO, lambda c: config.level_for(c), stream=stream)
    register_secrets(["c2VjcmV0c2VjcmV0c2VjcmV0"])
    try:
        RELEASE.set()
        invoker = Invoker(function_timeout=None, loop=EventLoopThread())
        ok = invoker.invoke(specs["slow"], Datum(json.dumps({}), "json"), {}, reason="test")
        bad = invoker.invoke(specs["chatty"], Datum(json.dumps({}), "json"), {}, reason="test")
    finally:
        root.removeHandler(handler)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    text = stream.getvalue()
    assert f"Executing 'Functions.slow' (Reason='test', Id={ok.invocation_id})" in text
    assert f"Executed 'Functions.slow' (Succeeded, Id={ok.invocation_id}" in text
    assert f"[Functions.slow {ok.invocation_id[:8]}]: user line from slow" in text
    assert f"Executed 'Functions.chatty' (Failed, Id={bad.invocation_id}" in text and "ValueError: bad tick" in text
    assert "debug detail" not in text  # Function.chatty.User is at Warning
    assert "careful: AccountKey=[REDACTED]" in text and "c2VjcmV0c2VjcmV0c2VjcmV0" not in text
    assert isinstance(bad.error, ValueError) and not bad.succeeded


def test_timer_data_decodes_to_the_workers_timerrequest():
    spec = _specs()["slow"]
    invoker = Invoker(function_timeout=None, loop=EventLoopThread())
    value = invoker.build_argument(spec, Datum(json.dumps({"Schedule": {"AdjustForDST": True},
                                                           "ScheduleStatus": None, "IsPastDue": True}), "json"), {})
    assert type(value) is func.timer.TimerRequest and value.past_due is True

"""Invocations without storage: the worker's objects, functionTimeout warnings, log lines and levels."""
from __future__ import annotations

import io
import json
import logging
import threading

import azure.functions as func
import pytest

from devhost.hostconfig import parse_host_json
from devhost.indexing import index_functions
from devhost.invoker import Datum, EventLoopThread, Invoker, SyncPool, sync_pool_size
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


@pytest.fixture
def make_invoker():
    """Invokers whose sync pools and event loops are stopped after the test (no thread left behind)."""
    made: list[Invoker] = []

    def make(function_timeout=None, pool_size=None) -> Invoker:
        invoker = Invoker(function_timeout=function_timeout, loop=EventLoopThread(), sync_pool=SyncPool(pool_size))
        made.append(invoker)
        return invoker

    yield make
    for invoker in made:
        invoker.sync_pool.stop()
        invoker.loop.stop()


def test_function_timeout_is_logged_but_the_invocation_goes_on(caplog, make_invoker):
    spec = _specs()["slow"]
    invoker = make_invoker(function_timeout=0.1)
    RELEASE.clear()
    timer = threading.Timer(0.5, RELEASE.set)
    timer.start()
    with caplog.at_level(logging.INFO, logger="devhost"):
        result = invoker.invoke(spec, Datum(json.dumps({"IsPastDue": False}), "json"), {}, reason="test")
    timer.join()
    assert result.succeeded and result.duration >= 0.4
    assert f"Timeout value of 00:00:00.100 exceeded by function 'Functions.slow' (Id: '{result.invocation_id}')" \
        in caplog.text


def test_log_lines_carry_the_invocation_and_honour_host_json_levels(make_invoker):
    specs = _specs()
    config = parse_host_json({"logging": {"logLevel": {"default": "Information", "Function.chatty.User": "Warning"}}})
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    handler = setup_logging(logging.INFO, lambda c: config.level_for(c), stream=stream)
    register_secrets(["c2VjcmV0c2VjcmV0c2VjcmV0"])
    try:
        RELEASE.set()
        invoker = make_invoker()
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


def test_timer_data_decodes_to_the_workers_timerrequest(make_invoker):
    spec = _specs()["slow"]
    invoker = make_invoker()
    value = invoker.build_argument(spec, Datum(json.dumps({"Schedule": {"AdjustForDST": True},
                                                           "ScheduleStatus": None, "IsPastDue": True}), "json"), {})
    assert type(value) is func.timer.TimerRequest and value.past_due is True


def _returning_app() -> func.FunctionApp:
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="0 0 * * * *", use_monitor=False)
    def gives(timer: func.TimerRequest) -> str:
        return "a value nobody binds"

    @app.timer_trigger(arg_name="timer", schedule="0 0 * * * *", use_monitor=False)
    async def gives_async(timer: func.TimerRequest) -> int:
        return 0  # not None: fails too

    @app.timer_trigger(arg_name="timer", schedule="0 0 * * * *", use_monitor=False)
    def gives_none(timer: func.TimerRequest) -> None:
        return None

    return app


def test_a_value_returned_without_a_return_binding_fails_the_invocation(make_invoker):
    specs = {s.name: s for s in index_functions(_returning_app(), Settings({}))}
    invoker = make_invoker()
    tick = Datum(json.dumps({"IsPastDue": False}), "json")
    for name, kind in (("gives", "str"), ("gives_async", "int")):
        result = invoker.invoke(specs[name], tick, {}, reason="test")
        assert not result.succeeded and isinstance(result.error, RuntimeError)
        assert str(result.error).startswith(
            f"function '{name}' without a $return binding returned a non-None value ({kind})")
    assert invoker.invoke(specs["gives_none"], tick, {}, reason="test").succeeded


def test_threadpool_size_follows_the_workers_setting_rules(caplog):
    assert sync_pool_size("3") == 3 and sync_pool_size(None) is None
    with caplog.at_level(logging.WARNING, logger="devhost"):
        assert sync_pool_size("many") is None and sync_pool_size("0") is None
    assert "PYTHON_THREADPOOL_THREAD_COUNT must be an integer" in caplog.text
    import os
    assert SyncPool(None).max_workers == min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default


def test_sync_functions_share_one_pool_of_the_configured_size(make_invoker):
    """Two functions invoked from five trigger threads at once: never more than the pool's 2 run together."""
    active, peak, lock, release = [0], [0], threading.Lock(), threading.Event()
    seen_ids: list[tuple[str, str | None]] = []
    app = func.FunctionApp()

    def body(context: func.Context) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            seen_ids.append((context.invocation_id, context.thread_local_storage.invocation_id))
        release.wait(10)
        with lock:
            active[0] -= 1

    @app.timer_trigger(arg_name="timer", schedule="0 0 * * * *", use_monitor=False)
    def one(timer: func.TimerRequest, context: func.Context) -> None:
        body(context)

    @app.timer_trigger(arg_name="timer", schedule="0 0 * * * *", use_monitor=False)
    def two(timer: func.TimerRequest, context: func.Context) -> None:
        body(context)

    specs = {s.name: s for s in index_functions(app, Settings({}))}
    invoker = make_invoker(pool_size=2)
    tick = Datum(json.dumps({"IsPastDue": False}), "json")
    results = []
    callers = [threading.Thread(target=lambda n=n: results.append(invoker.invoke(specs[n], tick, {}, reason="t")))
               for n in ("one", "two", "one", "two", "one")]
    for t in callers:
        t.start()
    from .helpers import wait_until
    wait_until(lambda: active[0] == 2, timeout=5, message="two invocations running")
    release_timer = threading.Timer(0.3, release.set)  # the others stay queued meanwhile
    release_timer.start()
    for t in callers:
        t.join(10)
    release_timer.join()
    assert len(results) == 5 and all(r.succeeded for r in results)
    assert peak[0] == 2
    assert all(inv == tls for inv, tls in seen_ids)  # context.thread_local_storage on the pool thread

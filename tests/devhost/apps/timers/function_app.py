"""Timer test app: 'tick' on %TICK_SCHEDULE% sleeps RUN_SECONDS each run and records overlap."""
import threading
import time

import azure.functions as func

app = func.FunctionApp()
RUNS: list[dict] = []
RUN_SECONDS = {"value": 0.0}
_active = {"now": 0, "max": 0}
_lock = threading.Lock()


def reset(run_seconds: float = 0.0) -> None:
    RUNS.clear()
    RUN_SECONDS["value"] = run_seconds
    _active.update(now=0, max=0)


def max_concurrency() -> int:
    return _active["max"]


@app.function_name("tick")
@app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%", run_on_startup=False, use_monitor=False)
def tick(timer: func.TimerRequest) -> None:
    with _lock:
        _active["now"] += 1
        _active["max"] = max(_active["max"], _active["now"])
    start = time.monotonic()
    try:
        time.sleep(RUN_SECONDS["value"])
    finally:
        with _lock:
            _active["now"] -= 1
        RUNS.append({"fn": "tick", "start": start, "end": time.monotonic(), "past_due": timer.past_due,
                     "type": type(timer), "schedule_status": timer.schedule_status})


@app.function_name("daily")
@app.timer_trigger(arg_name="timer", schedule="0 30 9 * * *")
def daily(timer: func.TimerRequest) -> None:
    RUNS.append({"fn": "daily", "past_due": timer.past_due, "schedule_status": timer.schedule_status})

"""Timer: one tick over every active run. Never run_on_startup (it fires on every restart)."""
import logging

import azure.functions as func

from functions.wiring import context
from shared.pipeline import watch

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("monitor")
@bp.timer_trigger(arg_name="timer", schedule="%MONITOR_SCHEDULE%", run_on_startup=False, use_monitor=False)
def monitor(timer: func.TimerRequest) -> None:
    outcome = watch(context())
    if outcome:
        log.info("monitor tick runs=%d past_due=%s", len(outcome), timer.past_due)

"""A timer with run_on_startup set: it fires once as soon as the host starts."""
import azure.functions as func

app = func.FunctionApp()
RUNS: list[bool] = []


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True, use_monitor=False)
def yearly(timer: func.TimerRequest) -> None:
    RUNS.append(timer.past_due)

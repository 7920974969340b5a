"""Queue trigger: the message body is the run id of a run ready to merge."""
import azure.functions as func

from functions.wiring import context
from shared import telemetry
from shared.naming import run_id_of_message
from shared.pipeline import finalize as finalize_run
from shared.settings import STORAGE_CONNECTION

bp = func.Blueprint()


@bp.function_name("finalize")
@bp.queue_trigger(arg_name="msg", queue_name="%FINALIZE_QUEUE%", connection=STORAGE_CONNECTION)
def finalize(msg: func.QueueMessage) -> None:
    run_id = run_id_of_message(msg.get_body().decode("utf-8", errors="replace"))
    with telemetry.run_context(run_id):
        finalize_run(context(), run_id)

"""Queue trigger: the message body is the run id of a run ready to merge."""
import re

import azure.functions as func

from functions.wiring import context
from shared.errors import BatchdropError
from shared.pipeline import finalize as finalize_run
from shared.settings import STORAGE_CONNECTION

bp = func.Blueprint()
RUN_ID = re.compile(r"^[a-z0-9-]{1,60}$")


@bp.function_name("finalize")
@bp.queue_trigger(arg_name="msg", queue_name="%FINALIZE_QUEUE%", connection=STORAGE_CONNECTION)
def finalize(msg: func.QueueMessage) -> None:
    run_id = msg.get_body().decode("utf-8", errors="replace").strip()
    if not RUN_ID.match(run_id):
        raise BatchdropError(f"finalize message is not a run id: {run_id[:80]!r}")
    finalize_run(context(), run_id)

"""Intake: every blob dropped in the intake container is a job file; the intake queue carries the
job files whose intake the monitor re-drives (the same step, pinned to the version named); the
submit queue carries runs whose submission goes on in another invocation (shared.submit)."""
import logging

import azure.functions as func

from functions.wiring import context, intake_source
from shared.naming import intake_request_of_message
from shared.pipeline import accept, continue_submission
from shared.settings import STORAGE_CONNECTION
from shared.submit import run_id_of_continuation

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("intake")
@bp.blob_trigger(arg_name="jobfile", path="%INTAKE_CONTAINER%/{name}", connection=STORAGE_CONNECTION,
                 source=intake_source())
def intake(jobfile: func.InputStream) -> None:
    container, _, name = (jobfile.name or "").partition("/")
    if not name:
        raise ValueError(f"blob trigger gave no blob name: {jobfile.name!r}")
    accept(context(), container, name)


@bp.function_name("intake_request")
@bp.queue_trigger(arg_name="msg", queue_name="%INTAKE_QUEUE%", connection=STORAGE_CONNECTION)
def intake_request(msg: func.QueueMessage) -> None:
    request = intake_request_of_message(msg.get_body().decode("utf-8", errors="replace"))
    accept(context(), request.container, request.name, etag=request.etag)


@bp.function_name("submit_continuation")
@bp.queue_trigger(arg_name="msg", queue_name="%SUBMIT_QUEUE%", connection=STORAGE_CONNECTION)
def submit_continuation(msg: func.QueueMessage) -> None:
    continue_submission(context(), run_id_of_continuation(msg.get_body().decode("utf-8", errors="replace")))

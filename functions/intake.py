"""Blob trigger on the intake container: every blob dropped there is a job file."""
import logging

import azure.functions as func

from functions.wiring import context, intake_source
from shared.pipeline import accept
from shared.settings import STORAGE_CONNECTION

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

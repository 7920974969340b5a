"""Wiring only: the FunctionApp, logging, and one blueprint per trigger."""
import logging

import azure.functions as func

from functions import finalize, intake, monitor

# The storage and Batch SDKs log request headers at DEBUG; keep them quiet whatever the host level.
for noisy in ("azure.core.pipeline.policies.http_logging_policy", "azure.storage", "azure.batch", "azure.identity"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

app = func.FunctionApp()
app.register_functions(intake.bp)
app.register_functions(monitor.bp)
app.register_functions(finalize.bp)

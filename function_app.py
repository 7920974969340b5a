"""Wiring only: the FunctionApp, logging, and one blueprint per trigger."""
import logging
import os

import azure.functions as func

from functions import finalize, intake, monitor
from shared import telemetry

# The storage and Batch SDKs log request headers at DEBUG; keep them quiet whatever the host level.
for noisy in ("azure.core.pipeline.policies.http_logging_policy", "azure.storage", "azure.batch", "azure.identity"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

# Application Insights with the run id as a custom dimension; nothing at all without a connection string.
telemetry.configure(os.environ)

app = func.FunctionApp()
app.register_functions(intake.bp)
app.register_functions(monitor.bp)
app.register_functions(finalize.bp)

"""Blob-triggered test app, shaped like the project's: wiring here, the function in a blueprint."""
import azure.functions as func
from blobs_bp import bp

app = func.FunctionApp()
app.register_functions(bp)

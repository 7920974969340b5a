"""A supported trigger with a blob output binding, which devhost refuses by name."""
import azure.functions as func

app = func.FunctionApp()


@app.function_name("copy")
@app.queue_trigger(arg_name="msg", queue_name="work", connection="AzureWebJobsStorage")
@app.blob_output(arg_name="out", path="results/{id}", connection="AzureWebJobsStorage")
def copy(msg: func.QueueMessage, out: func.Out[str]) -> None:
    out.set(msg.get_body().decode())

"""The trigger parameter is annotated with a type its binding cannot produce."""
import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="work", connection="AzureWebJobsStorage")
def wrong(msg: func.InputStream) -> None:
    pass

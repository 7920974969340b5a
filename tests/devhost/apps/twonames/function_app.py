"""A module with two names for one FunctionApp (``application = app``): the worker refuses it."""
import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="work", connection="")
def work(msg: func.QueueMessage) -> None:
    pass


application = app

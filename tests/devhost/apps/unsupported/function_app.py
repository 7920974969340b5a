"""Uses a Cosmos DB trigger, which devhost refuses by name."""
import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="fine", connection="AzureWebJobsStorage")
def fine(msg: func.QueueMessage) -> None:
    pass


@app.function_name("changes")
@app.cosmos_db_trigger(arg_name="docs", connection="COSMOS", database_name="db", container_name="c",
                       lease_container_name="leases", create_lease_container_if_not_exists=True)
def changes(docs: func.DocumentList) -> None:
    pass

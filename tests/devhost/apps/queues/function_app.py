"""Queue-triggered test app: body 'ok' succeeds, 'fail' always raises, 'flaky:N' raises N times."""
import asyncio
import threading
import time

import azure.functions as func

app = func.FunctionApp()
CALLS: list[dict] = []
ASYNC_CALLS: list[dict] = []
_seen: dict[str, int] = {}
_lock = threading.Lock()
ACTIVE = {"now": 0, "max": 0}


def reset() -> None:
    CALLS.clear()
    ASYNC_CALLS.clear()
    _seen.clear()
    ACTIVE.update(now=0, max=0)


@app.function_name("finalize")
@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def finalize(msg: func.QueueMessage) -> None:
    body = msg.get_body()
    with _lock:
        ACTIVE["now"] += 1
        ACTIVE["max"] = max(ACTIVE["max"], ACTIVE["now"])
        CALLS.append({"id": msg.id, "body": body, "dequeue_count": msg.dequeue_count,
                      "insertion_time": msg.insertion_time, "expiration_time": msg.expiration_time,
                      "pop_receipt": msg.pop_receipt, "type": type(msg)})
        _seen[msg.id] = _seen.get(msg.id, 0) + 1
        attempt = _seen[msg.id]
    try:
        if body.startswith(b"sleep:"):
            time.sleep(float(body.split(b":")[1]))
        if body == b"fail":
            raise RuntimeError("always fails")
        if body.startswith(b"flaky:") and attempt <= int(body.split(b":")[1]):
            raise RuntimeError(f"transient failure {attempt}")
    finally:
        with _lock:
            ACTIVE["now"] -= 1


@app.function_name("finalize_async")
@app.queue_trigger(arg_name="item", queue_name="%ASYNC_QUEUE%", connection="", data_type=func.DataType.STRING)
async def finalize_async(item: str, context: func.Context) -> None:
    await asyncio.sleep(0)
    ASYNC_CALLS.append({"item": item, "invocation_id": context.invocation_id,
                        "function_name": context.function_name, "directory": context.function_directory})

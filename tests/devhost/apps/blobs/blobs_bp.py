"""Records every invocation. Content 'fail...' always raises; 'flaky:N...' raises N times."""
import logging
import threading

import azure.functions as func

bp = func.Blueprint()
CALLS: list[dict] = []
_attempts: dict[str, int] = {}
_lock = threading.Lock()


def reset() -> None:
    CALLS.clear()
    _attempts.clear()


def _record(blob: func.InputStream, source: str) -> None:
    data = blob.read()
    with _lock:
        key = f"{blob.name}|{(blob.blob_properties or {}).get('ETag')}"
        _attempts[key] = _attempts.get(key, 0) + 1
        CALLS.append({"source": source, "name": blob.name, "uri": blob.uri, "length": blob.length,
                      "data": data, "properties": blob.blob_properties, "metadata": blob.metadata,
                      "attempt": _attempts[key], "type": type(blob)})
        attempt = _attempts[key]
    logging.info("processed %s (%d bytes)", blob.name, len(data))
    if data.startswith(b"fail"):
        raise RuntimeError(f"cannot process {blob.name}")
    if data.startswith(b"flaky:"):
        if attempt <= int(data.split(b":")[1][:1]):
            raise RuntimeError(f"transient failure {attempt} for {blob.name}")


@bp.function_name("intake")
@bp.blob_trigger(arg_name="jobfile", path="%IN_CONTAINER%/{name}", connection="DATA",
                 source=func.BlobSource.LOGS_AND_CONTAINER_SCAN)
def intake(jobfile: func.InputStream) -> None:
    _record(jobfile, "scan")


@bp.function_name("events")
@bp.blob_trigger(arg_name="blob", path="%EG_CONTAINER%/jobs/{name}.json", connection="DATA",
                 source=func.BlobSource.EVENT_GRID)
def events(blob: func.InputStream) -> None:
    _record(blob, "eventgrid")

"""The blob trigger, in two stages as the storage extension runs it.

1. Detection (``BlobScanner``): list each watched container; for every blob matching the
   trigger path, look up the receipt
   ``azure-webjobs-hosts/blobreceipts/<hostId>/Host.Functions.<name>/<ETag>/<container>/<blob>``.
   A completed receipt means this version was handled. Otherwise create the receipt
   (``Incomplete``, If-None-Match: *), take a 30 s lease on it, check again, put a
   BlobTriggerMessage on the host's queue ``azure-webjobs-blobtrigger-<hostId>``, mark the
   receipt complete and release the lease. Two hosts sharing a host id therefore never
   enqueue the same blob version twice, and a restart does not re-trigger anything.
2. Execution (``BlobQueueHandler``, behind a `QueueListener` on that queue): read the blob;
   gone or changed since (another ETag) -> nothing to do; else run the function. A failure
   leaves the message to be retried (visibility 0); on the ``poisonBlobThreshold``-th (5)
   failure the message goes to ``webjobs-blobtrigger-poison`` in the blob's account.

``source="EventGrid"`` is served by the same polling: Event Grid cannot reach this machine.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from .errors import IndexingError
from .indexing import FunctionSpec
from .invoker import Datum, InvocationResult, Invoker
from .queue_listener import ReceivedMessage
from .settings import StorageConnection

__all__ = ["BlobPathPattern", "BlobRegistration", "BlobScanner", "BlobQueueHandler",
           "HOSTS_CONTAINER", "POISON_QUEUE", "shared_queue_name", "receipt_name", "normalize_etag"]

log = logging.getLogger("devhost.blobs")

HOSTS_CONTAINER = "azure-webjobs-hosts"
RECEIPTS_DIR = "blobreceipts"
POISON_QUEUE = "webjobs-blobtrigger-poison"
RECEIPT_LEASE_SECONDS = 30
INCOMPLETE_KEY = "Incomplete"


def shared_queue_name(host_id: str) -> str:
    return f"azure-webjobs-blobtrigger-{host_id}"


def normalize_etag(etag: str | None) -> str:
    """ETags as the host writes them: the header form, quotes included."""
    e = (etag or "").strip()
    if e.startswith("W/"):
        e = e[2:]
    return e if e.startswith('"') else f'"{e}"'


def receipt_name(host_id: str, function_id: str, etag: str, container: str, blob_name: str) -> str:
    # The ETag goes before the blob name: blob names may contain slashes.
    return f"{RECEIPTS_DIR}/{host_id}/{function_id}/{etag}/{container}/{blob_name}"


class BlobPathPattern:
    """``container/prefix{param}suffix`` -> matcher with the binding data of a blob name."""

    def __init__(self, path: str) -> None:
        self.path = path
        container, _, blob = path.partition("/")
        if not container or "{" in container:
            raise IndexingError(f"devhost: blob trigger path '{path}': the container name must be a literal")
        self.container = container
        parts = re.split(r"(\{[^{}]*\})", blob)
        params = [p for p in parts if p.startswith("{")]
        regex, seen = "", 0
        for p in parts:
            if p.startswith("{"):
                name = p[1:-1].strip()
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    raise IndexingError(f"devhost: blob trigger path '{path}': invalid parameter '{p}'")
                seen += 1
                regex += f"(?P<{name}>.+)" if seen == len(params) else f"(?P<{name}>.+?)"
            else:
                regex += re.escape(p)
        if not blob:
            regex = ".+"
        self._regex = re.compile(f"^{regex}$", re.DOTALL)
        self.prefix = parts[0] if blob else ""

    def match(self, blob_name: str) -> dict[str, str] | None:
        m = self._regex.match(blob_name)
        return None if m is None else m.groupdict()


@dataclass
class BlobRegistration:
    spec: FunctionSpec
    pattern: BlobPathPattern
    connection: StorageConnection
    blob_service: Any
    _queue_service: Any = field(default=None, repr=False)

    @property
    def queue_service(self) -> Any:
        if self._queue_service is None:
            self._queue_service = self.connection.queue_service_client()
        return self._queue_service


def _blob_url(blob_client: Any) -> str:
    # Never hand out (or log) a SAS: strip any query string.
    return blob_client.url.split("?", 1)[0]


class BlobScanner:
    """Stage 1: detect new blob versions and enqueue them exactly once per host id."""

    def __init__(self, host_id: str, registrations: list[BlobRegistration], hosts_container: Any,
                 shared_queue: Any) -> None:
        self.host_id = host_id
        self.registrations = registrations
        self.hosts_container = hosts_container
        self.shared_queue = shared_queue
        self._done: set[tuple[str, str, str, str]] = set()
        self._missing_logged: set[tuple[str, str]] = set()
        self._queue_ready = False

    def scan_once(self, function_name: str | None = None) -> int:
        """One pass over the watched containers; returns how many blob versions were enqueued."""
        enqueued = 0
        for reg in self.registrations:
            if function_name is not None and reg.spec.name != function_name:
                continue
            container = reg.blob_service.get_container_client(reg.pattern.container)
            try:
                blobs = list(container.list_blobs(name_starts_with=reg.pattern.prefix or None))
            except ResourceNotFoundError:
                missing = (reg.spec.name, reg.pattern.container)
                if missing not in self._missing_logged:
                    log.warning("Function '%s': container '%s' does not exist (yet); waiting for it",
                                reg.spec.name, reg.pattern.container)
                    self._missing_logged.add(missing)
                continue
            self._missing_logged.discard((reg.spec.name, reg.pattern.container))
            for b in blobs:
                if reg.pattern.match(b.name) is None:
                    continue
                etag = normalize_etag(b.etag)
                key = (reg.spec.function_id, reg.pattern.container, b.name, etag)
                if key in self._done:
                    continue
                outcome = self._try_trigger(reg, b.name, etag, getattr(b.blob_type, "value", None) or str(b.blob_type))
                if outcome in ("done", "enqueued"):
                    self._done.add(key)
                if outcome == "enqueued":
                    enqueued += 1
        return enqueued

    # -- receipts (BlobTriggerExecutor) -----------------------------------------------------
    def _receipt(self, reg: BlobRegistration, blob_name: str, etag: str) -> Any:
        return self.hosts_container.get_blob_client(
            receipt_name(self.host_id, reg.spec.function_id, etag, reg.pattern.container, blob_name))

    @staticmethod
    def _read(receipt: Any) -> bool | None:
        """None: no receipt; True: completed; False: incomplete."""
        try:
            md = receipt.get_blob_properties().metadata or {}
        except ResourceNotFoundError:
            return None
        return not any(k.lower() == INCOMPLETE_KEY.lower() for k in md)

    def _try_create(self, receipt: Any) -> bool:
        for attempt in (1, 2):
            try:
                receipt.upload_blob(b"", metadata={INCOMPLETE_KEY: "true"}, overwrite=True,
                                    match_condition=MatchConditions.IfMissing)
                return True
            except ResourceExistsError:
                return False
            except ResourceNotFoundError:
                if attempt == 2:
                    raise
                try:
                    self.hosts_container.create_container()
                except ResourceExistsError:
                    pass
            except HttpResponseError as e:
                if e.status_code in (409, 412):
                    return False
                raise
        return False

    @staticmethod
    def _try_lease(receipt: Any) -> Any:
        try:
            return receipt.acquire_lease(lease_duration=RECEIPT_LEASE_SECONDS)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as e:
            if e.status_code == 409:  # LeaseAlreadyPresent: another host is on it
                return None
            raise

    def _try_trigger(self, reg: BlobRegistration, blob_name: str, etag: str, blob_type: str) -> str:
        receipt = self._receipt(reg, blob_name, etag)
        state = self._read(receipt)
        if state is True:
            log.debug("Blob '%s/%s' will be skipped for function '%s' because this blob with ETag "
                      "'%s' has already been processed.", reg.pattern.container, blob_name,
                      reg.spec.name, etag)
            return "done"
        if state is None and not self._try_create(receipt):
            return "busy"  # someone else just created it; try again on a later poll
        lease = self._try_lease(receipt)
        if lease is None:
            return "busy"
        try:
            if self._read(receipt) is True:
                return "done"
            message = {"Type": "BlobTrigger", "FunctionId": reg.spec.function_id,
                       "BlobType": blob_type or "BlockBlob", "ContainerName": reg.pattern.container,
                       "BlobName": blob_name, "ETag": etag}
            self._enqueue(json.dumps(message, separators=(",", ":")))
            log.info("Blob '%s/%s' (ETag %s) detected for function '%s'%s; queued on '%s'",
                     reg.pattern.container, blob_name, etag, reg.spec.name,
                     " (Event Grid delivery simulated by polling)" if reg.spec.source == "EventGrid" else "",
                     self.shared_queue.queue_name)
            self._mark_completed(receipt, lease)
            return "enqueued"
        finally:
            try:
                lease.release()
            except HttpResponseError:
                pass

    def _enqueue(self, text: str) -> None:
        content = base64.b64encode(text.encode("utf-8")).decode("ascii")
        try:
            self.shared_queue.send_message(content)
        except ResourceNotFoundError:
            try:
                self.shared_queue.create_queue()
            except ResourceExistsError:
                pass
            self.shared_queue.send_message(content)

    @staticmethod
    def _mark_completed(receipt: Any, lease: Any) -> None:
        md = {k: v for k, v in (receipt.get_blob_properties().metadata or {}).items()
              if k.lower() != INCOMPLETE_KEY.lower()}
        try:
            receipt.set_blob_metadata(md, lease=lease)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as e:
            if e.status_code != 412:  # lease lost: don't mark complete
                raise


class BlobQueueHandler:
    """Stage 2: run the function for one BlobTriggerMessage (BlobQueueTriggerExecutor)."""

    def __init__(self, registrations: list[BlobRegistration], invoker: Invoker) -> None:
        self.by_id = {r.spec.function_id: r for r in registrations}
        self.invoker = invoker

    def registration_for(self, msg: ReceivedMessage) -> BlobRegistration | None:
        try:
            return self.by_id.get(json.loads(msg.text).get("FunctionId"))
        except (ValueError, AttributeError):
            return None

    def __call__(self, msg: ReceivedMessage) -> tuple[bool, InvocationResult | None]:
        try:
            data = json.loads(msg.text)
            function_id, container, name, etag = (data["FunctionId"], data["ContainerName"],
                                                  data["BlobName"], data["ETag"])
        except (ValueError, KeyError, TypeError):
            log.error("Blob trigger queue message %s is not a BlobTriggerMessage; failing it", msg.id)
            return False, None
        reg = self.by_id.get(function_id)
        if reg is None:
            log.warning("Blob trigger message for unknown function '%s' (another app with this host "
                        "id?); removing it", function_id)
            return True, None
        blob = reg.blob_service.get_blob_client(container, name)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            log.info("Blob '%s/%s' no longer exists; function '%s' is not run", container, name, reg.spec.name)
            return True, None
        if normalize_etag(props.etag) != etag:
            log.info("Blob '%s/%s' changed since it was detected (ETag %s, now %s); the new version "
                     "triggers on its own", container, name, etag, normalize_etag(props.etag))
            return True, None
        try:
            content = blob.download_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified).readall()
        except ResourceNotFoundError:
            return True, None
        except HttpResponseError as e:
            if e.status_code == 412:
                return True, None
            raise
        data_datum, metadata = self.trigger_data(reg, blob, props, container, name, content)
        reason = f"New blob detected({reg.spec.source}): {container}/{name}"
        result = self.invoker.invoke(reg.spec, data_datum, metadata, reason=reason,
                                     details={"blob": f"{container}/{name}", "etag": etag,
                                              "dequeue_count": msg.dequeue_count})
        return result.succeeded, result

    @staticmethod
    def trigger_data(reg: BlobRegistration, blob: Any, props: Any, container: str, name: str,
                     content: bytes) -> tuple[Datum, dict[str, Datum]]:
        """The trigger value and metadata the host sends the worker for a blob."""
        if reg.spec.data_type == "string":
            value = Datum(content.decode("utf-8", errors="replace"), "string")
        else:
            value = Datum(content, "bytes")

        def iso(d: _dt.datetime | None) -> str | None:
            return d.isoformat() if d else None

        settings = getattr(props, "content_settings", None)
        md5 = getattr(settings, "content_md5", None)
        properties = {
            "BlobType": getattr(getattr(props, "blob_type", None), "value", None) or str(props.blob_type),
            "ContentLength": props.size,
            "Length": props.size,
            "ContentType": getattr(settings, "content_type", None),
            "ContentEncoding": getattr(settings, "content_encoding", None),
            "ContentLanguage": getattr(settings, "content_language", None),
            "ContentMD5": base64.b64encode(md5).decode() if md5 else None,
            "ETag": normalize_etag(props.etag),
            "LastModified": iso(props.last_modified),
            "CreatedOn": iso(getattr(props, "creation_time", None)),
        }
        metadata: dict[str, Datum] = {
            "BlobTrigger": Datum(f"{container}/{name}", "string"),
            "Uri": Datum(_blob_url(blob), "string"),
            "Properties": Datum(json.dumps(properties), "json"),
            "Metadata": Datum(json.dumps(dict(props.metadata or {})), "json"),
            "sys": Datum(json.dumps({"MethodName": reg.spec.name,
                                     "UtcNow": _dt.datetime.now(_dt.UTC).isoformat(),
                                     "RandGuid": str(uuid.uuid4())}), "json"),
        }
        for k, v in (reg.pattern.match(name) or {}).items():
            metadata[k] = Datum(v, "string")
        return value, metadata


def poison_queue_for(handler: BlobQueueHandler, fallback: Callable[[], Any]) -> Callable[[ReceivedMessage], Any]:
    """The poison queue lives in the triggering blob's account (host storage as a fallback)."""

    def pick(msg: ReceivedMessage) -> Any:
        reg = handler.registration_for(msg)
        if reg is not None:
            try:
                return reg.queue_service.get_queue_client(POISON_QUEUE)
            except Exception:  # e.g. identity connection without a queue URI
                pass
        return fallback()

    return pick

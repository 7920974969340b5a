"""Blob and queue access: clients, conditional JSON records, streaming, SAS minting.

SAS URLs are secrets: nothing here logs one, and errors carry blob names, never URLs.
"""
from __future__ import annotations

import base64
import bisect
import hashlib
import io
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar
from urllib.parse import quote

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    ContentSettings,
    UserDelegationKey,
    generate_blob_sas,
    generate_container_sas,
)
from azure.storage.queue import QueueClient, QueueServiceClient

from conventions import scrub as secret_text
from shared import blob_rest, threads
from shared.blob_rest import listing
from shared.errors import BatchdropError, Conflict, InputNotFound
from shared.settings import Settings

log = logging.getLogger(__name__)

SAS_CLOCK_SKEW = timedelta(minutes=15)
MAX_SAS_LIFETIME = timedelta(days=7) - timedelta(hours=1)
BLOCK_SIZE = 4 * 1024 * 1024
T = TypeVar("T")


def _credential(settings: Settings) -> TokenCredential:
    """The app's one identity (shared.identity): the same as Batch, Event Grid and Key Vault use."""
    from shared.identity import credential

    return credential(settings)


def _transport(pool_size: int):
    """A connection pool as large as our parallelism (the default 10 would churn connections)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=True)


def blob_service(settings: Settings) -> BlobServiceClient:
    """Connection string when given (Azurite, account key), else the app's identity (shared.identity)."""
    s = settings.storage
    # bounded ranges: a download holds at most BLOCK_SIZE at a time, whatever the blob's size
    options = dict(max_single_put_size=BLOCK_SIZE, max_single_get_size=BLOCK_SIZE, max_chunk_get_size=BLOCK_SIZE,
                   transport=_transport(settings.upload_concurrency * 2 + 8))
    if s.connection_string is not None:
        return BlobServiceClient.from_connection_string(s.connection_string.reveal(), **options)
    if s.blob_service_uri is None:  # Settings.from_mapping refuses identity-based storage without it
        raise ValueError("identity-based storage needs a blob service URI")
    return BlobServiceClient(s.blob_service_uri, credential=_credential(settings), **options)


def queue_client(settings: Settings, name: str) -> QueueClient:
    """Messages are base64, which is what the Functions queue trigger expects by default. Connection
    string when given, else the app's identity (shared.identity)."""
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    s = settings.storage
    policies = dict(message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy())
    if s.connection_string is not None:
        service = QueueServiceClient.from_connection_string(s.connection_string.reveal())
    elif s.queue_service_uri is None:  # Settings.from_mapping refuses identity-based storage without it
        raise ValueError("identity-based storage needs a queue service URI")
    else:
        service = QueueServiceClient(s.queue_service_uri, credential=_credential(settings))
    return service.get_queue_client(name, **policies)


def ensure_container(service: BlobServiceClient, name: str, metadata: dict[str, str] | None = None) -> None:
    """Idempotent: an existing container is fine."""
    try:
        service.create_container(name, metadata=metadata)
    except ResourceExistsError:
        pass


def delete_container(service: BlobServiceClient, name: str) -> bool:
    """Idempotent: returns False when it was already gone."""
    try:
        service.delete_container(name)
        return True
    except ResourceNotFoundError:
        return False


@dataclass(frozen=True)
class Record:
    """A JSON document with the ETag it was read at (for conditional writes)."""

    data: dict
    etag: str


JSON_TYPE = "application/json"


class JsonBlobs:
    """JSON documents in one container with optimistic concurrency (ETags). Plain requests
    (shared.blob_rest): the monitor reads and writes every active run's status each tick."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._container = blob_rest.container(service, container)

    def read(self, name: str) -> Record | None:
        found = blob_rest.get(self._container, name)
        return None if found is None else Record(json.loads(found[0]), found[1])

    def create(self, name: str, data: dict) -> Record:
        """Create only if absent (If-None-Match: *). Raises Conflict if it exists."""
        try:
            etag = blob_rest.put(self._container, name, _dump(data), JSON_TYPE, if_none_match="*")
        except ResourceExistsError:
            raise Conflict(f"{name} already exists") from None
        return Record(data, etag)

    def replace(self, name: str, data: dict, etag: str) -> Record:
        """Write only if unchanged since `etag` (If-Match). Raises Conflict otherwise."""
        try:
            return Record(data, blob_rest.put(self._container, name, _dump(data), JSON_TYPE, if_match=etag))
        except (ResourceModifiedError, ResourceNotFoundError):
            raise Conflict(f"{name} changed since it was read") from None

    def put(self, name: str, data: dict) -> None:
        """Unconditional write (for documents with a single writer, e.g. report.json)."""
        blob_rest.put(self._container, name, _dump(data), JSON_TYPE)

    def delete(self, name: str) -> None:
        try:
            self._container.get_blob_client(name).delete_blob()
        except ResourceNotFoundError:
            pass

    def names(self, prefix: str) -> list[str]:
        return [b.name for b in listing(self._container, prefix)]


def _dump(data: dict) -> bytes:
    return json.dumps(data, indent=2, sort_keys=False).encode() + b"\n"


@dataclass(frozen=True)
class BlobInfo:
    container: str
    name: str
    size: int
    etag: str


def blob_info(service: BlobServiceClient, container: str, name: str, field: str) -> BlobInfo:
    """Properties of a blob the job file points at; InputNotFound names the field when it is missing."""
    try:
        props = service.get_blob_client(container, name).get_blob_properties()
    except ResourceNotFoundError:
        raise InputNotFound(
            f"blob '{container}/{name}' does not exist; upload it first or fix the path", field=field
        ) from None
    return BlobInfo(container, name, props.size, props.etag)


@dataclass(frozen=True)
class PrefixListing:
    """Blobs under a prefix in name order, and where each page of the listing began: (index in
    `blobs` of the page's first blob, the service's marker that lists from that page on)."""

    blobs: list[BlobInfo]
    pages: tuple[tuple[int, str], ...]

    def marker_of(self, index: int) -> str:
        """The marker of the page holding blobs[index]: a listing from it lists that blob again."""
        at = bisect.bisect_right(self.pages, index, key=lambda page: page[0]) - 1
        return self.pages[at][1] if at >= 0 else ""


def list_prefix(service: BlobServiceClient, container: str, prefix: str, field: str,
                limit: int | None = None, marker: str = "") -> list[BlobInfo]:
    """Blobs under a prefix in name order; InputNotFound when the container is missing or nothing is there.
    With `limit`, stops after limit + 1 blobs (enough to tell that there are too many)."""
    return list_prefix_pages(service, container, prefix, field, limit, marker).blobs


def list_prefix_pages(service: BlobServiceClient, container: str, prefix: str, field: str,
                      limit: int | None = None, marker: str = "") -> PrefixListing:
    """`list_prefix` with its pages' markers, from the page of `marker` on ("": the first)."""
    most = None if limit is None else limit + 1
    blobs: list[BlobInfo] = []
    starts: list[tuple[int, str]] = []
    try:
        for page_marker, page in blob_rest.pages(blob_rest.container(service, container), prefix, blob_rest.PAGE,
                                                 marker):
            starts.append((len(blobs), page_marker))
            blobs.extend(BlobInfo(container, b.name, b.size, b.etag) for b in page)
            if most is not None and len(blobs) >= most:
                del blobs[most:]
                break
    except ResourceNotFoundError:
        raise InputNotFound(f"container '{container}' does not exist", field=field) from None
    if not blobs:
        raise InputNotFound(f"no blobs under '{container}/{prefix}'; upload the inputs first or fix the prefix",
                            field=field)
    if any(a.name >= b.name for a, b in zip(blobs, blobs[1:])):  # not the order the service promises
        return PrefixListing(sorted(blobs, key=lambda b: b.name), ())
    return PrefixListing(blobs, tuple(starts))


def read_chunks(service: BlobServiceClient, container: str, name: str, etag: str | None = None,
                offset: int = 0) -> Iterator[bytes]:
    """Stream a blob in chunks (bounded memory), from byte `offset` on. With `etag`, fails if the blob
    changed meanwhile."""
    from azure.core import MatchConditions

    kwargs: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    if offset:
        kwargs["offset"] = offset
    downloader = service.get_blob_client(container, name).download_blob(max_concurrency=2, **kwargs)
    yield from downloader.chunks()


def read_tail(service: BlobServiceClient, container: str, name: str, max_bytes: int) -> str | None:
    """The last `max_bytes` of a blob as text, or None if it does not exist."""
    client = service.get_blob_client(container, name)
    try:
        size = client.get_blob_properties().size
        offset = max(0, size - max_bytes)
        data = client.download_blob(offset=offset, length=size - offset).readall() if size else b""
    except ResourceNotFoundError:
        return None
    return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Committed:
    """A blob written by `commit_stream`: its size and digests (SHA-256 hex; MD5 base64, as the
    blob's Content-MD5 holds it), so users can verify what they download."""

    size: int
    sha256: str
    md5: str


MAX_BLOCKS = 50_000  # committed blocks per block blob (Azure Storage limit)


@dataclass(frozen=True)
class Staged:
    """Blocks `stage_stream` staged: their ids in order, the bytes they hold and their digests."""

    block_ids: tuple[str, ...]
    size: int
    sha256: str
    md5: str


def block_id(part: int, n: int) -> str:
    """The id of block `n` of part `part`: deterministic (a retried part re-stages the same blocks) and
    of one length for every block of a blob, as Azure Storage requires."""
    return base64.b64encode(f"{part:08d}-{n:08d}".encode()).decode()


def stage_stream(service: BlobServiceClient, container: str, name: str, chunks: Iterable[bytes], *,
                 part: int = 0, parallel: int = 4) -> Staged:
    """Stage a stream of chunks as uncommitted blocks of `name` (invisible to readers until a commit),
    up to `parallel` at once, in blocks of BLOCK_SIZE. Memory: about `parallel` + 1 blocks."""
    client = service.get_blob_client(container, name)
    block_ids: list[str] = []
    in_flight = threading.BoundedSemaphore(parallel)
    total = 0
    buffer = bytearray()
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)

    def stage(block: str, data: bytes) -> None:
        try:
            client.stage_block(block, data)
        finally:
            in_flight.release()

    with threads.submitting("stage", parallel) as submit:
        def flush() -> None:
            block_ids.append(block_id(part, len(block_ids)))
            in_flight.acquire()
            submit(stage, block_ids[-1], bytes(buffer))
            buffer.clear()

        for chunk in chunks:
            buffer += chunk
            total += len(chunk)
            sha256.update(chunk)
            md5.update(chunk)
            if len(buffer) >= BLOCK_SIZE:
                flush()
        if buffer:
            flush()
    return Staged(tuple(block_ids), total, sha256.hexdigest(), base64.b64encode(md5.digest()).decode())


def commit_blocks(service: BlobServiceClient, container: str, name: str, block_ids: Sequence[str],
                  md5: str | None = None) -> None:
    """Make the staged blocks, in this order, the blob's content in one call (readers see all of it or
    nothing); `md5` (base64) becomes its Content-MD5. An empty list writes an empty blob."""
    if len(block_ids) > MAX_BLOCKS:
        raise BatchdropError(f"'{container}/{name}' would need {len(block_ids):,} blocks; a block blob holds at "
                             f"most {MAX_BLOCKS:,} (about 195 GiB in blocks of {BLOCK_SIZE // 2**20} MiB)")
    client = service.get_blob_client(container, name)
    settings = ContentSettings(content_md5=bytearray(base64.b64decode(md5))) if md5 else None
    if not block_ids:
        client.upload_blob(b"", overwrite=True, content_settings=settings)
        return
    client.commit_block_list([BlobBlock(block_id=block) for block in block_ids], content_settings=settings)


def digests(service: BlobServiceClient, container: str, name: str) -> Committed:
    """A blob's size, SHA-256 and MD5, read through once (for a blob whose parts were staged by
    several processes, none of which saw all of it)."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    for chunk in read_chunks(service, container, name):
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return Committed(size, sha256.hexdigest(), base64.b64encode(md5.digest()).decode())


def set_content_md5(service: BlobServiceClient, container: str, name: str, md5: str) -> None:
    client = service.get_blob_client(container, name)
    props = client.get_blob_properties()
    content = props.content_settings
    content.content_md5 = bytearray(base64.b64decode(md5))
    client.set_http_headers(content_settings=content)


def commit_stream(service: BlobServiceClient, container: str, name: str, chunks: Iterable[bytes],
                  parallel: int = 4) -> Committed:
    """Write a blob from a stream of chunks so that readers see all of it or nothing.

    Blocks are staged (uncommitted blocks are invisible), then committed in order in one call,
    with the whole blob's Content-MD5; a crash before the commit leaves no visible blob, and a
    rerun simply stages and commits again. Memory: about `parallel` + 1 blocks.
    """
    staged = stage_stream(service, container, name, chunks, parallel=parallel)
    commit_blocks(service, container, name, staged.block_ids, staged.md5)
    return Committed(staged.size, staged.sha256, staged.md5)


class SasMinter:
    """Container SAS tokens: account key SAS on a connection string, user delegation SAS on managed identity.

    Start times are backdated for clock skew; expiry is chosen by the caller from the run's timeout.
    """

    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service
        self._delegation_key: UserDelegationKey | None = None
        self._base = service.url.split("?", 1)[0].rstrip("/")  # a SAS connection string puts one here

    def container_url(self, container: str, permission: ContainerSasPermissions, expiry: datetime) -> str:
        token = self._sign(generate_container_sas, expiry, container_name=container, permission=permission)
        return f"{self._base}/{container}?{token}"

    def blob_read_url(self, container: str, name: str, expiry: datetime) -> str:
        """Read-only access to one blob (a user's input, config or resource file)."""
        token = self._sign(generate_blob_sas, expiry, container_name=container, blob_name=name,
                           permission=BlobSasPermissions(read=True))
        return f"{self._base}/{container}/{quote(name)}?{token}"

    def _sign(self, generate, expiry: datetime, **kwargs) -> str:
        now = datetime.now(UTC)
        start = now - SAS_CLOCK_SKEW
        # a user delegation key lives at most 7 days, and a SAS cannot outlive its key
        expiry = min(expiry, now + MAX_SAS_LIFETIME)
        account_key = getattr(self._service.credential, "account_key", None)
        if account_key:
            return generate(self._service.account_name, account_key=account_key, expiry=expiry, start=start, **kwargs)
        if self._delegation_key is None:
            self._delegation_key = self._service.get_user_delegation_key(start, now + MAX_SAS_LIFETIME)
        return generate(self._service.account_name, user_delegation_key=self._delegation_key,
                        expiry=expiry, start=start, **kwargs)


def blob_url(container_sas_url: str, blob_name: str) -> str:
    """URL of a blob inside a container SAS URL (keeps the token)."""
    base, _, token = container_sas_url.partition("?")
    return f"{base}/{quote(blob_name)}?{token}"


# The one secret pattern of the repository (conventions.scrub): group 1 is the name kept, the rest the secret.
_SECRETS = secret_text.PATTERN


def scrub(text: str) -> str:
    """Text safe to show a user or a log: SAS signatures, account keys, SharedKey and bearer
    authorizations, client secrets and passwords replaced (conventions.scrub, the scrubber devhost and
    batchemu use too). Used on anything that comes back from a service or a task (error messages,
    stderr tails)."""
    return secret_text.scrub(text)


QUEUE_BEING_DELETED_WAIT_S = 90.0  # Azure keeps a deleted queue's name for at least 30 seconds


def ensure_queue(client: QueueClient, *, wait_s: float = QUEUE_BEING_DELETED_WAIT_S,
                 sleep: Callable[[float], None] | None = None) -> None:
    """Idempotent, also when many callers run it at once: when it returns, the queue exists.

    A queue that exists already, or that another caller creates at the same moment, is success
    (QueueAlreadyExists, which the SDK raises as ResourceExistsError, also for the 204 an identical
    create gets). A queue still being deleted is not: the SDK raises that as ResourceExistsError too,
    so it is told apart by its code and created again once the service allows it, for up to `wait_s`
    seconds (then the error is raised)."""
    import time

    pause = sleep or time.sleep
    deadline = time.monotonic() + wait_s
    delay = 1.0
    while True:
        try:
            client.create_queue()
            return
        except ResourceExistsError as e:
            if getattr(e, "error_code", None) != "QueueBeingDeleted":
                return  # it exists: created before, or by another caller just now
            if time.monotonic() + delay > deadline:
                raise
        pause(delay)
        delay = min(delay * 2, 10.0)


def queue_send(client: QueueClient, text: str) -> None:
    """Send a message; a missing queue is created first (however many senders race to create it)."""
    try:
        client.send_message(text)
    except ResourceNotFoundError:
        ensure_queue(client)
        client.send_message(text)


# ----------------------------------------------------------------------------- bounded reads of task logs

SECRET_CONTEXT_BYTES = 16 * 1024  # read before a cut so a secret that straddles it is still recognised
_SECRETS_BYTES = re.compile(_SECRETS.pattern.encode(), re.IGNORECASE)


def read_last(service: BlobServiceClient, container: str, name: str, max_bytes: int) -> tuple[bytes, int] | None:
    """The last `max_bytes` bytes of a blob and the blob's whole size, or None if it does not exist.

    One properties call and one ranged read (pinned to the ETag it saw): memory is bounded by
    `max_bytes` whatever the blob's size."""
    from azure.core import MatchConditions

    client = service.get_blob_client(container, name)
    try:
        props = client.get_blob_properties()
        offset = max(0, props.size - max_bytes)
        if props.size == 0:
            return b"", 0
        data = client.download_blob(offset=offset, length=props.size - offset, etag=props.etag,
                                    match_condition=MatchConditions.IfNotModified).readall()
    except ResourceNotFoundError:
        return None
    return data, props.size


def scrub_bytes(data: bytes) -> bytes:
    """`scrub` on raw bytes: the same secrets replaced, every other byte kept as it was (a log need not be UTF-8)."""
    return _SECRETS_BYTES.sub(lambda m: m.group(1) + b"<redacted>", data)


def scrub_tail(data: bytes, start: int) -> tuple[bytes, int]:
    """``data[start:]`` scrubbed, for a tail cut out of a longer text, and where it really starts.

    `data` holds up to SECRET_CONTEXT_BYTES before `start`: a secret that straddles the cut is
    recognised there and left out whole (its remnant after the cut, missing its ``sig=``, would
    not be recognised by `scrub`). Returns (scrubbed bytes, offset in `data` they start at)."""
    for m in _SECRETS_BYTES.finditer(data, max(0, start - SECRET_CONTEXT_BYTES)):
        if m.start() >= start:
            break
        start = max(start, m.end())
    return scrub_bytes(data[start:]), start


# ----------------------------------------------------------------------------- a blob as a seekable file


class BlobReader(io.RawIOBase):
    """A read-only, seekable file object over one blob that reads only the ranges asked for.

    Guarantees: a read of n bytes is a ranged download of at most n bytes (none past the end), so a
    caller that reads a multi-GB blob's tail (e.g. a zip's central directory) transfers only that;
    every read sees the version of the blob this reader was opened on (each is conditional on its
    ETag): a blob replaced meanwhile raises `ResourceModifiedError`, never mixes two versions.
    """

    def __init__(self, client: BlobClient, size: int, etag: str) -> None:
        super().__init__()
        self._client = client
        self.size = size
        self.etag = etag
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        memoryview(buffer)[:len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        """The rest of the blob in one ranged download (the default would read 8 KiB per request)."""
        return self._read(self.size - self._pos)

    def _read(self, n: int) -> bytes:
        from azure.core import MatchConditions

        n = min(n, self.size - self._pos)
        if n <= 0:
            return b""
        data = self._client.download_blob(offset=self._pos, length=n, etag=self.etag,
                                          match_condition=MatchConditions.IfNotModified).readall()
        self._pos += len(data)
        return data


def open_blob_seekable(service: BlobServiceClient, container: str, name: str, etag: str | None = None) -> BlobReader:
    """A `BlobReader` over a blob, pinned to `etag` when given (else to the ETag it has now).

    Raises ResourceNotFoundError when the blob does not exist, ResourceModifiedError when it no longer
    has `etag`."""
    from azure.core import MatchConditions

    client = service.get_blob_client(container, name)
    condition: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    props = client.get_blob_properties(**condition)
    return BlobReader(client, props.size, props.etag)


# ----------------------------------------------------------------------------- the pipeline steps' blob and queue calls
# Every blob and queue call of accept, watch, finalize, sweep and cleanup goes through here; the SDK
# errors a step handles arrive as the domain errors below.


class BlobChanged(BatchdropError):
    """A blob read pinned to one version (its ETag) changed or vanished meanwhile."""


class StorageError(BatchdropError):
    """Storage refused a request or could not be reached."""


def blob_version(service: BlobServiceClient, container: str, name: str) -> BlobInfo | None:
    """The blob's size and version, or None when it does not exist."""
    try:
        props = service.get_blob_client(container, name).get_blob_properties()
    except ResourceNotFoundError:
        return None
    return BlobInfo(container, name, props.size, props.etag)


def read_pinned(service: BlobServiceClient, container: str, name: str, etag: str) -> bytes:
    """The whole blob as it was at `etag`; BlobChanged when it is no longer that version."""
    from azure.core import MatchConditions

    try:
        return service.get_blob_client(container, name).download_blob(
            etag=etag, match_condition=MatchConditions.IfNotModified).readall()
    except (ResourceModifiedError, ResourceNotFoundError):
        raise BlobChanged(f"'{container}/{name}' changed while it was read") from None


def read_chunks_pinned(service: BlobServiceClient, container: str, name: str, etag: str,
                       offset: int = 0) -> Iterator[bytes]:
    """`read_chunks` pinned to `etag`: BlobChanged (at any point of the stream) when the blob is
    replaced meanwhile."""
    try:
        yield from read_chunks(service, container, name, etag=etag, offset=offset)
    except ResourceModifiedError:
        raise BlobChanged(f"'{container}/{name}' changed while it was read") from None


def inspect_pinned(service: BlobServiceClient, container: str, name: str, etag: str,
                   inspect: Callable[[Any], T]) -> T:
    """`inspect` applied to the blob as a seekable file pinned to `etag` (see BlobReader);
    BlobChanged when it changed or vanished before or during the inspection."""
    try:
        return inspect(open_blob_seekable(service, container, name, etag=etag))
    except (ResourceModifiedError, ResourceNotFoundError):
        raise BlobChanged(f"'{container}/{name}' changed while it was being read") from None


def put_blob(service: BlobServiceClient, container: str, name: str, data: bytes,
             content_type: str | None = None) -> None:
    """Create or replace a small blob in one call."""
    blob_rest.put(blob_rest.container(service, container), name, data, content_type or "application/octet-stream")


def upload_many(service: BlobServiceClient, container: str, blobs: Iterable[tuple[str, bytes]],
                concurrency: int) -> int:
    """Upload (name, data) pairs in parallel, in order of production; returns how many. At most
    2 x `concurrency` are in flight, so memory stays flat whatever the input's length; a
    producer error stops the uploads not yet started and is raised, and so does a failed upload
    (storage down: the trigger's retry starts over, rather than this one trying every shard)."""
    client = blob_rest.container(service, container)
    in_flight = threading.BoundedSemaphore(concurrency * 2)
    failed = threading.Event()

    def upload(name: str, data: bytes) -> None:
        try:
            blob_rest.put(client, name, data)
        except BaseException:
            failed.set()
            raise
        finally:
            in_flight.release()

    sent = 0
    with threads.submitting("upload", concurrency) as submit:
        for name, data in blobs:
            if failed.is_set():
                break
            in_flight.acquire()
            submit(upload, name, data)
            sent += 1
    return sent


def container_exists(service: BlobServiceClient, name: str) -> bool:
    return service.get_container_client(name).exists()


def blob_names(service: BlobServiceClient, container: str, prefix: str) -> list[str]:
    """Names of the blobs under `prefix`, in name order."""
    return [b.name for b in listing(blob_rest.container(service, container), prefix)]


def stream_blobs(service: BlobServiceClient, container: str, names: list[str],
                 ahead: int = 8) -> Iterator[Iterator[bytes]]:
    """Each blob as a stream of chunks, in the order given. The next few downloads start early
    (their first range, at most BLOCK_SIZE each), so many small blobs do not wait on one request
    at a time. A blob that vanished meanwhile is an error, never an empty stream."""
    pending_names = iter(names)

    client = blob_rest.container(service, container)

    def open_blob(name: str) -> Iterator[bytes]:
        return blob_rest.chunks(client, name, BLOCK_SIZE)

    pool = threads.pool("merge-read", ahead)
    pending = deque(pool.submit(open_blob, name) for name in islice(pending_names, ahead))
    try:
        while pending:
            future = pending.popleft()
            following = next(pending_names, None)
            if following is not None:
                pending.append(pool.submit(open_blob, following))
            yield future.result()
    finally:  # the reader stopped early or failed: no download of ours goes on
        threads.settle(list(pending), cancel=True)


def copy_blob(service: BlobServiceClient, container: str, name: str, target_container: str, target: str) -> int:
    """Stream a blob into another (committed once, see commit_stream); returns the bytes copied."""
    return commit_stream(service, target_container, target, read_chunks(service, container, name)).size


def blob_sizes(service: BlobServiceClient, container: str, prefix: str) -> dict[str, int]:
    """Name -> size of the blobs under `prefix` (one listing)."""
    return {b.name: b.size for b in listing(blob_rest.container(service, container), prefix)}


def read_optional(service: BlobServiceClient, container: str, name: str) -> bytes | None:
    """A small blob's bytes, or None when there is none (one request: finalize reads a manifest per task)."""
    found = blob_rest.get(blob_rest.container(service, container), name)
    return None if found is None else found[0]


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    metadata: dict[str, str]
    last_modified: datetime


def list_containers(service: BlobServiceClient, prefix: str) -> list[ContainerInfo]:
    """Containers whose name starts with `prefix`, with their metadata."""
    try:
        return [ContainerInfo(c.name, dict(c.metadata or {}), c.last_modified)
                for c in service.list_containers(name_starts_with=prefix, include_metadata=True)]
    except AzureError as e:
        raise StorageError(f"listing containers {prefix}*: {type(e).__name__}") from None


def remove_container(service: BlobServiceClient, name: str) -> bool:
    """`delete_container` with any other refusal as StorageError."""
    try:
        return delete_container(service, name)
    except AzureError as e:
        raise StorageError(f"deleting container {name}: {type(e).__name__}") from None


def account_url(service: BlobServiceClient) -> str:
    """The blob service's URL without any SAS token."""
    return service.url.split("?", 1)[0]

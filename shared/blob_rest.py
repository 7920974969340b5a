"""List Blobs, Put Blob and Get Blob as plain REST requests through the SDK's own pipeline.

The SDK models every answer and every blob client: its listing turns each entry into models
through a generic deserializer (about 1.3 ms a blob, three times what Azurite takes to answer:
2,000 blobs listed in 4 s, 1.2 s read this way), and each `upload_blob` of a container client
builds a blob client with its own serializers first (0.6-0.9 ms, as much as the request). Intake
uploads a shard per task, finalize lists every task output and the monitor reads and writes each
active run's status.json every tick, so these costs were paid per task or per run.
The requests here go through a container client's pipeline (its credential, retry and logging
policies) and read only what we use; errors are the SDK's exception types.
"""
from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlencode

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest, HttpResponse
from azure.storage.blob import BlobServiceClient, ContainerClient

PAGE = 5000  # the service's largest page


@functools.lru_cache(maxsize=256)
def container(service: BlobServiceClient, name: str) -> ContainerClient:
    """The service's client for container `name`, made once: making one costs as much as a request
    (it builds its own serializers), and the pipeline's few containers are used over and over."""
    return service.get_container_client(name)


@dataclass(frozen=True)
class Listed:
    name: str
    size: int
    etag: str


def listing(client: ContainerClient, prefix: str = "", page: int = PAGE) -> Iterator[Listed]:
    """The container's blobs under `prefix`, in name order, a page at a time. ResourceNotFoundError
    when the container does not exist (as the SDK's listing raises)."""
    for _marker, blobs in pages(client, prefix, page):
        yield from blobs


def pages(client: ContainerClient, prefix: str = "", page: int = PAGE,
          marker: str = "") -> Iterator[tuple[str, list[Listed]]]:
    """`listing`'s pages from `marker` on ("": from the first), each with the marker that asked for it:
    the service's own (opaque) continuation, so a listing from it later starts with that page."""
    while True:
        params = {"restype": "container", "comp": "list", "maxresults": str(page)}
        if prefix:
            params["prefix"] = prefix
        if marker:
            params["marker"] = marker
        # quoted here: azure-core puts `params` into the URL as they are (a marker holding "&" broke the request)
        url = client.url + ("&" if "?" in client.url else "?") + urlencode(params, quote_via=quote)
        request = HttpRequest("GET", url, headers={"x-ms-version": client.api_version, "Accept": "application/xml"})
        response = _send(client, request)
        if response.status_code == 404:
            raise ResourceNotFoundError(f"container '{client.container_name}' does not exist", response=response)
        response.raise_for_status()
        answer = ET.fromstring(response.content)
        yield marker, [_entry(blob) for blob in answer.iter("Blob")]
        marker = answer.findtext("NextMarker") or ""
        if not marker:
            return


def _entry(blob: ET.Element) -> Listed:
    name = blob.find("Name")
    text = name.text or "" if name is not None else ""
    if name is not None and name.get("Encoded") == "true":  # names with characters XML cannot carry
        text = unquote(text)
    return Listed(text, int(blob.findtext("Properties/Content-Length") or 0),
                  blob.findtext("Properties/Etag") or "")


def put(client: ContainerClient, name: str, data: bytes, content_type: str = "application/octet-stream",
        if_match: str | None = None, if_none_match: str | None = None) -> str:
    """Put Blob: create or replace the block blob `name` with `data` in one request; its new ETag.
    ResourceNotFoundError when the container (or, with `if_match`, the blob) is missing,
    ResourceModifiedError when `if_match` no longer matches, ResourceExistsError when `if_none_match`
    is "*" and the blob exists."""
    headers = {"x-ms-version": client.api_version, "x-ms-blob-type": "BlockBlob", "Content-Type": content_type}
    if if_match is not None:
        headers["If-Match"] = if_match
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    response = _send(client, HttpRequest("PUT", _blob_url(client, name), content=data, headers=headers))
    if response.status_code == 201:
        return str(response.headers.get("ETag", ""))
    if response.status_code == 404:
        raise ResourceNotFoundError(f"{name}: the blob or its container does not exist", response=response)
    if response.status_code == 412:
        raise ResourceModifiedError(f"{name} changed since it was read", response=response)
    if response.status_code == 409 and if_none_match == "*":
        raise ResourceExistsError(f"{name} already exists", response=response)
    raise HttpResponseError(f"uploading {name}: HTTP {response.status_code}", response=response)


def get(client: ContainerClient, name: str) -> tuple[bytes, str] | None:
    """Get Blob: the whole blob and its ETag, or None when there is none (for small documents)."""
    response = _send(client, HttpRequest("GET", _blob_url(client, name), headers={"x-ms-version": client.api_version}))
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise HttpResponseError(f"reading {name}: HTTP {response.status_code}", response=response)
    return response.content, str(response.headers.get("ETag", ""))


def read_range(client: ContainerClient, name: str, start: int, length: int,
               etag: str | None = None) -> tuple[bytes, int, str]:
    """Get Blob of bytes start .. start + length - 1 (fewer at the end): (the bytes, the blob's whole
    size, its ETag). ResourceNotFoundError when the blob is missing; with `etag`, ResourceModifiedError
    when it was replaced since."""
    headers = {"x-ms-version": client.api_version, "x-ms-range": f"bytes={start}-{start + length - 1}"}
    if etag is not None:
        headers["If-Match"] = etag
    response = _send(client, HttpRequest("GET", _blob_url(client, name), headers=headers))
    if response.status_code == 416 and start == 0:  # an empty blob has no first byte to give
        del headers["x-ms-range"]
        response = _send(client, HttpRequest("GET", _blob_url(client, name), headers=headers))
    if response.status_code == 404:
        raise ResourceNotFoundError(f"{name} does not exist", response=response)
    if response.status_code == 412:
        raise ResourceModifiedError(f"{name} changed while it was read", response=response)
    if response.status_code not in (200, 206):
        raise HttpResponseError(f"reading {name}: HTTP {response.status_code}", response=response)
    whole = str(response.headers.get("Content-Range", "")).rpartition("/")[2]
    size = int(whole) if whole.isdigit() else start + len(response.content)
    return response.content, size, str(response.headers.get("ETag", ""))


def chunks(client: ContainerClient, name: str, length: int) -> Iterator[bytes]:
    """The blob in ranges of `length` bytes, each read when the one before is consumed and pinned to
    the first one's ETag; the first is read at once (a prefetch reads it when the iterator is made)."""
    first, size, etag = read_range(client, name, 0, length)
    return _rest(client, name, length, first, size, etag)


def _rest(client: ContainerClient, name: str, length: int, first: bytes, size: int, etag: str) -> Iterator[bytes]:
    if first:
        yield first
    at = len(first)
    while at < size:
        data, _, _ = read_range(client, name, at, length, etag)
        if not data:
            raise HttpResponseError(f"reading {name}: no bytes at {at} of {size}")
        yield data
        at += len(data)


def _send(client: ContainerClient, request: HttpRequest) -> HttpResponse:
    """The request through the client's pipeline, its body read here: streamed, as the SDK's own
    downloads are, so the pipeline does not try to decode it by its content type (it fails on
    application/octet-stream, and would parse a listing's XML a second time)."""
    response = client._client._send_request(request, stream=True)
    response.read()
    return response


def _blob_url(client: ContainerClient, name: str) -> str:
    return f"{_base(client.url)}/{quote(name, safe='/~')}{_query(client.url)}"


def _base(url: str) -> str:
    return url.partition("?")[0].rstrip("/")


def _query(url: str) -> str:
    _, sep, query = url.partition("?")
    return sep + query

"""List Blobs, read straight from the service's XML pages.

The SDK's `list_blobs` turns every entry into its models through a generic deserializer: about
1.3 ms a blob, three times what Azurite takes to answer (2,000 blobs: 4 s listed through the SDK,
1.2 s read this way). Finalize lists every task output of a run, so that cost was paid once per
task. The request goes through the container client's own pipeline (its credential, retry and
logging policies); only the answer is read here, for the three properties we use.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlencode

from azure.core.exceptions import ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.storage.blob import ContainerClient

PAGE = 5000  # the service's largest page


@dataclass(frozen=True)
class Listed:
    name: str
    size: int
    etag: str


def listing(client: ContainerClient, prefix: str = "", page: int = PAGE) -> Iterator[Listed]:
    """The container's blobs under `prefix`, in name order, a page at a time. ResourceNotFoundError
    when the container does not exist (as the SDK's listing raises)."""
    marker = ""
    while True:
        params = {"restype": "container", "comp": "list", "maxresults": str(page)}
        if prefix:
            params["prefix"] = prefix
        if marker:
            params["marker"] = marker
        # quoted here: azure-core puts `params` into the URL as they are (a marker holding "&" broke the request)
        url = client.url + ("&" if "?" in client.url else "?") + urlencode(params, quote_via=quote)
        request = HttpRequest("GET", url, headers={"x-ms-version": client.api_version, "Accept": "application/xml"})
        response = client._client._send_request(request)  # the SDK's pipeline; only the parsing is ours
        if response.status_code == 404:
            raise ResourceNotFoundError(f"container '{client.container_name}' does not exist", response=response)
        response.raise_for_status()
        answer = ET.fromstring(response.content)
        for blob in answer.iter("Blob"):
            yield _entry(blob)
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

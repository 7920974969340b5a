"""Resource-file downloads and output-file uploads over plain HTTP (works with Azurite SAS URLs).

Files are streamed to/from disk over kept-alive connections (http_pool). Every request (a file
download, a container list page, a Put Blob, Put Block or Put Block List) is one attempt of
`StorageLink.run`, so transient failures are retried and an injected storage outage fails it; a
retried download starts its file from scratch. SAS tokens never appear in messages: URLs are
reported without their query string.
"""
from __future__ import annotations

import base64
import email.message
import functools
import glob
import mimetypes
import os
import shutil
import urllib.error
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from . import http_pool
from .transfer_retry import Stopped, StorageLink
from .util import strip_sas

CHUNK = 1024 * 1024
BLOCK_UPLOAD_THRESHOLD = 64 * 1024 * 1024
BLOCK_SIZE = 8 * 1024 * 1024
X_MS_VERSION = "2021-08-06"
TIMEOUT = 60

StopCheck = Callable[[], bool] | None  # true once the try was killed: stop transferring


class TransferError(Exception):
    def __init__(self, code: str, category: str, message: str, details: list | None = None):
        super().__init__(message)
        self.code = code
        self.category = category
        self.message = message
        self.details = details or []

    def failure_info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"category": self.category, "code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


def _split(url: str):
    base, _, query = url.partition("?")
    return base.rstrip("/"), query


def _blob_url(container_url: str, blob_name: str) -> str:
    base, query = _split(container_url)
    url = base + "/" + urllib.parse.quote(blob_name, safe="/")
    return url + ("?" + query if query else "")


def _safe_join(root: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(root, rel))
    root_n = os.path.normpath(root)
    if path != root_n and not path.startswith(root_n + os.sep):
        raise TransferError("ResourceFileCreateFailed", "usererror",
                            f"The resource file path '{rel}' is outside the task working directory")
    return path


def _download_error(exc: Exception, url: str, file_path: str) -> TransferError:
    details = [{"name": "FilePath", "value": file_path}, {"name": "Url", "value": strip_sas(url)}]
    if isinstance(exc, urllib.error.HTTPError):
        details.append({"name": "HttpStatusCode", "value": str(exc.code)})
        if exc.code == 404:
            return TransferError("BlobNotFound", "usererror", "One of the specified Azure Blob(s) is not found.",
                                 details)
        if exc.code in (401, 403):
            return TransferError("BlobAccessDenied", "usererror",
                                 "Access for one of the specified Azure Blob(s) is denied.", details)
        return TransferError("BlobDownloadMiscError", "servererror",
                             "Miscellaneous error encountered while downloading one of the specified Azure Blob(s).",
                             details)
    if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
        return TransferError("BlobDownloadTimedOut", "servererror",
                             "Timeout encountered while downloading one of the specified Azure Blob(s).", details)
    if isinstance(exc, OSError) and not isinstance(exc, (urllib.error.URLError, ConnectionError)):
        return TransferError("ResourceFileWriteFailed", "servererror", "Failure encountered writing resource file.",
                             details)
    reason = getattr(exc, "reason", exc)
    details.append({"name": "Reason", "value": strip_sas(str(reason))[:300]})
    return TransferError("BlobDownloadMiscError", "servererror",
                         "Miscellaneous error encountered while downloading one of the specified Azure Blob(s).",
                         details)


def _ended_downloading() -> TransferError:
    return TransferError("TaskEnded", "usererror", "Task was ended while downloading resource files.")


def _fetch_once(url: str, tmp: str, should_stop: StopCheck) -> None:
    """One attempt: the whole file into `tmp` (truncated first, so a retry starts from scratch)."""
    with http_pool.request("GET", url, {"x-ms-version": X_MS_VERSION}, timeout=TIMEOUT) as resp, \
            open(tmp, "wb") as out:
        while True:
            if should_stop and should_stop():
                raise _ended_downloading()
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            out.write(chunk)


def _fetch(link: StorageLink, url: str, dest: str, file_mode: str | None, display_path: str,
           should_stop: StopCheck = None) -> None:
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = dest + ".batchemu-part"
    try:
        link.run(lambda: _fetch_once(url, tmp, should_stop), "download", should_stop)
        os.replace(tmp, dest)
    except TransferError:
        raise
    except Stopped:
        raise _ended_downloading() from None
    except Exception as exc:
        raise _download_error(exc, url, display_path) from exc
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    if file_mode:
        os.chmod(dest, int(file_mode, 8))
    else:
        os.chmod(dest, 0o770)


def _list_page(url: str) -> ET.Element:
    with http_pool.request("GET", url, {"x-ms-version": X_MS_VERSION}, timeout=TIMEOUT) as resp:
        root = ET.parse(resp).getroot()
        resp.read()  # to its end, so the connection is kept
        return root


def _list_blobs(link: StorageLink, container_url: str, prefix: str | None,
                should_stop: StopCheck = None) -> Iterator[str]:
    base, query = _split(container_url)
    marker = ""
    while True:
        params = {"restype": "container", "comp": "list"}
        if prefix:
            params["prefix"] = prefix
        if marker:
            params["marker"] = marker
        url = base + "?" + "&".join(p for p in (query, urllib.parse.urlencode(params)) if p)
        try:
            root = link.run(functools.partial(_list_page, url), "download", should_stop)
        except Stopped:
            raise _ended_downloading() from None
        except Exception as exc:
            raise _download_error(exc, container_url, prefix or "") from exc
        for blob in root.iter("Blob"):
            name = blob.findtext("Name")
            if name:
                yield name
        marker = root.findtext("NextMarker") or ""
        if not marker:
            return


def download_resource_files(files: list[dict[str, Any]] | None, wd: str, link: StorageLink,
                            should_stop: StopCheck = None) -> None:
    for rf in files or []:
        if rf.get("autoStorageContainerName"):
            raise TransferError("BlobDownloadMiscError", "usererror",
                                "autoStorageContainerName is not supported by the emulator (there is no linked "
                                "auto-storage account); use storageContainerUrl with a SAS URL instead.",
                                [{"name": "AutoStorageContainerName", "value": rf["autoStorageContainerName"]}])
        if rf.get("httpUrl"):
            dest = _safe_join(wd, rf["filePath"])
            if os.path.isdir(dest):
                raise TransferError("ResourceFileCreateFailed", "usererror",
                                    f"The resource file path '{rf['filePath']}' is a directory")
            _fetch(link, rf["httpUrl"], dest, rf.get("fileMode"), rf["filePath"], should_stop)
        elif rf.get("storageContainerUrl"):
            target = _safe_join(wd, rf.get("filePath") or ".")
            for name in _list_blobs(link, rf["storageContainerUrl"], rf.get("blobPrefix"), should_stop):
                dest = _safe_join(target, name)
                _fetch(link, _blob_url(rf["storageContainerUrl"], name), dest, rf.get("fileMode"),
                       os.path.relpath(dest, wd), should_stop)


# ---- uploads ---------------------------------------------------------------------------------------------

_WILDCARDS = set("*?[")


def _has_wildcard(s: str) -> bool:
    return any(c in _WILDCARDS for c in s)


def match_output_files(pattern: str, wd: str, task_dir: str) -> list[tuple[str, str]]:
    """Returns [(local_path, relative_name_for_blob)] for a filePattern relative to the working dir."""
    pat = pattern.replace("\\", "/")
    if os.path.isabs(pat):
        full = os.path.normpath(pat)
    else:
        full = os.path.normpath(os.path.join(wd, pat))
    root = os.path.normpath(task_dir)
    if not (full == root or full.startswith(root + os.sep)):
        return []
    if not _has_wildcard(pat):
        return [(full, os.path.basename(full))] if os.path.isfile(full) else []
    parts = full.split(os.sep)
    base_parts = []
    for p in parts:
        if _has_wildcard(p):
            break
        base_parts.append(p)
    base = os.sep.join(base_parts) or os.sep
    out = []
    for path in sorted(glob.glob(full, recursive=True)):
        if os.path.isfile(path):
            real = os.path.normpath(path)
            if real.startswith(root + os.sep):
                out.append((real, os.path.relpath(real, base).replace(os.sep, "/")))
    return out


def _put(url: str, data: bytes | BinaryIO, length: int, headers: dict[str, str]) -> None:
    with http_pool.request("PUT", url, {**headers, "Content-Length": str(length)}, data, timeout=TIMEOUT) as resp:
        resp.read()


def _put_file(url: str, local: str, size: int, headers: dict[str, str]) -> None:
    """One Put Blob attempt, streaming the file from its start."""
    with open(local, "rb") as f:
        _put(url, f, size, headers)


def upload_file(link: StorageLink, local: str, container_url: str, blob_name: str, extra_headers: list | None = None,
                should_stop: StopCheck = None) -> None:
    """Put Blob, or Put Block per 8 MiB + Put Block List above 64 MiB; each request retried on its own."""
    url = _blob_url(container_url, blob_name)
    size = os.path.getsize(local)
    ctype = mimetypes.guess_type(local)[0] or "application/octet-stream"
    headers = {"x-ms-version": X_MS_VERSION, "x-ms-blob-content-type": ctype}
    for h in extra_headers or []:
        if h.get("name"):
            headers[h["name"]] = h.get("value") or ""
    if size <= BLOCK_UPLOAD_THRESHOLD:
        single = {**headers, "x-ms-blob-type": "BlockBlob", "Content-Type": ctype}
        link.run(lambda: _put_file(url, local, size, single), "upload", should_stop)
        return
    block_ids = []
    base, query = _split(url)
    with open(local, "rb") as f:
        i = 0
        while True:
            chunk = f.read(BLOCK_SIZE)
            if not chunk:
                break
            bid = base64.b64encode(b"block-%08d" % i).decode()
            block_ids.append(bid)
            q = "&".join(p for p in (query, "comp=block&blockid=" + urllib.parse.quote(bid, safe="")) if p)
            put_block = functools.partial(_put, base + "?" + q, chunk, len(chunk), {"x-ms-version": X_MS_VERSION})
            link.run(put_block, "upload", should_stop)
            i += 1
    body = ("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>" +
            "".join(f"<Latest>{b}</Latest>" for b in block_ids) + "</BlockList>").encode()
    q = "&".join(p for p in (query, "comp=blocklist") if p)
    link.run(lambda: _put(base + "?" + q, body, len(body), headers), "upload", should_stop)


def _upload_error(exc: Exception, local: str, wd: str, pattern: str, container_url: str,
                  blob: str) -> TransferError:
    """FileUploadMiscError (usererror, as before: the Batch docs give no category for this code)."""
    reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else strip_sas(str(
        getattr(exc, "reason", exc)))
    return TransferError(
        "FileUploadMiscError", "usererror",
        f"An error occurred while uploading output file '{os.path.relpath(local, wd)}' to "
        f"'{strip_sas(container_url)}/{blob}': {reason}",
        [{"name": "FilePattern", "value": pattern},
         {"name": "ContainerUrl", "value": strip_sas(container_url)},
         {"name": "BlobName", "value": blob}])


def upload_output_files(output_files: list[dict[str, Any]] | None, wd: str, task_dir: str, exit_code: int | None,
                        succeeded: bool, link: StorageLink, inject_failure: bool = False,
                        should_stop: StopCheck = None) -> None:
    """Uploads per uploadCondition. Raises TransferError(FileUploadMiscError) on the first failure (after its
    retries), TransferError(TaskEnded) if the try is killed while an upload waits to be retried. The
    fail-upload fault fails the first file at once, without retries."""
    for of in output_files or []:
        cond = ((of.get("uploadOptions") or {}).get("uploadCondition") or "taskcompletion").lower()
        if cond == "tasksuccess" and not succeeded:
            continue
        if cond == "taskfailure" and succeeded:
            continue
        cont = (of.get("destination") or {}).get("container") or {}
        container_url = cont.get("containerUrl") or ""
        path = (cont.get("path") or "").strip("/")
        pattern = of.get("filePattern") or ""
        wildcard = _has_wildcard(pattern)
        for local, rel in match_output_files(pattern, wd, task_dir):
            if wildcard:
                blob = f"{path}/{rel}" if path else rel
            else:
                blob = path or rel
            try:
                if inject_failure:
                    raise urllib.error.HTTPError(strip_sas(container_url), 500, "injected upload failure (batchemu "
                                                 "fail-upload fault)", email.message.Message(), None)
                upload_file(link, local, container_url, blob, cont.get("uploadHeaders"), should_stop)
            except Stopped:
                raise TransferError("TaskEnded", "usererror",
                                    "Task was ended while uploading output files.") from None
            except Exception as exc:
                raise _upload_error(exc, local, wd, pattern, container_url, blob) from exc


def rmtree_quiet(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)

"""REST handlers for the files of a task and of a node (list, properties, download with ranges, delete).

Guarantees: a path can never resolve outside the task's directory or the node's root (``FileNotFound``);
downloads honour ``ocp-range``/``range`` and are handed to the transport as a (path, offset, length) stream rather than
read into memory; a directory is deleted only if empty unless ``recursive=true``.
"""
from __future__ import annotations

import mimetypes
import os
import re
import shutil
import stat
import urllib.parse

from .api_core import AppCore
from .errors import BatchError, err
from .model import Json
from .request import Request
from .responses import Response, _empty
from .util import http_date, now_iso


def _file_mode(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))[2:].rjust(4, "0")[-4:]


def _content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


class FilesApiMixin(AppCore):
    """Task file handlers of `App`."""

    @staticmethod
    def _resolve(root: str, rel: str) -> str:
        rel = rel.replace("\\", "/").lstrip("/")
        path = os.path.normpath(os.path.join(root, rel))
        if path != root and not path.startswith(root + os.sep):
            raise err("FileNotFound")
        return path

    @staticmethod
    def _props(path: str, st: os.stat_result) -> Json:
        return {"creationTime": now_iso(st.st_ctime), "lastModified": now_iso(st.st_mtime),
                "contentLength": st.st_size, "contentType": _content_type(path), "fileMode": _file_mode(st)}

    # ---- one directory tree under a URL: a task's directory or a node's root -----------------------------
    def _list(self, req: Request, url_path: str, root: str | None) -> Response:
        recursive = (req.query.get("recursive") or "").lower() == "true"
        items: list[Json] = []
        if root and os.path.isdir(root):
            base_url = f"{req.base}/{url_path}/files/"
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, root)
                for name in dirnames + sorted(filenames):
                    full = os.path.join(dirpath, name)
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                    try:
                        st = os.stat(full)
                    except OSError:
                        continue
                    isdir = stat.S_ISDIR(st.st_mode)
                    d = {"name": rel, "url": base_url + urllib.parse.quote(rel, safe=""), "isDirectory": isdir}
                    if not isdir:
                        d["properties"] = self._props(full, st)
                    items.append(d)
                if not recursive:
                    break
        return self.dict_page(req, items, "files")

    def _stat(self, root: str | None, rel: str) -> tuple[str, os.stat_result]:
        if not root or not os.path.isdir(root):
            raise err("FileNotFound")
        path = self._resolve(root, rel)
        try:
            return path, os.stat(path)
        except OSError as exc:
            raise err("FileNotFound") from exc

    @staticmethod
    def _file_headers(req: Request, url_path: str, rel: str, path: str, st: os.stat_result) -> dict[str, str]:
        isdir = stat.S_ISDIR(st.st_mode)
        return {"ocp-creation-time": http_date(st.st_ctime), "Last-Modified": http_date(st.st_mtime),
                "ocp-batch-file-isdirectory": "true" if isdir else "false",
                "ocp-batch-file-url": f"{req.base}/{url_path}/files/{urllib.parse.quote(rel, safe='')}",
                "ocp-batch-file-mode": _file_mode(st),
                "Content-Type": "application/octet-stream" if isdir else _content_type(path),
                "ETag": f"0x{st.st_mtime_ns // 100:X}"}

    def _props_response(self, req: Request, url_path: str, root: str | None, rel: str) -> Response:
        try:
            path, st = self._stat(root, rel)
        except BatchError as e:
            return _empty(e.status)
        h = self._file_headers(req, url_path, rel, path, st)
        h["Content-Length"] = "0" if stat.S_ISDIR(st.st_mode) else str(st.st_size)
        return Response(200, None, h)

    @staticmethod
    def _range(req: Request, size: int) -> tuple[int, int]:
        """(offset, length) of the requested ``ocp-range``/``range`` (the whole file without one)."""
        start, end = 0, size - 1
        rng = req.headers.get("ocp-range") or req.headers.get("range")
        if rng:
            m = re.match(r"^\s*bytes=(\d*)-(\d*)\s*$", rng)
            if not m or (not m.group(1) and not m.group(2)):
                raise BatchError("InvalidRange")
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
            else:
                start = max(0, size - int(m.group(2)))
            end = min(end, size - 1)
            if start > end and size > 0:
                raise BatchError("InvalidRange")
        return start, max(0, end - start + 1)

    def _get_response(self, req: Request, url_path: str, root: str | None, rel: str) -> Response:
        path, st = self._stat(root, rel)
        if stat.S_ISDIR(st.st_mode):
            raise err("FileNotFound", "The specified path is a directory.")
        h = self._file_headers(req, url_path, rel, path, st)
        start, length = self._range(req, st.st_size)
        h["Content-Length"] = str(length)
        return Response(200, None, h, stream=(path, start, length))

    def _delete_response(self, req: Request, root: str | None, rel: str) -> Response:
        path, st = self._stat(root, rel)
        if path == root:
            raise err("FileNotFound", "The root directory cannot be deleted.")
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
        elif (req.query.get("recursive") or "").lower() == "true":
            shutil.rmtree(path, ignore_errors=True)
        elif os.listdir(path):
            raise err("DirectoryNotEmpty", "The directory is not empty; use recursive=true.")
        else:
            os.rmdir(path)
        return _empty(200)

    # ---- a task's files ---------------------------------------------------------------------------------
    def list_files(self, req: Request, job_id: str, task_id: str) -> Response:
        return self._list(req, *self.engine.task_files(job_id, task_id))

    def get_file(self, req: Request, job_id: str, task_id: str, rel: str) -> Response:
        return self._get_response(req, *self.engine.task_files(job_id, task_id), rel)

    def file_props(self, req: Request, job_id: str, task_id: str, rel: str) -> Response:
        try:
            url_path, root = self.engine.task_files(job_id, task_id)
        except BatchError as e:
            return _empty(e.status)
        return self._props_response(req, url_path, root, rel)

    def delete_file(self, req: Request, job_id: str, task_id: str, rel: str) -> Response:
        return self._delete_response(req, self.engine.task_files(job_id, task_id)[1], rel)

    # ---- a node's files (its whole root: startup/, shared/, workitems/<job>/job-1/<task>/...) ------------
    def list_node_files(self, req: Request, pool_id: str, node_id: str) -> Response:
        return self._list(req, *self.engine.node_files(pool_id, node_id))

    def get_node_file(self, req: Request, pool_id: str, node_id: str, rel: str) -> Response:
        return self._get_response(req, *self.engine.node_files(pool_id, node_id), rel)

    def node_file_props(self, req: Request, pool_id: str, node_id: str, rel: str) -> Response:
        try:
            url_path, root = self.engine.node_files(pool_id, node_id)
        except BatchError as e:
            return _empty(e.status)
        return self._props_response(req, url_path, root, rel)

    def delete_node_file(self, req: Request, pool_id: str, node_id: str, rel: str) -> Response:
        return self._delete_response(req, self.engine.node_files(pool_id, node_id)[1], rel)

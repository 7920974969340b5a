"""REST handlers for the files of a task (list, properties, download with ranges, delete).

Guarantees: a path can never resolve outside the task's directory (``FileNotFound``); downloads honour
``ocp-range``/``range`` and are handed to the transport as a (path, offset, length) stream rather than
read into memory; a directory is deleted only if empty unless ``recursive=true``.
"""
from __future__ import annotations

import mimetypes
import os
import re
import stat
import urllib.parse

from .errors import BatchError, err
from .responses import Response, _empty
from .util import http_date, now_iso


class FilesApiMixin:
    """Task file handlers of `App`."""

    def _task_dir(self, job_id, task_id):
        with self.engine.lock:
            t = self.engine.get_task(job_id, task_id)
            return t, self.engine.task_dir(t)

    @staticmethod
    def _resolve(root: str, rel: str) -> str:
        rel = rel.replace("\\", "/").lstrip("/")
        path = os.path.normpath(os.path.join(root, rel))
        if path != root and not path.startswith(root + os.sep):
            raise err("FileNotFound")
        return path

    @staticmethod
    def _props(path: str, st) -> dict:
        return {"creationTime": now_iso(st.st_ctime), "lastModified": now_iso(st.st_mtime),
                "contentLength": st.st_size, "contentType": mimetypes.guess_type(path)[0] or "application/octet-stream",
                "fileMode": oct(stat.S_IMODE(st.st_mode))[2:].rjust(4, "0")[-4:]}

    def list_files(self, req, job_id, task_id):
        t, root = self._task_dir(job_id, task_id)
        recursive = (req.query.get("recursive") or "").lower() == "true"
        items = []
        if root and os.path.isdir(root):
            base_url = f"{req.base}/jobs/{t.job.id}/tasks/{t.id}/files/"
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
        return self._dict_page(req, items, "files")

    def _file(self, req, job_id, task_id, rel):
        t, root = self._task_dir(job_id, task_id)
        if not root or not os.path.isdir(root):
            raise err("FileNotFound")
        path = self._resolve(root, rel)
        try:
            st = os.stat(path)
        except OSError:
            raise err("FileNotFound")
        return t, path, st

    def _file_headers(self, req, t, rel, path, st) -> dict:
        isdir = stat.S_ISDIR(st.st_mode)
        return {"ocp-creation-time": http_date(st.st_ctime), "Last-Modified": http_date(st.st_mtime),
                "ocp-batch-file-isdirectory": "true" if isdir else "false",
                "ocp-batch-file-url": f"{req.base}/jobs/{t.job.id}/tasks/{t.id}/files/{urllib.parse.quote(rel, safe='')}",
                "ocp-batch-file-mode": oct(stat.S_IMODE(st.st_mode))[2:].rjust(4, "0")[-4:],
                "Content-Type": "application/octet-stream" if isdir else (mimetypes.guess_type(path)[0] or "application/octet-stream"),
                "ETag": "0x%X" % int(st.st_mtime_ns // 100)}

    def file_props(self, req, job_id, task_id, rel):
        try:
            t, path, st = self._file(req, job_id, task_id, rel)
        except BatchError as e:
            return _empty(e.status)
        h = self._file_headers(req, t, rel, path, st)
        h["Content-Length"] = "0" if stat.S_ISDIR(st.st_mode) else str(st.st_size)
        return Response(200, None, h)

    def get_file(self, req, job_id, task_id, rel):
        t, path, st = self._file(req, job_id, task_id, rel)
        if stat.S_ISDIR(st.st_mode):
            raise err("FileNotFound", "The specified path is a directory.")
        h = self._file_headers(req, t, rel, path, st)
        size = st.st_size
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
        length = max(0, end - start + 1)
        h["Content-Length"] = str(length)
        return Response(200, None, h, stream=(path, start, length))

    def delete_file(self, req, job_id, task_id, rel):
        t, path, st = self._file(req, job_id, task_id, rel)
        if stat.S_ISDIR(st.st_mode):
            if (req.query.get("recursive") or "").lower() != "true":
                if os.listdir(path):
                    raise err("DirectoryNotEmpty", "The directory is not empty; use recursive=true.")
                os.rmdir(path)
            else:
                import shutil
                shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
        return _empty(200)

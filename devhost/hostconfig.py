"""The parts of host.json that devhost honours.

* ``extensions.queues``: batchSize (16), newBatchThreshold (batchSize/2 x cores),
  maxDequeueCount (5), visibilityTimeout (00:00:00), maxPollingInterval (00:01:00),
  messageEncoding (base64).
* ``extensions.blobs``: maxDegreeOfParallelism (8 x cores), poisonBlobThreshold (5).
* ``functionTimeout`` (default 00:30:00 as on a dedicated plan; ``-1`` = none).
* ``functions``: when present, only the listed functions are loaded.
* ``logging.logLevel``: category -> level (``default``, ``Function``, ``Function.<name>``,
  ``Function.<name>.User``, ``Host``, ...).

Keys are matched case-insensitively, as the host's configuration does.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .ncrontab import parse_timespan

__all__ = ["QueuesOptions", "BlobsOptions", "HostConfig", "load_host_json", "parse_host_json",
           "timespan_seconds", "LOG_LEVELS"]

MAX_BATCH_SIZE = 32  # the Storage service returns at most 32 messages per receive

LOG_LEVELS = {
    "trace": 5, "debug": logging.DEBUG, "information": logging.INFO, "info": logging.INFO,
    "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


def _cpu() -> int:
    return os.cpu_count() or 1


def _ci(d: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    if not isinstance(d, Mapping):
        return default
    for k, v in d.items():
        if k.lower() == key.lower():
            return v
    return default


def timespan_seconds(value: Any, what: str) -> float:
    """A host.json TimeSpan (``hh:mm:ss``) or a number of seconds, as float seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    span = parse_timespan(str(value)) if value is not None else None
    if span is None:
        raise ConfigurationError(f"devhost: host.json {what} '{value}' is not a TimeSpan (hh:mm:ss)")
    return span.total_seconds()


@dataclass
class QueuesOptions:
    batch_size: int = 16
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @property
    def effective_new_batch_threshold(self) -> int:
        if self.new_batch_threshold is not None and self.new_batch_threshold >= 0:
            return self.new_batch_threshold
        return self.batch_size // 2 * _cpu()


@dataclass
class BlobsOptions:
    max_degree_of_parallelism: int | None = None
    poison_blob_threshold: int = 5

    @property
    def effective_max_degree_of_parallelism(self) -> int:
        return self.max_degree_of_parallelism or 8 * _cpu()

    def as_queues_options(self) -> QueuesOptions:
        """The internal blob-trigger queue's options, split as the storage extension does."""
        dop = self.effective_max_degree_of_parallelism
        batch = min(MAX_BATCH_SIZE, dop // 2 + 1)
        return QueuesOptions(batch_size=batch, new_batch_threshold=max(0, dop - batch),
                             max_dequeue_count=self.poison_blob_threshold, visibility_timeout=0.0,
                             message_encoding="base64")


@dataclass
class HostConfig:
    queues: QueuesOptions = field(default_factory=QueuesOptions)
    blobs: BlobsOptions = field(default_factory=BlobsOptions)
    function_timeout: float | None = 30 * 60.0
    functions: list[str] | None = None
    log_levels: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def level_for(self, category: str, fallback: int = logging.INFO) -> int:
        """Most specific ``logging.logLevel`` entry for a category (prefix match on dots)."""
        best, best_len = self.log_levels.get("default", fallback), -1
        c = category.lower()
        for key, level in self.log_levels.items():
            if key == "default":
                continue
            if (c == key or c.startswith(key + ".")) and len(key) > best_len:
                best, best_len = level, len(key)
        return best


def parse_host_json(data: Mapping[str, Any] | None) -> HostConfig:
    data = dict(data or {})
    cfg = HostConfig(raw=data)
    ext = _ci(data, "extensions", {}) or {}
    q = _ci(ext, "queues", {}) or {}
    b = _ci(ext, "blobs", {}) or {}

    def int_opt(src: Mapping[str, Any], key: str, default: Any, low: int, high: int | None = None) -> Any:
        v = _ci(src, key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise ConfigurationError(f"devhost: host.json {key} must be an integer {bound}, got {v!r}")
        return v

    cfg.queues.batch_size = int_opt(q, "batchSize", 16, 1, MAX_BATCH_SIZE)
    cfg.queues.new_batch_threshold = int_opt(q, "newBatchThreshold", None, -1)
    cfg.queues.max_dequeue_count = int_opt(q, "maxDequeueCount", 5, 1)
    if _ci(q, "visibilityTimeout") is not None:
        cfg.queues.visibility_timeout = timespan_seconds(_ci(q, "visibilityTimeout"), "visibilityTimeout")
    if _ci(q, "maxPollingInterval") is not None:
        cfg.queues.max_polling_interval = timespan_seconds(_ci(q, "maxPollingInterval"), "maxPollingInterval")
    enc = str(_ci(q, "messageEncoding", "base64")).lower()
    if enc not in ("base64", "none"):
        raise ConfigurationError(f"devhost: host.json messageEncoding must be base64 or none, got {enc!r}")
    cfg.queues.message_encoding = enc

    cfg.blobs.max_degree_of_parallelism = int_opt(b, "maxDegreeOfParallelism", None, 1)
    cfg.blobs.poison_blob_threshold = int_opt(b, "poisonBlobThreshold", 5, 1)

    timeout = _ci(data, "functionTimeout")
    if timeout is not None:
        cfg.function_timeout = None if str(timeout).strip() == "-1" else timespan_seconds(timeout, "functionTimeout")

    funcs = _ci(data, "functions")
    if funcs is not None:
        if not isinstance(funcs, list) or not all(isinstance(x, str) for x in funcs):
            raise ConfigurationError("devhost: host.json functions must be a list of function names")
        cfg.functions = funcs

    levels = _ci(_ci(data, "logging", {}) or {}, "logLevel", {}) or {}
    for cat, lvl in (levels.items() if isinstance(levels, Mapping) else []):
        if str(lvl).lower() not in LOG_LEVELS:
            raise ConfigurationError(f"devhost: host.json logging.logLevel.{cat}: unknown level {lvl!r}")
        cfg.log_levels[str(cat).lower()] = LOG_LEVELS[str(lvl).lower()]
    return cfg


def load_host_json(app_dir: str | os.PathLike[str] | None) -> HostConfig:
    """Read ``<app_dir>/host.json``; defaults when there is none."""
    if app_dir is None:
        return parse_host_json({})
    p = Path(app_dir) / "host.json"
    if not p.exists():
        return parse_host_json({})
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"devhost: {p} is not valid JSON: {e.msg} (line {e.lineno})") from None
    return parse_host_json(data)


def format_timespan(seconds: float) -> str:
    """``hh:mm:ss`` (with fractional seconds when there are any), as the host prints TimeSpans."""
    whole = int(seconds)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    frac = round(seconds - whole, 3)
    return f"{h:02d}:{m:02d}:{s:02d}" + (f"{frac:.3f}"[1:] if frac else "")

"""Telemetry: the worker's logs in Application Insights, each line about a run carrying its run id.

Guarantees:

* Without ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (the local stack, the tests) `configure` does
  nothing, and neither the Azure Monitor OpenTelemetry distro nor OpenTelemetry is imported.
* With it, the worker's logs go to Application Insights once, as the app's identity (Entra ID):

  - ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`` (what infra/ sets, as the Functions
    OpenTelemetry docs ask): the Python worker itself calls the distro's
    ``configure_azure_monitor`` before it imports function_app, and the distro's exporter
    authenticates with ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
    (``ClientId=<the app's identity>;Authorization=AAD``). Configuring a second time would add
    nothing (the distro keeps one log handler per logger, and OpenTelemetry refuses to replace
    its global providers), so only the run-id filter is added.
  - otherwise (outside the Functions worker, or with that setting off): ``configure_azure_monitor``
    with the connection string and the credential of `shared.identity` (the app's one identity).
    Under the Functions host, the host then forwards the worker's logs as well: keep the setting on.

* From then on, every record the root logger's handlers handle carries the attribute ``run_id``
  when it is about one run: the run of the enclosing `run_context`, else the run its message names
  as ``run_id=<id>`` (the pipeline's log lines do). OpenTelemetry's logging handler exports a
  record's extra attributes as log attributes, and Application Insights stores those as custom
  dimensions: ``customDimensions.run_id`` (``Properties.run_id`` in the AppTraces table).
  A record that names no run is left as it is; no record is ever dropped.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from shared.naming import RUN_ID_PATTERN

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
WORKER_TELEMETRY = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"  # the worker configures the distro itself
RUN_ID = "run_id"  # the record attribute, hence the custom dimension

# What `configure` did: nothing, the worker had done it, or this module did it.
OFF, WORKER, APP = "off", "worker", "app"

log = logging.getLogger(__name__)

_current_run: contextvars.ContextVar[str | None] = contextvars.ContextVar("batchdrop_run_id", default=None)
# `run_id=<id>` in a formatted message; only a well-formed run id counts (shared.naming).
_RUN_ID_IN_MESSAGE = re.compile(rf"\b{RUN_ID}=({RUN_ID_PATTERN.pattern})(?![a-z0-9-])")


@contextlib.contextmanager
def run_context(run_id: str) -> Iterator[None]:
    """Every record logged in this block (in this thread or task) is about `run_id`, whatever its
    message says. Nests: the innermost run wins, the outer one is back after the block."""
    token = _current_run.set(run_id)
    try:
        yield
    finally:
        _current_run.reset(token)


def current_run() -> str | None:
    return _current_run.get()


def run_id_in(message: str) -> str | None:
    """The first run id `message` names as ``run_id=<id>``; None when it names none."""
    match = _RUN_ID_IN_MESSAGE.search(message)
    return match.group(1) if match else None


class RunIdFilter(logging.Filter):
    """Sets ``record.run_id`` on a record about one run (see the module's rules); never drops a
    record. A ``run_id`` the caller gave (``extra={"run_id": ...}``) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, RUN_ID, None) is None:
            run_id = _current_run.get() or _run_id_of(record)
            if run_id:
                setattr(record, RUN_ID, run_id)
        return True


def _run_id_of(record: logging.LogRecord) -> str | None:
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: the handler reports that itself
        return None
    return run_id_in(message)


def install_filter(logger: logging.Logger) -> list[logging.Handler]:
    """Adds one RunIdFilter to each handler `logger` has now (a filter on the logger itself would
    not see the records its child loggers propagate). Idempotent. Returns the handlers."""
    handlers = list(logger.handlers)
    for handler in handlers:
        if not any(isinstance(f, RunIdFilter) for f in handler.filters):
            handler.addFilter(RunIdFilter())
    return handlers


def configure(env: Mapping[str, str], *, setup: Callable[..., Any] | None = None,
              root: logging.Logger | None = None) -> str:
    """Application Insights for this worker process, once (see the module's rules); returns OFF,
    WORKER or APP. Never raises: telemetry that cannot be set up is logged as a warning, and the
    functions run without it. `setup` stands for the distro's ``configure_azure_monitor`` and
    `root` for the root logger (tests)."""
    connection_string = (env.get(CONNECTION_STRING) or "").strip()
    if not connection_string:
        return OFF
    root = root if root is not None else logging.getLogger()
    if (env.get(WORKER_TELEMETRY) or "").strip().lower() == "true":
        mode = WORKER
    elif _has_filter(root):
        mode = APP  # configured by an earlier call in this process
    else:
        try:
            _configure_azure_monitor(env, connection_string, setup)
        except Exception as e:  # never stop the app from indexing for want of telemetry
            log.warning("Application Insights not configured error=%s", type(e).__name__)
            return OFF
        mode = APP
    handlers = install_filter(root)
    if not any(_is_opentelemetry(h) for h in handlers):
        log.warning("no OpenTelemetry log handler on the root logger mode=%s: run_id custom dimensions are not "
                    "exported (is azure-monitor-opentelemetry installed?)", mode)
    return mode


def _configure_azure_monitor(env: Mapping[str, str], connection_string: str,
                             setup: Callable[..., Any] | None) -> None:
    from shared import identity
    from shared.settings import Settings

    if setup is None:
        from azure.monitor.opentelemetry import configure_azure_monitor

        setup = configure_azure_monitor
    setup(connection_string=connection_string, credential=identity.credential(Settings.from_mapping(env)),
          logger_name="")  # the root logger: every module's records propagate to it


def _has_filter(logger: logging.Logger) -> bool:
    return any(isinstance(f, RunIdFilter) for h in logger.handlers for f in h.filters)


def _is_opentelemetry(handler: logging.Handler) -> bool:
    """OpenTelemetry's LoggingHandler, wherever this version keeps it (no import needed)."""
    return type(handler).__module__.split(".")[0] == "opentelemetry"

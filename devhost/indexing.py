"""Import the function app and index it the way the Python worker does.

The worker imports ``function_app`` (by module name, with the app directory on sys.path),
takes the single top-level ``FunctionRegister`` instance of that module, calls
``app.get_functions()`` and sends each function's raw bindings (``get_raw_bindings()``, JSON)
to the host. The host then resolves ``%SETTING%`` tokens and connections. devhost does both
halves in one process: the checks below are the worker's (parameters vs bindings, type
annotations) and the host's (settings, schedules), plus refusing what it cannot run.
"""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

from .errors import IndexingError, UnsupportedBindingError
from .ncrontab import CronSchedule, ScheduleError, TimeSpanSchedule, parse_schedule
from .settings import Settings

__all__ = ["FunctionSpec", "load_function_app", "find_function_app", "index_functions",
           "SUPPORTED_TRIGGERS"]

log = logging.getLogger("devhost.indexing")

SUPPORTED_TRIGGERS = ("blobTrigger", "queueTrigger", "timerTrigger")
SCRIPT_FILE_NAME = "function_app.py"


@dataclass
class FunctionSpec:
    """One indexed function: what the host knows about it after indexing."""

    name: str
    func: Callable[..., Any]
    trigger_type: str
    trigger: dict[str, Any]              # the raw trigger binding, as the worker sends it
    param_name: str                      # the trigger's parameter
    param_type: Any                      # its annotation (None when absent)
    bind_type: str                       # converter used: trigger type, or "generic" for str/bytes
    requires_context: bool
    is_async: bool
    directory: str
    data_type: str | None = None         # "binary" / "string" / None
    # resolved by the host
    path: str | None = None              # blobTrigger: container/blob pattern, settings resolved
    queue_name: str | None = None        # queueTrigger
    schedule: CronSchedule | TimeSpanSchedule | None = None
    connection: str | None = None        # the configured connection name ("" = AzureWebJobsStorage)
    source: str | None = None            # blobTrigger: LogsAndContainerScan | EventGrid
    run_on_startup: bool = False
    use_monitor: bool = False
    raw_bindings: list[str] = field(default_factory=list)

    @property
    def function_id(self) -> str:
        """The host's id for script-host functions (used in receipts and trigger messages)."""
        return f"Host.Functions.{self.name}"

    @property
    def log_name(self) -> str:
        return f"Functions.{self.name}"


# -- loading -----------------------------------------------------------------------------
def load_function_app(app_dir: str | os.PathLike[str], script_file: str = SCRIPT_FILE_NAME,
                      *, fresh: bool = True) -> Any:
    """Import ``<app_dir>/function_app.py`` as the worker does and return its FunctionApp.

    The app directory goes first on sys.path. With ``fresh`` (the default), a module of the
    same name loaded earlier from another directory is dropped first, so tests can load
    several small apps in one process.
    """
    app_dir = str(Path(app_dir).resolve())
    module_name = Path(script_file).stem
    if not (Path(app_dir) / script_file).exists():
        raise IndexingError(f"devhost: no {script_file} in {app_dir}")
    if app_dir in sys.path:
        sys.path.remove(app_dir)
    sys.path.insert(0, app_dir)
    existing = sys.modules.get(module_name)
    if existing is not None and fresh:
        existing_file = getattr(existing, "__file__", None) or ""
        if Path(existing_file).resolve().parent != Path(app_dir):
            del sys.modules[module_name]
    importlib.invalidate_caches()
    module = importlib.import_module(module_name)
    return find_function_app(module, script_file)


def find_function_app(module: Any, script_file: str = SCRIPT_FILE_NAME) -> Any:
    """The single top-level FunctionRegister of the module (the worker's rule).

    As the worker's ``loader.index_function_app`` does, every module attribute holding a
    FunctionRegister counts, so a second name for the same app (``application = app``) is
    refused like a second app.
    """
    names = [attr for attr in dir(module) if isinstance(getattr(module, attr, None), func.FunctionRegister)]
    if len(names) > 1:
        kind = type(getattr(module, names[0])).__name__
        raise IndexingError(
            f"devhost: more than one {kind} or other top level function app instances are defined "
            f"in {script_file} ({', '.join(names)}); the Python worker refuses such a module: keep "
            "exactly one module-level name for the app")
    if not names:
        raise IndexingError(f"devhost: could not find top level function app instances in {script_file}.")
    return getattr(module, names[0])


# -- indexing ----------------------------------------------------------------------------
def _get_functions(app: Any) -> list[Any]:
    # FunctionApp.get_functions() records the names it has seen and refuses them on a second
    # call; a real worker indexes once per process. Start from a clean record so that several
    # hosts (e.g. a restart in a test) can index the same imported app.
    if getattr(app, "functions_bindings", None):
        app.functions_bindings = None
    try:
        return list(app.get_functions())
    except ValueError as e:
        raise IndexingError(f"devhost: the function app failed indexing: {e}") from None


def _annotation_ok(bind_type: str, pytype: Any) -> bool:
    if bind_type == "generic":
        return isinstance(pytype, type) and issubclass(pytype, (str, bytes))
    converter = func.get_binding_registry().get(bind_type)
    if converter is None:
        return False
    try:
        return bool(converter.check_input_type_annotation(pytype))
    except TypeError:
        return False


def _check_signature(name: str, fn: Callable[..., Any], binding_names: set[str]) -> tuple[bool, dict[str, Any]]:
    """The worker's FunctionLoadError checks; returns (requires_context, annotations)."""
    sig = inspect.signature(fn)
    params = dict(sig.parameters)
    try:
        annotations = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward refs: the worker fails the same way
        annotations = dict(getattr(fn, "__annotations__", {}))
    requires_context = False
    if "context" in params and "context" not in binding_names:
        requires_context = True
        params.pop("context")
        anno = annotations.get("context")
        if anno is not None and (not isinstance(anno, type) or anno.__name__ != "Context"):
            raise IndexingError(
                f"devhost: cannot load the {name} function: the \"context\" parameter is expected "
                f"to be of type azure.functions.Context, got {anno!r}")
    extra = set(params) - binding_names
    if extra:
        raise IndexingError(
            f"devhost: cannot load the {name} function: the following parameters are declared "
            f"in Python but not in the bindings: {sorted(extra)!r}")
    missing = binding_names - set(params)
    if missing:
        raise IndexingError(
            f"devhost: cannot load the {name} function: the following parameters are declared "
            f"in the bindings but not in Python: {sorted(missing)!r}")
    return requires_context, annotations


def index_functions(app: Any, settings: Settings, app_dir: str | os.PathLike[str] | None = None,
                    only: list[str] | None = None) -> list[FunctionSpec]:
    """Index the app; refuse (by name) anything devhost cannot run.

    ``only`` is host.json's ``functions`` list. A function disabled with the app setting
    ``AzureWebJobs.<name>.Disabled`` is skipped, as the host does.
    """
    directory = str(Path(app_dir).resolve()) if app_dir else os.getcwd()
    specs: list[FunctionSpec] = []
    for f in _get_functions(app):
        name = f.get_function_name()
        if only is not None and name not in only:
            log.info("Function '%s' is not in host.json 'functions'; not loaded", name)
            continue
        raw = [json.loads(b) for b in f.get_raw_bindings()]
        trigger = next((b for b in raw if str(b.get("type", "")).lower().endswith("trigger")), None)
        if trigger is None:
            raise IndexingError(f"devhost: function '{name}' has no trigger")
        ttype = trigger["type"]
        if ttype not in SUPPORTED_TRIGGERS:
            raise UnsupportedBindingError(name, ttype)
        for b in raw:
            if b is trigger:
                continue
            direction = str(b.get("direction", "")).lower()
            raise UnsupportedBindingError(
                name, str(b.get("type")), {"in": "input", "out": "output", "inout": "inout"}.get(direction))
        if f.get_setting("retry_policy") is not None:
            log.warning("Function '%s' declares a retry policy; the storage triggers do not use "
                        "retry policies (the host ignores it too) and neither does devhost", name)
        if settings.is_true(f"AzureWebJobs.{name}.Disabled"):
            log.info("Function '%s' is disabled (AzureWebJobs.%s.Disabled)", name, name)
            continue

        fn = f.get_user_function()
        param = trigger["name"]
        requires_context, annotations = _check_signature(name, fn, {b["name"] for b in raw})
        pytype = annotations.get(param)
        bind_type = "generic" if pytype in (str, bytes) else ttype
        if pytype is not None:
            if not isinstance(pytype, type) and not typing.get_origin(pytype):
                raise IndexingError(
                    f"devhost: cannot load the {name} function: binding {param} has invalid "
                    f"non-type annotation {pytype!r}")
            if not _annotation_ok(bind_type, pytype):
                raise IndexingError(
                    f"devhost: cannot load the {name} function: type of {param} binding "
                    f"\"{ttype}\" does not match its Python annotation "
                    f"\"{getattr(pytype, '__name__', pytype)}\"")
        data_type = str(trigger.get("dataType") or "").lower() or None
        if data_type in ("undefined", "stream"):
            data_type = None
        spec = FunctionSpec(
            name=name, func=fn, trigger_type=ttype, trigger=trigger, param_name=param,
            param_type=pytype, bind_type=bind_type, requires_context=requires_context,
            is_async=inspect.iscoroutinefunction(fn), directory=directory, data_type=data_type,
            raw_bindings=list(f.get_raw_bindings()))
        _resolve(spec, settings)
        specs.append(spec)
    return specs


def _resolve(spec: FunctionSpec, settings: Settings) -> None:
    t = spec.trigger
    if spec.trigger_type == "blobTrigger":
        path = settings.resolve(t.get("path"), function_name=spec.name, what="blob path")
        if not path or not path.strip("/"):
            raise IndexingError(f"devhost: function '{spec.name}': blobTrigger path is empty")
        spec.path = path.strip("/") if path.startswith("/") else path
        spec.connection = settings.resolve(t.get("connection") or "", function_name=spec.name,
                                           what="connection")
        source = _blob_source(spec.name, t.get("source"))
        spec.source = source
    elif spec.trigger_type == "queueTrigger":
        q = settings.resolve(t.get("queueName"), function_name=spec.name, what="queue name")
        if not q:
            raise IndexingError(f"devhost: function '{spec.name}': queueTrigger queueName is empty")
        q = q.lower()  # the host lower-cases queue names before validating them
        if not _valid_queue_name(q):
            raise IndexingError(
                f"devhost: function '{spec.name}': '{q}' is not a valid queue name (3-63 lower-case "
                "letters, digits and single dashes)")
        spec.queue_name = q
        spec.connection = settings.resolve(t.get("connection") or "", function_name=spec.name,
                                           what="connection")
    elif spec.trigger_type == "timerTrigger":
        expr = settings.resolve(t.get("schedule"), function_name=spec.name, what="schedule")
        if not expr:
            raise IndexingError(f"devhost: function '{spec.name}': timerTrigger schedule is empty")
        try:
            spec.schedule = parse_schedule(expr)
        except ScheduleError as e:
            raise IndexingError(f"devhost: function '{spec.name}': {e}") from None
        spec.run_on_startup = bool(t.get("runOnStartup"))
        use_monitor = t.get("useMonitor")
        # The host monitors schedules by default, except those recurring more often than
        # once a minute.
        spec.use_monitor = (spec.schedule.min_interval().total_seconds() >= 60
                            if use_monitor is None else bool(use_monitor))


BLOB_SOURCES = ("LogsAndContainerScan", "EventGrid")  # BlobTriggerSource, in its numeric order


def _blob_source(function_name: str, value: Any) -> str:
    """The blob trigger's ``source`` as the host reads it into the ``BlobTriggerSource`` enum.

    The host converts the binding's JSON to the attribute with Newtonsoft (``JToken.ToObject``):
    names match ignoring case, an integer is the enum's number, anything else fails indexing with
    "Could not convert 'X' to BlobTriggerSource.". ``source`` is not an auto-resolved property, so
    ``%SETTING%`` is not replaced (choose the source in Python, as functions/wiring.py does).
    """
    if value is None:
        return BLOB_SOURCES[0]
    text = str(value) if not isinstance(value, bool) else ""
    for name in BLOB_SOURCES:
        if text.lower() == name.lower():
            return name
    if re.fullmatch(r"[0-9]+", text) and int(text) < len(BLOB_SOURCES):
        return BLOB_SOURCES[int(text)]
    hint = (" (%SETTING% is not resolved in 'source': pick the value in Python)" if "%" in text else "")
    raise IndexingError(
        f"devhost: function '{function_name}': Could not convert '{value}' to BlobTriggerSource.{hint} "
        f"Use one of: {', '.join(BLOB_SOURCES)}")


def _valid_queue_name(q: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]", q)) and 3 <= len(q) <= 63

"""devhost: a local stand-in for the Azure Functions host (Python v2 programming model).

It imports the app's ``function_app.py``, indexes ``app.get_functions()`` as the Python worker
does, and drives blob, queue and timer triggers against Storage (Azurite) with the real host's
semantics (blob receipts, poison queues, dequeue counts, non-overlapping timers).
See docs/devhost.md.
"""
from .errors import ConfigurationError, DevhostError, IndexingError, UnsupportedBindingError
from .host import Host
from .hostconfig import HostConfig, load_host_json, parse_host_json
from .indexing import FunctionSpec, index_functions, load_function_app
from .invoker import InvocationResult
from .ncrontab import CronSchedule, ScheduleError, TimeSpanSchedule, parse_schedule
from .settings import Settings, StorageConnection, load_local_settings

__all__ = [
    "Host", "HostConfig", "load_host_json", "parse_host_json", "FunctionSpec", "index_functions",
    "load_function_app", "InvocationResult", "CronSchedule", "TimeSpanSchedule", "parse_schedule",
    "ScheduleError", "Settings", "StorageConnection", "load_local_settings", "DevhostError",
    "ConfigurationError", "IndexingError", "UnsupportedBindingError",
]

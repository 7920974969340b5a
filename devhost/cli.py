"""``python -m devhost``: run a function app's blob, queue and timer triggers locally.

Like ``func start``: the ``Values`` of local.settings.json are layered under the process
environment and exported as environment variables of this (worker) process before the app
is imported; then the app is indexed, anything devhost cannot run is refused by name, and the
triggers run until SIGTERM/SIGINT, when running invocations finish and the process exits 0.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path

from .errors import DevhostError
from .host import Host
from .hostconfig import LOG_LEVELS, load_host_json
from .indexing import load_function_app
from .logs import redact, register_secrets, setup_logging
from .settings import apply_to_environ, layer_settings, load_local_settings

log = logging.getLogger("devhost.cli")

_SECRET_NAME = re.compile(r"(?i)(key|secret|password|token|sas|connectionstring)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m devhost",
        description="Local Azure Functions host stand-in: runs blob, queue and timer triggers "
                    "of a Python v2 function app against Storage (Azurite).")
    p.add_argument("--app-dir", default=".", help="directory of function_app.py and host.json (default: cwd)")
    p.add_argument("--settings", default=None,
                   help="local.settings.json to load (default: <app-dir>/local.settings.json, if present)")
    p.add_argument("--poll-interval", type=float, default=2.0,
                   help="longest wait, in seconds, between polls of an idle queue or container (default 2)")
    p.add_argument("--host-id", default=None, help="host id (default: AzureFunctionsWebHost__hostid or "
                                                   "<machine>-<hash of app dir>)")
    p.add_argument("--queue-workers", type=int, default=4,
                   help="threads per queue-triggered function (default 4)")
    p.add_argument("--log-level", default=None, choices=sorted(LOG_LEVELS),
                   help="console level (default: host.json logging.logLevel.default, else information)")
    p.add_argument("--list", action="store_true", help="index the app, print its functions and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    app_dir = Path(args.app_dir).resolve()
    if not (app_dir / "function_app.py").is_file():
        print(f"devhost: no function_app.py in {app_dir}", file=sys.stderr)
        return 2
    if args.poll_interval <= 0:
        print("devhost: --poll-interval must be positive", file=sys.stderr)
        return 2
    try:
        settings_path = Path(args.settings).resolve() if args.settings else app_dir / "local.settings.json"
        if args.settings and not settings_path.is_file():
            print(f"devhost: settings file {settings_path} not found", file=sys.stderr)
            return 2
        values, conns = load_local_settings(settings_path)
        config = load_host_json(app_dir)
    except DevhostError as e:
        print(str(e), file=sys.stderr)
        return 2

    merged = layer_settings(values, conns)
    register_secrets(v for k, v in merged.items() if _SECRET_NAME.search(k))
    level = LOG_LEVELS[args.log_level] if args.log_level else config.level_for("Host", logging.INFO)
    setup_logging(level, (lambda c: LOG_LEVELS[args.log_level]) if args.log_level
                  else (lambda c: config.level_for(c, logging.INFO)))
    exported = apply_to_environ({**{f"ConnectionStrings:{k}": v for k, v in conns.items()}, **values})
    if settings_path.is_file():
        log.info("Loaded %d setting(s) from %s (%d exported; the environment wins)",
                 len(values) + len(conns), settings_path, len(exported))
    runtime = os.environ.get("FUNCTIONS_WORKER_RUNTIME")
    if runtime and runtime.lower() != "python":
        log.warning("FUNCTIONS_WORKER_RUNTIME is '%s'; devhost runs Python apps only", runtime)

    os.chdir(app_dir)  # the worker's working directory is the app root
    try:
        app = load_function_app(app_dir)
    except DevhostError as e:
        print(str(e), file=sys.stderr)
        return 2
    except Exception:
        print(redact("devhost: importing function_app.py failed:\n" + traceback.format_exc()), file=sys.stderr)
        return 1
    try:
        host = Host(app, merged, app_dir=app_dir, host_config=config, host_id=args.host_id,
                    poll_interval=args.poll_interval, queue_workers=args.queue_workers)
    except DevhostError as e:
        print(str(e), file=sys.stderr)
        return 2

    print("Functions:", file=sys.stderr)
    for line in host.describe():
        print(f"    {line}", file=sys.stderr)
    if args.list:
        return 0

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            log.warning("Already stopping; waiting for running invocations to finish")
        else:
            log.info("Received %s: stopping (running invocations finish first)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        host.start()
    except DevhostError as e:
        print(str(e), file=sys.stderr)
        host.close()
        return 2
    except Exception as e:
        log.error("Host failed to start: %s", e)
        host.close()
        return 1
    while not stop.wait(1.0):
        pass
    host.close()
    leftover = [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
    if leftover:
        log.warning("Threads still alive at exit: %s", ", ".join(leftover))
    return 0

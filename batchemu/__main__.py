"""``python -m batchemu``: run the local Azure Batch emulator until SIGTERM/SIGINT."""
from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import sys
import threading

from . import DEFAULT_ACCOUNT, DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_KEY, DEFAULT_PORT, __version__
from .quotas import Quotas, parse_quota
from .transfer_retry import DEFAULT_FIRST_DELAY, DEFAULT_RETRIES, MAX_DELAY, RetryPolicy

# flag, environment variable (after BATCHEMU_) and `Quotas` attribute of each account quota
QUOTA_FLAGS = (("--quota-active-jobs", "QUOTA_ACTIVE_JOBS", "active_jobs", "active jobs (and job schedules)"),
               ("--quota-pools", "QUOTA_POOLS", "pools", "pools"),
               ("--quota-dedicated-cores", "QUOTA_DEDICATED_CORES", "dedicated_cores", "dedicated vCPUs"),
               ("--quota-spot-cores", "QUOTA_SPOT_CORES", "spot_cores", "spot/low-priority vCPUs"))


def _env(name, default=None):
    return os.environ.get(f"BATCHEMU_{name}", default)


def _quota(text: str) -> int | None:
    try:
        return parse_quota(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'unlimited', not {text!r}") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m batchemu",
                                description="Local Azure Batch emulator (REST API 2025-06-01)")
    p.add_argument("--host", default=_env("HOST", DEFAULT_HOST))
    p.add_argument("--port", type=int, default=int(_env("PORT", DEFAULT_PORT)))
    p.add_argument("--data-dir", default=_env("DATA_DIR", DEFAULT_DATA_DIR))
    p.add_argument("--account", default=_env("ACCOUNT", DEFAULT_ACCOUNT))
    p.add_argument("--key", default=_env("KEY", DEFAULT_KEY))
    p.add_argument("--max-concurrency", type=int, default=int(_env("MAX_CONCURRENCY", "0")) or None,
                   help="host-wide limit on concurrently running task slots (default: CPU count)")
    p.add_argument("--container-mode", choices=("host", "fail", "docker", "auto"),
                   default=_env("CONTAINER_MODE", "auto"))
    p.add_argument("--public-url", default=_env("PUBLIC_URL"),
                   help="URL tasks see in AZ_BATCH_ACCOUNT_URL (default http://HOST:PORT)")
    p.add_argument("--transfer-retries", type=int, default=int(_env("TRANSFER_RETRIES", DEFAULT_RETRIES)),
                   help="retries of a resource-file download or output-file upload that met a transient storage "
                        f"failure (default {DEFAULT_RETRIES}; 0: a single attempt)")
    p.add_argument("--transfer-retry-delay", type=float,
                   default=float(_env("TRANSFER_RETRY_DELAY", DEFAULT_FIRST_DELAY)),
                   help=f"seconds before the first transfer retry, doubling up to {MAX_DELAY:g} s "
                        f"(default {DEFAULT_FIRST_DELAY})")
    for flag, env, attr, what in QUOTA_FLAGS:
        p.add_argument(flag, dest=f"quota_{attr}", type=_quota, default=_env(env), metavar="N",
                       help=f"account quota of {what} (default: unlimited; 'unlimited' or empty: no limit)")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    p.add_argument("--version", action="version", version=f"batchemu {__version__}")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    log = logging.getLogger("batchemu")
    try:
        base64.b64decode(args.key, validate=True)
    except Exception:
        print("batchemu: --key must be base64", file=sys.stderr)
        return 2
    try:
        transfer_policy = RetryPolicy(args.transfer_retries, args.transfer_retry_delay)
    except ValueError as exc:
        print(f"batchemu: {exc}", file=sys.stderr)
        return 2
    from .engine import Engine
    from .server import make_server

    public_url = args.public_url or f"http://{args.host}:{args.port}"
    quotas = Quotas(**{attr: getattr(args, f"quota_{attr}") for _, _, attr, _ in QUOTA_FLAGS})
    engine = Engine(args.data_dir, args.account, args.max_concurrency, args.container_mode, public_url,
                    transfer_policy, quotas)
    engine.load()
    try:
        server = make_server(engine, args.host, args.port, args.account, args.key)
    except OSError as exc:
        print(f"batchemu: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        engine.store.close()
        return 1
    if not args.public_url and args.port == 0:
        engine.public_url = f"http://{args.host}:{server.server_address[1]}"
    engine.start()

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    th.start()
    log.info("batchemu %s listening on http://%s:%d (account %s, data dir %s, max concurrency %d, container mode %s, "
             "transfer retries %d from %gs)", __version__, args.host, server.server_address[1], args.account,
             os.path.abspath(args.data_dir), engine.max_concurrency, engine.container_mode,
             transfer_policy.retries, transfer_policy.first_delay)
    log.info("account quotas: %s", quotas.to_json())
    stop.wait()
    log.info("stopping")
    server.shutdown()
    server.server_close()
    engine.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

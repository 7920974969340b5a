"""`make up` / `make down`: the local stack in the background on its fixed, documented ports.

Azurite (10000-10002), the Batch emulator (10100) and the local functions host, with logs and
pid files under .devstack/. `up` also creates the intake, data and results containers.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".devstack"
SETTINGS = ROOT / "local.settings.json"
SAMPLE = ROOT / "local.settings.sample.json"
PORTS = {"azurite": 10000, "batchemu": 10100}
ORDER = ("azurite", "batchemu", "devhost")


def settings() -> dict[str, str]:
    """local.settings.json's Values (created from the sample on first use; settings a newer sample
    added, e.g. a new queue, are added to it so an older copy keeps working)."""
    if not SETTINGS.exists():
        shutil.copy(SAMPLE, SETTINGS)
        print(f"created {SETTINGS.name} from {SAMPLE.name}")
    doc = json.loads(SETTINGS.read_text())
    missing = {k: v for k, v in json.loads(SAMPLE.read_text())["Values"].items() if k not in doc["Values"]}
    if missing:
        doc["Values"].update(missing)
        SETTINGS.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"added to {SETTINGS.name} from {SAMPLE.name}: {', '.join(sorted(missing))}")
    return {k: str(v) for k, v in doc["Values"].items()}


def _commands() -> dict[str, list[str]]:
    azurite = str(ROOT / "node_modules" / ".bin" / "azurite")
    return {
        "azurite": [azurite, "--location", str(STATE / "azurite"), "--skipApiVersionCheck", "--disableTelemetry",
                    "--loose", "--silent",  # --silent: no access log, which would hold SAS URLs
                    "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1"],
        "batchemu": [sys.executable, "-m", "batchemu", "--host", "127.0.0.1", "--port", str(PORTS["batchemu"]),
                     "--data-dir", str(STATE / "batchemu")],
        "devhost": devhost_command(SETTINGS),
    }


# devhost's longest idle wait between two polls of a container or queue. Azurite answers an idle poll
# in a millisecond or two, so the local loop polls far more often than Azure would (host.json's
# maxPollingInterval still applies when it is smaller). benchmarks/local_loop.py measures the loop.
LOCAL_POLL_INTERVAL_S = 0.25  # devhost's blob scan and queue polls locally


def devhost_command(settings_file: Path) -> list[str]:
    """The local functions host as `make up` runs it."""
    return [sys.executable, "-m", "devhost", "--app-dir", str(ROOT), "--settings", str(settings_file),
            "--poll-interval", str(LOCAL_POLL_INTERVAL_S)]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _pid(name: str) -> int | None:
    """The pid of our `name` process, if it still runs (a stale pid file, e.g. after a reboot,
    may name an unrelated process now: its command line must still be ours)."""
    path = STATE / f"{name}.pid"
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    if not pid or not _alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return pid  # no /proc here: trust the pid file
    return pid if name in cmdline else None


AZURITE_PRELOAD = ROOT / "scripts" / "azurite_preload.js"


def azurite_environment(environ: dict[str, str]) -> dict[str, str]:
    """Azurite's environment: `environ` with scripts/azurite_preload.js preloaded (without it,
    deleting a blob among ~100,000 blocks Azurite for a fraction of a second, and its GC for minutes)."""
    preload = f'--require "{AZURITE_PRELOAD}"'
    return {**environ, "NODE_OPTIONS": f"{environ.get('NODE_OPTIONS', '')} {preload}".strip()}


def environments(app_settings: dict[str, str], environ: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Each service's environment. Only the functions host gets the app settings (storage key, Batch key,
    registry password): the emulator runs tasks' commands on this machine, and Azurite needs none of them,
    so both start from a clean, minimal environment (their own settings are flags)."""
    from batchemu.environment import emulator_environment, task_base_environment

    environ = dict(os.environ if environ is None else environ)
    return {"azurite": azurite_environment(task_base_environment(environ)),
            "batchemu": emulator_environment(environ),
            "devhost": {**environ, **app_settings}}


def up(quiet: bool = False) -> None:
    STATE.mkdir(exist_ok=True)
    app_settings = settings()
    envs = environments(app_settings)
    for name in ORDER:
        if _pid(name):
            continue
        port = PORTS.get(name)
        if port and _listening(port):
            sys.exit(f"port {port} is already in use: is another stack running? (`make down` stops ours)")
        log = open(STATE / f"{name}.log", "ab")
        proc = subprocess.Popen(_commands()[name], cwd=ROOT, env=envs[name], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        (STATE / f"{name}.pid").write_text(str(proc.pid))
        if port:
            _wait(name, port, proc)
        if name == "azurite":
            _create_containers(app_settings)
        if not quiet:
            print(f"started {name:9s} pid {proc.pid}" + (f" on 127.0.0.1:{port}" if port else ""))
    if not quiet:
        print(f"logs in {STATE.relative_to(ROOT)}/; stop with `make down`")


def _wait(name: str, port: int, proc: subprocess.Popen, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            down(quiet=True)
            sys.exit(f"{name} exited at start; see .devstack/{name}.log")
        if _listening(port):
            return
        time.sleep(0.1)
    down(quiet=True)
    sys.exit(f"{name} did not open port {port} within {deadline_s}s; see .devstack/{name}.log")


def _create_containers(env: dict[str, str]) -> None:
    from shared.settings import Settings
    from shared.storage import blob_service, ensure_container

    s = Settings.from_mapping(env)
    service = blob_service(s)
    for name in (s.intake_container, s.data_container, s.results_container, s.control_container):
        ensure_container(service, name)


def down(quiet: bool = False) -> None:
    for name in reversed(ORDER):
        pid = _pid(name)
        path = STATE / f"{name}.pid"
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
            if not quiet:
                print(f"stopped {name}")
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "up":
        up()
    elif command == "down":
        down()
    else:
        sys.exit("usage: python -m scripts.devstack up|down")

"""Chaos helpers: the local stack as three processes that can be killed or stopped at any moment
and restarted in place, a seeded plan of job files and kills, and the checks of what a run left.

* `DiskAzurite`: Azurite persisting to a folder (`--location`), on fixed ports, so a restart
  finds the same accounts, blobs, queues and leases. Two ways down: `ChaosStack.kill_azurite`
  (a crash: SIGKILL, made safe by a canary and a save first) and `ChaosStack.stop_storage`
  (a storage outage: SIGTERM, which saves every database before Azurite exits).
* `EmulatorService`: `python -m batchemu --data-dir ...` on a fixed port (it requeues the tasks
  that were running when it died).
* `DevhostService`: the local functions host on the repository's function app, with a fixed
  host id (blob receipts and the internal blob-trigger queue survive its restarts).
* `ChaosStack`: the three together, the settings the host gets, and the kill procedures.
* `make_plan(seed)`: the job files (with their expected outcome) and the kill schedule.

Each service runs in its own session, so a kill takes its whole process group (task processes
started by the emulator have their own sessions and are not killed: the emulator requeues them).
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError

from tests.services import azurite_binary, azurite_connection_string, free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "rejected"})
CANARY = "chaoscanary"  # a container and a queue the pipeline never touches


class Timeline:
    """What happened when (for the failure message), in seconds: from the start of the test
    until the schedule starts (`t0` is reset then), from the start of the schedule after that,
    as in the plan; each line also has the wall-clock time, as the services' logs do."""

    def __init__(self, path: Path | None = None, label: str = "") -> None:
        self.t0 = time.monotonic()
        self.lines: list[str] = []
        self.path = path  # also written here, line by line (kept with the services' logs)
        self.label = label  # prefixes the lines CHAOS_VERBOSE prints (seeds run side by side)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        wall = time.time()
        line = f"{self.now():7.2f}s  {time.strftime('%H:%M:%S', time.localtime(wall))}.{int(wall % 1 * 1000):03d}  {text}"
        self.lines.append(line)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        if os.environ.get("CHAOS_VERBOSE"):
            print(f"{self.label}{line}", flush=True)

    def text(self) -> str:
        return "\n".join(self.lines)


# ------------------------------------------------------------------------------------ services


class Service:
    """A child process in its own session: start, SIGKILL, freeze (SIGSTOP), thaw, stop."""

    name = "service"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.kills = 0
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole process group (works on a frozen process too)."""
        if not self.running:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self, grace_s: float = 15.0) -> int | None:
        """Graceful stop (SIGTERM, then SIGKILL after the grace period). Returns the exit code."""
        if self.proc is None:
            return None
        self.thaw()
        stop_process(self.proc, grace_s)
        return self.proc.returncode

    def _spawn(self, cmd: list[str], cwd: Path, env: dict | None = None) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1}: {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class DiskAzurite(Service):
    """Azurite persisting to `location`, restartable on the same ports with the same data.

    Azurite keeps its metadata (containers, blobs, queues, messages, leases) in LokiJS databases
    that it saves every 5 seconds (`autosaveInterval: 5000`), so a SIGKILL loses up to 5 s of
    writes it already acknowledged - something Azure Storage never does. `ChaosStack.kill_azurite`
    therefore pauses every writer until every database was saved after their last write. A
    SIGTERM loses nothing: Azurite stops listening, finishes the requests it is answering and
    closes its databases (LokiJS saves on close) before it exits, in a tenth of a second
    (`terminate`; 12 trials with six writers at full speed, stopped at random moments, lost none
    of the thousands of blobs, metadata writes and messages acknowledged before the signal).
    """

    name = "azurite"
    SAVE_MARGIN_S = 0.2  # a save that ended this long after a write began after it (saves take milliseconds)

    def __init__(self, location: Path, log_path: Path) -> None:
        super().__init__(log_path)
        self.location = location
        location.mkdir(parents=True, exist_ok=True)
        self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        self.outages = 0  # stops by SIGTERM (`terminate`); `kills` counts the SIGKILLs
        self.last_start_s = 0.0  # how long the last start took until every port answered

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.blob_port, self.queue_port, self.table_port)

    def terminate(self, grace_s: float = 20.0) -> float | None:
        """SIGTERM and wait until Azurite has exited (it saves every database first). Returns
        how long that took; None if it did not exit within `grace_s` (then it is SIGKILLed and
        whatever it had not saved is lost: the canaries tell)."""
        if not self.running:
            return 0.0
        began = time.monotonic()
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1
            return None
        self.outages += 1
        return time.monotonic() - began

    def wait_saved(self, write_canary, timeout_s: float = 30.0) -> str | None:
        """Make sure everything Azurite acknowledged so far is on disk: `write_canary()` dirties
        each of its databases (a blob and a queue message), then wait until each database file was
        saved later than that (with a margin, so the save's snapshot was taken after it). A save
        that ends while the canary is written or within the margin after it may or may not hold
        the canary, and a database it did save is not saved again: then another canary is written
        and waited for. None when saved, else which databases were not."""
        deadline = time.monotonic() + timeout_s
        began = time.time()
        write_canary()
        after = time.time()
        while True:
            files = [p for p in self.location.glob("__azurite_db_*.json") if "table" not in p.name]
            saved = {p.name: p.stat().st_mtime for p in files}
            if len(files) >= 4 and all(t > after + self.SAVE_MARGIN_S for t in saved.values()):
                return None
            if time.monotonic() > deadline:
                late = {name: round(t - after, 2) for name, t in saved.items() if t <= after + self.SAVE_MARGIN_S}
                return f"not saved after {timeout_s:.0f}s: {late} (last save, seconds after the last canary)"
            if any(began < t <= after + self.SAVE_MARGIN_S for t in saved.values()):
                began = time.time()  # a save during or just after the canary: dirty them all again
                write_canary()
                after = time.time()
            time.sleep(0.05)

    def start(self) -> None:
        began = time.monotonic()
        cmd = [azurite_binary(), "--location", str(self.location), "--silent", "--skipApiVersionCheck",
               "--disableTelemetry", "--loose",
               "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
               "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
               "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port)]
        self._spawn(cmd, self.location)
        for port in (self.blob_port, self.queue_port, self.table_port):
            wait_for_port(port, self.proc, 60)
        self.last_start_s = time.monotonic() - began


class EmulatorService(Service):
    """The Batch emulator with a data directory, restartable on the same port with the same data."""

    name = "emulator"

    def __init__(self, data_dir: Path, log_path: Path, max_concurrency: int = 4,
                 transfer_retries: int | None = None) -> None:
        from batchemu.process import EmulatorProcess

        super().__init__(log_path)
        self._spec = EmulatorProcess(data_dir=data_dir, port=free_port(), max_concurrency=max_concurrency,
                                     container_mode="host", transfer_retries=transfer_retries)
        self.url, self.account, self.key = self._spec.url, self._spec.account, self._spec.key
        self.port = self._spec.port

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/_emulator/health", timeout=2) as r:
            return json.loads(r.read())

    def start(self, timeout_s: float = 60.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._spawn(self._spec.command(), ROOT, env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"batchemu exited at start with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.health()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"batchemu did not answer within {timeout_s}s:\n{self.log_tail()}")


class DevhostService(Service):
    """The local functions host on the repository's function app, with a fixed host id."""

    name = "devhost"

    def __init__(self, settings_file: Path, host_id: str, log_path: Path) -> None:
        super().__init__(log_path)
        self.settings_file = settings_file
        self.host_id = host_id
        self.log_offset = 0

    def start(self, timeout_s: float = 60.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log_offset = offset  # where this process's lines begin (`running_invocations`)
        self._spawn([sys.executable, "-m", "devhost", "--app-dir", str(ROOT), "--settings", str(self.settings_file),
                     "--poll-interval", "0.2", "--host-id", self.host_id], ROOT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                if b"Host started" in f.read():
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"devhost exited at start with code {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"devhost did not start within {timeout_s}s:\n{self.log_tail()}")

    def running_invocations(self, function: str) -> list[str]:
        """The reasons of the invocations of `function` that the running host started and has
        not finished (a dead host's unfinished ones are not counted), from its log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        started: dict[str, str] = {}
        for m in re.finditer(rf"Executing 'Functions.{function}' \(Reason='(.*)', Id=([0-9a-f-]+)\)"
                             rf"|Executed 'Functions.{function}' \([A-Za-z]+, Id=([0-9a-f-]+)", text):
            if m.group(2):
                started[m.group(2)] = m.group(1)
            else:
                started.pop(m.group(3), None)
        return list(started.values())

    def failures(self, function: str, subject: str) -> list[str]:
        """The last line of each failed invocation of `function` whose reason names `subject`
        (e.g. a blob name), from the host's log, in order."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        about: dict[str, bool] = {}
        found, current = [], None
        for line in text.splitlines():
            started = re.search(rf"Executing 'Functions.{function}' \(Reason='(.*)', Id=([0-9a-f-]+)\)", line)
            if started:
                about[started.group(2)] = subject in started.group(1)
            ended = re.search(rf"Executed 'Functions.{function}' \(Failed, Id=([0-9a-f-]+)", line)
            if ended:
                current = ended.group(1) if about.get(ended.group(1)) else None
                continue
            if current and re.match(r"\d{4}-\d\d-\d\d |=====", line):
                current = None
            if current and re.match(r"[A-Za-z_.]+(Error|Exception)\b", line):
                found.append(line.strip())
        return found


# ------------------------------------------------------------------------------------ the stack


class ChaosStack:
    """Azurite, the emulator and devhost for one chaos run, and the ways to kill them."""

    def __init__(self, workdir: Path, host_id: str, timeline: Timeline, transfer_retries: int | None = None) -> None:
        self.workdir = workdir
        self.timeline = timeline
        self.azurite = DiskAzurite(workdir / "azurite", workdir / "azurite.log")
        self.emulator = EmulatorService(workdir / "batchemu", workdir / "batchemu.log",
                                        transfer_retries=transfer_retries)
        self.devhost = DevhostService(workdir / "local.settings.json", host_id, workdir / "devhost.log")
        self.settings = None
        self.values: dict[str, str] = {}
        self.abort = threading.Event()  # set when the session ends early: the schedule and the waits stop

    @property
    def services(self) -> dict[str, Service]:
        return {"azurite": self.azurite, "emulator": self.emulator, "devhost": self.devhost}

    def start(self) -> None:
        from shared.settings import Settings
        from shared.storage import blob_service, ensure_container, queue_client
        from tests.pipeline.helpers import batch_client, settings_env

        emulator = threading.Thread(target=self.emulator.start, name="start-emulator")
        emulator.start()  # alongside Azurite, which takes longer
        try:
            self.azurite.start()
        finally:
            emulator.join()
        if not self.emulator.running:
            raise RuntimeError(f"the emulator did not start:\n{self.emulator.log_tail()}")
        sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
        self.values = {**sample, **settings_env(self.azurite, self.emulator), "MONITOR_SCHEDULE": "*/1 * * * * *"}
        (self.workdir / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": self.values}))
        self.settings = Settings.from_mapping(self.values)
        self.blobs = blob_service(self.settings)
        for name in (self.settings.intake_container, self.settings.data_container, self.settings.results_container,
                     self.settings.control_container):
            ensure_container(self.blobs, name)
        ensure_container(self.blobs, CANARY)
        self.canary_queue = queue_client(self.settings, CANARY)
        self.canary_queue.create_queue()
        self.canaries: list[str] = []
        self.blob_trigger_queue = queue_client(self.settings, f"azure-webjobs-blobtrigger-{self.devhost.host_id}")
        self.batch = batch_client(self.emulator)
        self.devhost.start()
        self.timeline.note("stack started")

    def stop(self) -> dict[str, int | None]:
        """Stop everything gracefully (devhost first); returns each exit code."""
        codes = {}
        for name in ("devhost", "emulator", "azurite"):
            service = self.services[name]
            codes[name] = service.stop() if service.running else None
        for client in (getattr(self, "blobs", None), getattr(self, "batch", None)):
            try:
                client.close()
            except Exception:
                pass
        return codes

    # -- kills -----------------------------------------------------------------------------------

    def kill_emulator(self) -> str:
        self.emulator.kill()
        return "killed"

    def kill_azurite(self) -> str | None:
        """SIGKILL Azurite at a random moment of its clients, without losing acknowledged writes.

        The clients (devhost, the emulator) are frozen wherever they are; once what they had in
        flight is answered, a canary blob and message are written and Azurite is given the time to
        save every database after them (see `DiskAzurite.wait_saved`); then it is SIGKILLed and
        the clients are thawed: they meet a storage account that is gone, mid-step. If Azurite
        does not save in time, it is not killed (returns None): the kill would lose writes.
        `check_canaries` tells whether Azurite kept everything it acknowledged before a kill.
        """
        frozen = [s for s in (self.devhost, self.emulator) if s.running]
        start = time.monotonic()
        for s in frozen:
            s.freeze()
        try:
            time.sleep(0.3)  # requests already sent are answered
            written: list[str] = []

            def canary() -> None:
                marker = f"kill-{self.azurite.kills + 1}-{len(written) + 1}"
                self.blobs.get_blob_client(CANARY, marker).upload_blob(b"", overwrite=True)
                self.canary_queue.send_message(marker)
                written.append(marker)

            unsaved = self.azurite.wait_saved(canary)
            if unsaved is None:
                self.canaries += written
                self.azurite.kill()
        finally:
            for s in frozen:
                s.thaw()
        if unsaved is not None:
            self.timeline.note(f"azurite kill skipped: its databases were {unsaved}")
            return None
        return f"killed (clients paused {time.monotonic() - start:.1f}s until Azurite had saved)"

    def check_canaries(self) -> list[str]:
        """The canaries written just before each Azurite kill that are missing now."""
        container = self.blobs.get_container_client(CANARY)
        blobs = {b.name for b in container.list_blobs()}
        messages = {str(m.content) for m in self.canary_queue.peek_messages(max_messages=32)}
        return [c for c in self.canaries if c not in blobs or c not in messages]

    def stop_storage(self) -> str:
        """A storage outage: write a canary, then SIGTERM Azurite and wait until it has exited.
        Nothing is frozen: devhost and the emulator meet storage going away in the middle of
        whatever they were doing, and every write Azurite acknowledged stays (see
        `DiskAzurite.terminate`; the canary, acknowledged just before the signal, must be there
        after the restart)."""
        marker = f"outage-{self.azurite.outages + 1}"
        self.blobs.get_blob_client(CANARY, marker).upload_blob(b"", overwrite=True)
        self.canary_queue.send_message(marker)
        self.canaries.append(marker)
        took = self.azurite.terminate()
        if took is None:
            return "did not exit within 20s of SIGTERM: SIGKILLed (writes may be lost; the canary tells)"
        return f"stopped (SIGTERM; saved and exited in {took:.2f}s)"

    def try_kill_devhost(self, job_files: Iterable[str]) -> str | None:
        """Freeze devhost and SIGKILL it unless a job file would be left waiting out a lease (see
        `intake_hazard`); otherwise thaw it. Returns None when killed, else the hazard. A first
        look without freezing keeps the host running while the answer is plainly no."""
        hazard = self.intake_hazard(job_files)
        if hazard is not None:
            return hazard
        self.devhost.freeze()
        try:
            time.sleep(0.1)  # requests already sent are answered
            hazard = self.intake_hazard(job_files)
            if hazard is None:
                self.devhost.kill()
            return hazard
        finally:
            if self.devhost.running:
                self.devhost.thaw()

    def intake_hazard(self, job_files: Iterable[str]) -> str | None:
        """Why SIGKILLing the (frozen) host now would strand one of `job_files` for ten minutes;
        None if it would not.

        The one moment no re-drive covers: the host holds a blob-trigger message (invisible for
        its 10-minute lease, as in the real host) whose intake has not yet written the run's index
        marker, so the monitor knows of no run to re-drive. That window is milliseconds, but an
        intake that a storage outage stalls in it stays there until the SDK's first retry (about
        15 s). The host's log names the job file of each intake it is running; a held message
        whose invocation has not started yet (fetched in a batch, or in the trigger's own reads of
        the blob) names none, so then any job file without a run counts."""
        job_files = set(job_files)
        queue = self.blob_trigger_queue
        try:
            held = queue.get_queue_properties().approximate_message_count \
                - len(list(queue.peek_messages(max_messages=32)))
        except ResourceNotFoundError:
            return None
        if held <= 0:
            return None
        marker = f"{self.settings.intake_container}/"
        running = [reason.partition(marker)[2] for reason in self.devhost.running_invocations("intake")]
        known = self.known_job_files()
        unknown = sorted(n for n in running if n in job_files and n not in known)
        if unknown:
            return f"intake of {', '.join(unknown)} under way before its run existed"
        if held > len(running):
            unknown = sorted(job_files - known - set(running))
            if unknown:
                return (f"{held - len(running)} intake message(s) held before their invocation while "
                        f"{', '.join(unknown)} had no run yet")
        return None

    def known_job_files(self) -> set[str]:
        """Intake blob names the pipeline knows a run of: a run folder, or an index marker (which
        names the job file while intake is under way)."""
        prefix = self.settings.intake_container + "/"
        known = {str(s.get("job_file", "")).removeprefix(prefix) for s in self.statuses()}
        control = self.blobs.get_container_client(self.settings.control_container)
        for marker in control.list_blobs(name_starts_with="active/"):
            doc = self.read_json(marker.name, self.settings.control_container) or {}
            if doc.get("container") == self.settings.intake_container and doc.get("name"):
                known.add(doc["name"])
        return known

    # -- storage helpers -------------------------------------------------------------------------

    def read_json(self, name: str, container: str | None = None) -> dict | None:
        data = self.read_blob(name, container)
        return json.loads(data) if data is not None else None

    def read_blob(self, name: str, container: str | None = None) -> bytes | None:
        try:
            return self.blobs.get_blob_client(container or self.settings.results_container, name) \
                .download_blob().readall()
        except ResourceNotFoundError:
            return None

    def statuses(self) -> list[dict]:
        """Every run's status.json in the results container."""
        results = self.blobs.get_container_client(self.settings.results_container)
        found = []
        for blob in results.list_blobs():
            parts = blob.name.split("/")
            if len(parts) == 2 and parts[1] == "status.json":
                status = self.read_json(blob.name)
                if status is not None:
                    found.append(status)
        return found

    def leftovers(self) -> dict[str, list[str]]:
        """What a finished run must not leave: Batch jobs and pools, work containers, control markers,
        the claims of its steps. Each entry names its run id first."""
        prefix = self.settings.work_prefix + "-"
        control = self.blobs.get_container_client(self.settings.control_container)

        def pool_run(pool) -> str:
            return {m.name: m.value for m in (pool.metadata or [])}.get("batchdrop-run", "?")

        return {
            "batch jobs": [f"{j.id} (job, {j.state})" for j in self.batch.list_jobs()],
            "batch pools": [f"{pool_run(p)} (pool {p.id}, {p.state})" for p in self.batch.list_pools()],
            "work containers": [f"{c.name[len(prefix):]} (container {c.name})"
                                for c in self.blobs.list_containers(name_starts_with=prefix)],
            "control markers": [f"{b.name.split('/', 1)[1]} (marker {b.name})"
                                for b in control.list_blobs(name_starts_with="active/")],
            "claim blobs": [f"{b.name.split('/')[1]} (claim {b.name})"
                            for b in control.list_blobs(name_starts_with="claims/")],
        }

    def poisoned_job_files(self) -> set[str]:
        """Blob names of intake job files whose trigger message went to the blob-trigger poison
        queue (the host gave up after 5 failed tries)."""
        from shared.storage import queue_client

        names = set()
        try:
            for m in queue_client(self.settings, "webjobs-blobtrigger-poison").peek_messages(max_messages=32):
                try:
                    message = json.loads(str(m.content))
                except ValueError:
                    continue
                if message.get("ContainerName") == self.settings.intake_container:
                    names.add(message.get("BlobName"))
        except ResourceNotFoundError:
            pass
        return names

    def poison_messages(self) -> dict[str, int]:
        from shared.storage import queue_client

        counts = {}
        for name in (f"{self.settings.finalize_queue}-poison", "webjobs-blobtrigger-poison"):
            try:
                counts[name] = queue_client(self.settings, name).get_queue_properties().approximate_message_count
            except ResourceNotFoundError:
                counts[name] = 0
        return counts


# ------------------------------------------------------------------------------------ the plan


def _sleep_cmd(k: int) -> str:
    # 0.2 .. 0.8 s, varying by task
    return f"sleep 0.$(( (TASK_INDEX * 3 + {k}) % 7 + 2 ))"


COPY = 'cat "$INPUT_PATH" > "$OUTPUT_PATH"'


def _failing(index: int, k: int) -> str:
    return (f'if [ "$TASK_INDEX" = "{index}" ]; then sleep 0.3; echo "chaos: planned failure of task {index}" >&2; '
            f'exit 3; fi; {_sleep_cmd(k)}; {COPY}')


@dataclass
class Case:
    """One job file and what must come of it."""

    name: str  # blob name in intake
    kind: str  # ok | partial | fail | reject | cancel-target
    job: dict | None = None  # None: `raw` is the job file
    raw: bytes | None = None
    data: dict[str, bytes] = field(default_factory=dict)  # data container path -> bytes, uploaded first
    shards: list[bytes] = field(default_factory=list)  # each task's input, in task order
    merged: str = "jsonl"  # how the expected output is compared: jsonl | lines | csv | concat | none | command
    failing_task: int | None = None

    def body(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.job).encode()


STORAGE_OUTAGE = "storage outage"  # a victim: Azurite stopped by SIGTERM (ChaosStack.stop_storage)


@dataclass
class Kill:
    at: float
    victim: str  # devhost | emulator | azurite (SIGKILL) | storage outage (SIGTERM)
    down_s: float  # from the kill (or the stop) until the restart


@dataclass
class Plan:
    seed: int
    cases: list[Case]
    drops: list[tuple[float, Case]]
    kills: list[Kill]
    cancel_at: float | None
    cancel_target: Case | None

    def describe(self) -> str:
        lines = [f"seed {self.seed}: {len(self.cases)} job files, {len(self.kills)} kills"]
        events = [(t, f"drop {c.name} ({c.kind})") for t, c in self.drops]
        events += [(k.at, f"storage outage: stop Azurite, restart {k.down_s:.1f}s later" if k.victim == STORAGE_OUTAGE
                    else f"kill {k.victim}, restart {k.down_s:.1f}s later") for k in self.kills]
        if self.cancel_at is not None:
            events.append((self.cancel_at, f"cancel the run of {self.cancel_target.name}"))
        lines += [f"  {t:6.2f}s  {what}" for t, what in sorted(events, key=lambda e: e[0])]
        return "\n".join(lines)


def _jsonl(records: list) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def make_plan(seed: int, data_container: str, runs: int = 12, kills: int = 6, window_s: float = 24.0) -> Plan:
    """The job files (the first `runs` of the catalogue) and the kill schedule for a seed."""
    rng = random.Random(seed)

    def items_case(c: int, label: str, kind: str, n: int, per: int, command: str, merged: str = "jsonl",
                   failing: int | None = None, **extra) -> Case:
        items = [{"case": c, "i": i, "seed": seed} for i in range(n)]
        job = {"command": command, "input": {"items": items}, "items_per_task": per, "retries": 1, **extra}
        return Case(f"c{c:02d}-{label}.json", kind, job, shards=[_jsonl(chunk) for chunk in _chunks(items, per)],
                    merged=merged, failing_task=failing)

    def blob_case(c: int, label: str, ext: str, fmt: str, header: bytes, lines: list[bytes], per: int) -> Case:
        path = f"chaos/c{c:02d}/input.{ext}"
        shards = [header + b"".join(chunk) for chunk in _chunks(lines, per)]
        job = {"command": f"{_sleep_cmd(c)}; {COPY}", "input": {"blob": f"{data_container}/{path}", "format": fmt},
               "items_per_task": per, "retries": 1}
        return Case(f"c{c:02d}-{label}.json", "ok", job, data={path: header + b"".join(lines)}, shards=shards,
                    merged=fmt)

    def failing_case(c: int, label: str, mode: str, n: int, per: int, retries: int) -> Case:
        index = rng.randint(0, n // per - 1)
        return items_case(c, label, mode, n, per, _failing(index, c), failing=index, on_task_failure=mode,
                          **{"retries": retries})

    def copy(c: int) -> str:
        return f"{_sleep_cmd(c)}; {COPY}"

    merge_cmd = {"command": 'sleep 0.3; cat "$OUTPUTS_DIR"/*/output.jsonl > "$OUTPUT_PATH"', "extension": "jsonl"}
    catalogue = [  # most important first: `runs` takes a prefix of this list
        lambda c: items_case(c, "items", "ok", rng.randint(5, 8), 2, copy(c)),
        lambda c: blob_case(c, "jsonl", "jsonl", "jsonl", b"",
                            [json.dumps({"case": c, "row": i}).encode() + b"\n" for i in range(rng.randint(6, 9))], 3),
        lambda c: failing_case(c, "fail", "fail", 6, 2, retries=1),
        lambda c: blob_case(c, "lines", "txt", "lines", b"",
                            [f"line {c}-{i}\n".encode() for i in range(rng.randint(6, 9))], 3),
        lambda c: failing_case(c, "partial", "partial", 6, 2, retries=0),
        lambda c: blob_case(c, "csv", "csv", "csv", b"id,name,value\n",
                            [f"{c}-{i},name {i},{i * 7}\n".encode() for i in range(rng.randint(4, 7))], 2),
        lambda c: Case(f"c{c:02d}-reject.json", "reject",
                       raw=json.dumps({"comand": COPY, "input": {"items": [1, 2]}}).encode()),
        lambda c: items_case(c, "merge-none", "ok", 4, 2, copy(c), merged="none", merge="none"),
        lambda c: items_case(c, "cancel-target", "cancel-target", 6, 1, f"sleep 2; {COPY}"),
        lambda c: items_case(c, "merge-command", "ok", 5, 2, copy(c), merged="command", merge=merge_cmd),
        lambda c: items_case(c, "items-tasks", "ok", rng.randint(7, 10), 3, copy(c)),
        lambda c: blob_case(c, "jsonl-pad", "jsonl", "jsonl", b"",
                            [json.dumps({"case": c, "row": i, "pad": "x" * rng.randint(0, 40)}).encode() + b"\n"
                             for i in range(rng.randint(4, 8))], 2),
        lambda c: items_case(c, "items-one", "ok", rng.randint(3, 6), 1, copy(c)),
        lambda c: failing_case(c, "fail-fast", "fail", 4, 2, retries=0),
    ]
    cases = [make(c) for c, make in enumerate(catalogue[:runs])]

    # job files arrive over the first three quarters of the window, in a seeded order
    order = cases[:]
    rng.shuffle(order)
    times = sorted(rng.uniform(0.0, window_s * 0.75) for _ in order)
    drops = list(zip(times, order, strict=True))

    # every victim at least once, then seeded extra ones, anywhere in the window. Azurite is
    # restarted 1.5-4.6 s after a storage outage's stop, the others 0.5-4 s after their kill
    extra = [rng.choice(["emulator", "devhost", STORAGE_OUTAGE]) for _ in range(max(0, kills - 4))]
    victims = ["azurite", STORAGE_OUTAGE, "emulator", "devhost", *extra]
    plan_kills = sorted((Kill(round(rng.uniform(1.0, window_s), 2), v,
                              round(rng.uniform(1.5, 4.6) if v == STORAGE_OUTAGE else rng.uniform(0.5, 4.0), 2))
                         for v in victims), key=lambda k: k.at)

    target = next((c for c in cases if c.kind == "cancel-target"), None)
    cancel_at = None
    if target is not None:
        dropped_at = next(t for t, c in drops if c is target)
        cancel_at = round(dropped_at + rng.uniform(2.0, 5.0), 2)
    return Plan(seed, cases, [(round(t, 2), c) for t, c in drops], plan_kills, cancel_at, target)


# ------------------------------------------------------------------------------------ checks


def parse_records(kind: str, data: bytes) -> list:
    """The records of an output (or of the expected shards) for comparison."""
    if kind in ("jsonl", "command"):
        return [json.loads(line) for line in data.splitlines() if line.strip()]
    if kind == "lines":
        return [line for line in data.decode().splitlines() if line.strip()]
    if kind == "csv":
        return [tuple(row) for row in csv.reader(io.StringIO(data.decode()))]
    return [data]


def expected_records(case: Case, task_indexes: list[int]) -> list:
    """The merged output the given tasks (in task order) should produce."""
    if case.merged == "csv":
        header = case.shards[0].split(b"\n", 1)[0] + b"\n"
        body = b"".join(case.shards[i][len(header):] for i in task_indexes)
        return parse_records("csv", header + body)
    return parse_records(case.merged, b"".join(case.shards[i] for i in task_indexes))

"""Start real local services for tests: Azurite and the Batch emulator, on free ports.

Each service runs as a child process of the test session and is stopped when it ends,
so the suite never depends on (or collides with) `make up`.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, deadline_s: float = 30.0) -> None:
    """Bounded wait until something accepts connections on the port."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {deadline_s}s")


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    proc: subprocess.Popen
    workdir: str

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.blob_port, self.queue_port, self.table_port)

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def azurite_connection_string(blob_port: int, queue_port: int, table_port: int) -> str:
    """The connection string of an Azurite on 127.0.0.1 with the well-known development account."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue_port}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:{table_port}/{AZURITE_ACCOUNT};"
    )


def azurite_binary() -> str:
    path = ROOT / "node_modules" / ".bin" / "azurite"
    if not path.exists():
        raise RuntimeError("Azurite is not installed: run `make test` (it runs `npm ci`) first")
    return str(path)


def start_azurite(in_memory: bool = True) -> Azurite:
    """In memory for tests; on disk (a temporary folder) for benchmarks that hold gigabytes."""
    blob, queue, table = free_port(), free_port(), free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-")
    cmd = [
        azurite_binary(), *(["--inMemoryPersistence"] if in_memory else []), "--silent",
        "--skipApiVersionCheck", "--disableTelemetry", "--loose",
        "--blobHost", "127.0.0.1", "--blobPort", str(blob),
        "--queueHost", "127.0.0.1", "--queuePort", str(queue),
        "--tableHost", "127.0.0.1", "--tablePort", str(table),
        # Azurite refuses --location together with --inMemoryPersistence
        *([] if in_memory else ["--location", workdir]),
    ]
    from scripts.devstack import azurite_environment

    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env=azurite_environment(dict(os.environ)))
    try:
        for port in (blob, queue, table):
            wait_for_port(port, proc)
    except Exception:
        stop_process(proc)
        raise
    return Azurite(blob, queue, table, proc, workdir)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Bounded polling: returns predicate()'s first truthy value, fails after the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def stop_process(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def halt_azurite(service: Azurite, grace_s: float = 10.0) -> None:
    """Stop Azurite as a storage outage would, keeping everything it acknowledged: SIGTERM, then wait
    for its clean exit (an on-disk Azurite saves its databases then; a SIGKILL would roll back writes it
    had acknowledged, which real Storage never does). Raises if it had to be killed. See `resume_azurite`."""
    if service.proc.poll() is not None:
        return
    stop_process(service.proc, grace_s)
    if service.proc.returncode == -9:
        raise RuntimeError(f"Azurite did not exit within {grace_s}s of SIGTERM and was killed: writes may be lost")


def resume_azurite(service: Azurite) -> None:
    """Start a halted Azurite again with the same command (ports, folder), and wait until it listens.
    Only meaningful for an on-disk Azurite (`start_azurite(in_memory=False)`)."""
    if service.proc.poll() is None:
        return
    service.proc = subprocess.Popen(service.proc.args, cwd=service.workdir, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
    for port in (service.blob_port, service.queue_port, service.table_port):
        wait_for_port(port, service.proc)

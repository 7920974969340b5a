"""Run the emulator as a child process (for tests, benchmarks and dev tooling)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from threading import Thread

from . import DEFAULT_ACCOUNT, DEFAULT_KEY
from .environment import emulator_environment

_PKG_PARENT = str(Path(__file__).resolve().parent.parent)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmulatorProcess:
    """``python -m batchemu`` as a child process in its own session.

    >>> with EmulatorProcess() as emu:
    ...     client = BatchClient(emu.url, AzureNamedKeyCredential(emu.account, emu.key))
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, data_dir=None, account: str = DEFAULT_ACCOUNT,
                 key: str = DEFAULT_KEY, max_concurrency: int | None = None, container_mode: str | None = None,
                 extra_args=(), env: Mapping[str, str] | None = None, transfer_retries: int | None = None,
                 transfer_retry_delay: float | None = None, quota_active_jobs: int | None = None,
                 quota_pools: int | None = None, quota_dedicated_cores: int | None = None,
                 quota_spot_cores: int | None = None):
        """`env`: extra variables for the emulator process, on top of the clean environment it always
        gets (`batchemu.environment.emulator_environment`: never the caller's whole environment).
        `transfer_retries` / `transfer_retry_delay`: ``--transfer-retries`` / ``--transfer-retry-delay``
        (None: the flag is not passed, so ``BATCHEMU_TRANSFER_RETRIES`` or the default applies).
        `quota_*`: the account quotas ``--quota-active-jobs``, ``--quota-pools``, ``--quota-dedicated-cores``,
        ``--quota-spot-cores`` (None: the flag is not passed, so ``BATCHEMU_QUOTA_*`` or unlimited applies)."""
        self.host = host
        self.port = port or _free_port(host)
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="batchemu-")
            data_dir = self._tmp
        self.data_dir = str(data_dir)
        self.account = account
        self.key = key
        self.max_concurrency = max_concurrency
        self.container_mode = container_mode
        self.transfer_retries = transfer_retries
        self.transfer_retry_delay = transfer_retry_delay
        self.quotas = {"--quota-active-jobs": quota_active_jobs, "--quota-pools": quota_pools,
                       "--quota-dedicated-cores": quota_dedicated_cores, "--quota-spot-cores": quota_spot_cores}
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self._stderr_tail: deque[str] = deque(maxlen=200)
        self._reader: Thread | None = None
        self._killed = False  # set by kill(): a SIGKILLed emulator is expected to exit non-zero

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "batchemu", "--host", self.host, "--port", str(self.port),
               "--data-dir", self.data_dir, "--account", self.account, "--key", self.key]
        if self.max_concurrency:
            cmd += ["--max-concurrency", str(self.max_concurrency)]
        if self.container_mode:
            cmd += ["--container-mode", self.container_mode]
        if self.transfer_retries is not None:
            cmd += ["--transfer-retries", str(self.transfer_retries)]
        if self.transfer_retry_delay is not None:
            cmd += ["--transfer-retry-delay", repr(float(self.transfer_retry_delay))]
        for flag, value in self.quotas.items():
            if value is not None:
                cmd += [flag, str(value)]
        return cmd + list(self.extra_args)

    def _drain(self):
        assert self.proc and self.proc.stderr
        for line in iter(self.proc.stderr.readline, b""):
            self._stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def stderr_tail(self, n: int = 40) -> str:
        return "\n".join(list(self._stderr_tail)[-n:])

    def health(self, timeout: float = 2.0) -> dict:
        with urllib.request.urlopen(self.url + "/_emulator/health", timeout=timeout) as r:
            return json.loads(r.read())

    def start(self, timeout: float = 30.0) -> EmulatorProcess:
        if self.proc and self.proc.poll() is None:
            return self
        env = emulator_environment(os.environ, {"PYTHONPATH": _PKG_PARENT, **self.env})
        self._stderr_tail.clear()
        self._killed = False
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, start_new_session=True)
        self._reader = Thread(target=self._drain, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(timeout=2)
                raise RuntimeError(f"batchemu exited early with code {self.proc.returncode}:\n{self.stderr_tail()}")
            try:
                # our own child must answer: another server that took the port (its bind then fails) must not
                if self.health(timeout=1).get("pid") == self.proc.pid:
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self._terminate(grace=5.0)
        raise TimeoutError(f"batchemu did not become healthy within {timeout}s:\n{self.stderr_tail()}")

    def _terminate(self, grace: float) -> bool:
        """SIGTERM, then SIGKILL after `grace` seconds. True if it had to be SIGKILLed."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is not None:
            return False
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:  # exited between poll() and killpg(): nothing to stop
            pass
        try:
            proc.wait(timeout=grace)
            return False
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
            return True
        finally:
            if self._reader:
                self._reader.join(timeout=2)

    def stop(self, grace: float = 15.0) -> int | None:
        """Stop the emulator (SIGTERM, SIGKILL after `grace` seconds) and return its exit code.

        Raises RuntimeError, with the tail of its stderr, if it did not exit cleanly: it had to be
        SIGKILLed, or it exited with a non-zero code (it crashed) without `kill()` having been called."""
        if self.proc is None:
            return None
        if self._terminate(grace):
            raise RuntimeError(f"batchemu did not stop within {grace}s of SIGTERM and was killed:\n"
                               f"{self.stderr_tail()}")
        rc = self.proc.returncode
        if rc != 0 and not self._killed:
            raise RuntimeError(f"batchemu exited with code {rc}:\n{self.stderr_tail()}")
        return rc

    def kill(self) -> None:
        """Hard kill (SIGKILL), e.g. to test crash recovery."""
        if self.proc and self.proc.poll() is None:
            self._killed = True
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

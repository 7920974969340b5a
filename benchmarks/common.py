"""Shared by the benchmark scripts: real local services on free ports, and small measuring tools."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.services import start_azurite

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def services(max_concurrency: int | None = None, azurite_in_memory: bool = True, **emulator_options):
    """Azurite and the Batch emulator for one benchmark run; stopped afterwards. `emulator_options`:
    more EmulatorProcess arguments, e.g. quota_active_jobs=5."""
    from batchemu.process import EmulatorProcess

    azurite = start_azurite(in_memory=azurite_in_memory)
    emulator = EmulatorProcess(data_dir=tempfile.mkdtemp(prefix="bench-batchemu-"), max_concurrency=max_concurrency,
                               **emulator_options)
    try:
        emulator.start()
        yield azurite, emulator
    finally:
        try:
            emulator.stop()
        finally:
            azurite.stop()
            shutil.rmtree(emulator.data_dir, ignore_errors=True)


def env_for(azurite, emulator, suffix: str = "bench") -> dict[str, str]:
    from tests.pipeline.helpers import settings_env

    env = settings_env(azurite, emulator, suffix)
    env.update(UPLOAD_CONCURRENCY="16", SUBMIT_CONCURRENCY="4")
    return env


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def run_child(module: str, *args: str) -> dict:
    """Run one measured step in a fresh interpreter, so that its peak RSS is its own; the
    child prints one JSON line (including its own peak_rss_mib) last."""
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[tuple], headers: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), line(tuple("-" * w for w in widths))] + [line(r) for r in rows])

"""The client tests run only under `make test-clients` (BATCHDROP_CLIENT_TESTS=1), which installs azure-cli
into its own venv (.venv-clients): never in `make test`. Without `az` they skip, saying why.

`az` talks to the real emulator (the session's `batch_emulator`) with SharedKey auth, through the variables
az batch reads (AZURE_BATCH_ACCOUNT / _ACCESS_KEY / _ENDPOINT: the key never appears on a command line), with
its own throw-away config directory and no telemetry."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

if os.environ.get("BATCHDROP_CLIENT_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]

ROOT = Path(__file__).resolve().parents[2]


class AzError(Exception):
    def __init__(self, args: tuple[str, ...], code: int, stderr: str):
        super().__init__(f"az {' '.join(args)} exited {code}: {stderr.strip()[-2000:]}")
        self.code = code
        self.stderr = stderr


class Az:
    """Runs `az batch ...` against the emulator; JSON output parsed."""

    def __init__(self, exe: str, env: dict[str, str]):
        self.exe = exe
        self.env = env

    def __call__(self, *args: str) -> object:
        proc = subprocess.run([self.exe, "batch", *args, "--output", "json"], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            raise AzError(args, proc.returncode, proc.stderr)
        return json.loads(proc.stdout) if proc.stdout.strip() else None


@pytest.fixture(scope="session")
def az(batch_emulator, tmp_path_factory) -> Az:
    exe = os.environ.get("BATCHDROP_AZ") or str(ROOT / ".venv-clients" / "bin" / "az")
    if not os.access(exe, os.X_OK):
        pytest.skip(f"no azure-cli at {exe}: `make test-clients` installs it into .venv-clients")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update({"AZURE_CONFIG_DIR": str(tmp_path_factory.mktemp("azconfig")),
                "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_NO_COLOR": "true",
                "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
                "AZURE_BATCH_ACCOUNT": batch_emulator.account, "AZURE_BATCH_ACCESS_KEY": batch_emulator.key,
                "AZURE_BATCH_ENDPOINT": batch_emulator.url})
    return Az(exe, env)

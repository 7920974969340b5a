"""A virtual environment of its own for checkov (infra/requirements-tools.txt, every package pinned
by infra/constraints-tools.txt).

checkov pins packages (packaging<24, pycep-parser 0.5, boto3, ...) that clash with the app's and
pytest's pins, so it never goes into .venv. `ensure()` creates the environment on first use (one
to four minutes, mostly downloads) in the user's cache, under a name made of the two files'
hash: every checkout and CI run on the machine reuses it, and changing a pin makes a new one.
BATCHDROP_INFRA_TOOLS names another parent directory. Concurrent test runs wait for each other
on a lock file.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.infra.bicep import INFRA

REQUIREMENTS = INFRA / "requirements-tools.txt"
CONSTRAINTS = INFRA / "constraints-tools.txt"


class ToolsUnavailable(RuntimeError):
    pass


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in (REQUIREMENTS, CONSTRAINTS):
        digest.update(path.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def home() -> Path:
    """Where the environment lives (it need not exist yet)."""
    base = os.environ.get("BATCHDROP_INFRA_TOOLS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "batchdrop", "infra-tools")
    return Path(base) / _fingerprint()[:16]


def ensure() -> Path:
    """The checkov executable, installing it first if needed. Raises ToolsUnavailable with pip's
    own last lines when the install fails (no network to the package index, for one)."""
    want = _fingerprint()
    venv = home()
    stamp, checkov = venv / ".installed", venv / "bin" / "checkov"
    if stamp.exists() and stamp.read_text() == want and checkov.exists():
        return checkov
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == want and checkov.exists():
            return checkov
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        stamp.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-compile", "-r", str(REQUIREMENTS), "-c", str(CONSTRAINTS)],
            capture_output=True, text=True, env=env)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise ToolsUnavailable(f"installing checkov into {venv} failed:\n{tail}")
        stamp.write_text(want)
    return checkov

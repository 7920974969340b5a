"""The deployment a live test runs against: the values `azd env get-values` prints (the outputs
of infra/main.bicep), or a file of the same KEY="value" lines named by BATCHDROP_AZD_ENV_FILE
(for a pipeline that saved them). `load` never raises: it gives the values, or why there are none.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
REQUIRED = ("AZURE_STORAGE_BLOB_ENDPOINT", "AZURE_BATCH_ACCOUNT_URL", "INTAKE_CONTAINER", "RESULTS_CONTAINER",
            "WORK_CONTAINER_PREFIX", "AZURE_FUNCTION_APP_NAME")


def parse(text: str) -> dict[str, str]:
    """KEY="value" lines (azd's format: double quotes, backslash escapes) into a dict."""
    values = {}
    for line in text.splitlines():
        key, sep, raw = line.strip().partition("=")
        if not sep or not key or key.startswith("#"):
            continue
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        values[key] = raw
    return values


def load(env: dict[str, str] | None = None) -> tuple[dict[str, str] | None, str]:
    env = dict(os.environ if env is None else env)
    source = env.get("BATCHDROP_AZD_ENV_FILE")
    if source:
        path = Path(source)
        if not path.is_file():
            return None, f"BATCHDROP_AZD_ENV_FILE={source} is not a file"
        values, where = parse(path.read_text()), source
    else:
        azd = shutil.which("azd", path=env.get("PATH"))
        if azd is None:
            return None, ("no deployment configured: azd is not installed (deploy with `azd up`, see docs/deploy.md, "
                          "or name a saved `azd env get-values` output in BATCHDROP_AZD_ENV_FILE)")
        done = subprocess.run([azd, "env", "get-values", "--no-prompt"], cwd=ROOT, capture_output=True, text=True,
                              env=env, timeout=120)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
            return None, f"no deployment configured: `azd env get-values` failed ({last[0]}); run `azd up` first"
        values, where = parse(done.stdout), "azd env get-values"
    missing = [name for name in REQUIRED if not values.get(name)]
    if missing:
        return None, (f"no deployment configured: {where} has no {', '.join(missing)} (outputs of "
                      f"infra/main.bicep): run `azd up` (or `azd env refresh`)")
    return values, ""

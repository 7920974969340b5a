"""How the live tests find a deployment (tests/infra/live/environment.py), offline: azd's output
parsed, and a clear reason whenever there is no deployment to test."""
from __future__ import annotations

import stat
import sys

from tests.infra.live import environment

FULL = {name: f"value-{name.lower()}" for name in environment.REQUIRED}


def azd_output(values: dict[str, str]) -> str:
    return "".join(f'{k}="{v}"\n' for k, v in values.items())


def test_parse_reads_azd_env_get_values():
    text = 'A="1"\nB="with \\"quotes\\" and = sign"\nC=""\n\nnot a line\nD=bare\n'
    assert environment.parse(text) == {"A": "1", "B": 'with "quotes" and = sign', "C": "", "D": "bare"}


def test_no_azd_is_a_reason_to_skip(tmp_path):
    values, reason = environment.load({"PATH": str(tmp_path)})
    assert values is None and "azd is not installed" in reason and "BATCHDROP_AZD_ENV_FILE" in reason


def fake_azd(tmp_path, script: str):
    exe = tmp_path / "azd"
    exe.write_text(f"#!{sys.executable}\n{script}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return {"PATH": str(tmp_path)}


def test_no_azd_environment_is_a_reason_to_skip(tmp_path):
    env = fake_azd(tmp_path, "import sys; print('ERROR: no default environment set', file=sys.stderr); sys.exit(1)")
    values, reason = environment.load(env)
    assert values is None and "no default environment set" in reason and "azd up" in reason


def test_an_environment_without_outputs_is_a_reason_to_skip(tmp_path):
    env = fake_azd(tmp_path, f"print({azd_output({'AZURE_ENV_NAME': 'dev'})!r})")
    values, reason = environment.load(env)
    assert values is None and all(name in reason for name in environment.REQUIRED)


def test_a_deployed_environment_is_found(tmp_path):
    env = fake_azd(tmp_path, f"print({azd_output(FULL)!r})")
    assert environment.load(env) == (FULL, "")


def test_a_saved_copy_can_stand_in_for_azd(tmp_path):
    saved = tmp_path / "env.txt"
    saved.write_text(azd_output(FULL))
    assert environment.load({"PATH": "", "BATCHDROP_AZD_ENV_FILE": str(saved)}) == (FULL, "")
    values, reason = environment.load({"PATH": "", "BATCHDROP_AZD_ENV_FILE": str(tmp_path / "missing")})
    assert values is None and "is not a file" in reason

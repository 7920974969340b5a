"""A stand-in for the Azure CLI, for testing the azd hooks without Azure.

Installed as `az` on PATH by tests/infra/test_hooks.py. It keeps a small model of the few things
the hooks touch (a function app's blobs_extension key, ARM deployments, a registry token, Key
Vault secrets) in $STUB_AZ_DIR/state.json, and appends every call to $STUB_AZ_DIR/calls.jsonl:
its arguments, and the contents of any file an argument names (`--parameters @f`, `--file f`),
since the hooks delete those files right after. Answers are JSON, as `--output json` gives.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(os.environ["STUB_AZ_DIR"])
STATE = HERE / "state.json"


def arg(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def main(argv: list[str]) -> None:
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    record: dict = {"argv": argv}
    for flag in ("--parameters", "--file"):
        value = arg(argv, flag)
        if value:
            path = value[1:] if value.startswith("@") else value
            record["file"] = Path(path).read_text()
            record["file_mode"] = oct(os.stat(path).st_mode & 0o777)
    with open(HERE / "calls.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")
    try:
        out = answer(argv, state, record)
    finally:  # a failing call (sys.exit) keeps its state changes too
        STATE.write_text(json.dumps(state))
    if out is not None:
        print(json.dumps(out))


def answer(argv: list[str], state: dict, record: dict):
    words = [w for w in argv if not w.startswith("-")][:4]
    now = datetime.now(UTC)
    if words[:3] == ["functionapp", "keys", "list"]:
        keys = state.setdefault("keys", [""])
        key = keys.pop(0) if len(keys) > 1 else keys[0]
        return key or None
    if words[:3] == ["deployment", "group", "create"]:
        state.setdefault("deployments", {})[arg(argv, "--name")] = json.loads(record["file"])
        return "Succeeded"
    if words[:3] == ["acr", "token", "show"]:
        token = state.setdefault("token", {"passwords": []})  # as Bicep creates it: no password
        return {"name": arg(argv, "--name"), "credentials": {"passwords": token["passwords"]}}
    if words[:4] == ["acr", "token", "credential", "generate"]:
        state["generated"] = state.get("generated", 0) + 1
        days = int(arg(argv, "--expiration-in-days"))
        made = {"name": "password1", "creationTime": (now + timedelta(seconds=state["generated"])).isoformat(),
                "expiry": (now + timedelta(days=days)).isoformat(), "value": f"s3cret-{state['generated']}"}
        state["token"] = {"passwords": [{k: v for k, v in made.items() if k != "value"}]}
        return {"passwords": [made], "username": arg(argv, "--name")}
    if words[:3] == ["keyvault", "secret", "show"] or words[:3] == ["keyvault", "secret", "set"]:
        if state.get("forbidden", 0) > 0:
            state["forbidden"] -= 1
            fail("(Forbidden) Caller is not authorized to perform action on resource. Code: ForbiddenByRbac")
        secrets = state.setdefault("secrets", {})
        name = arg(argv, "--name")
        if words[2] == "show":
            if name not in secrets:
                fail(f"(SecretNotFound) A secret with (name/id) {name} was not found in this key vault.")
            return {"tags": secrets[name]["tags"], "expires": secrets[name]["expires"]}
        key, _, value = (arg(argv, "--tags") or "=").partition("=")
        secrets[name] = {"value": record["file"], "tags": {key: value} if key else {}, "expires": arg(argv, "--expires")}
        return f"https://vault/secrets/{name}/1"
    print(f"stub az: unexpected call: {argv}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])

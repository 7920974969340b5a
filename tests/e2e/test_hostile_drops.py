"""Hostile job files dropped through the real function app under the local functions host: every
one ends `rejected` with an error.json naming its field (or line and column), none crashes the
trigger into retries and poison, and nothing is created in Batch."""
from __future__ import annotations

import json

import pytest

from tests.e2e import test_drop_and_watch as base
from tests.e2e.test_drop_and_watch import drop, watch_status

pytestmark = pytest.mark.e2e
stack = base.stack  # the devhost fixture of the drop-and-watch tests

COPY = 'cat "$INPUT_PATH" > "$OUTPUT_PATH"'


def hostile_files(settings) -> dict[str, tuple[bytes, str]]:
    """name -> (raw job file, the field error.json must name; "line" for a syntax error)."""
    data = settings.data_container

    def job(**fields) -> bytes:
        return json.dumps({"command": COPY, "input": {"items": [1]}, **fields}).encode()

    return {
        "deep.json": (b'{"command": "true", "input": {"items": [' + b"[" * 5000 + b"]" * 5000 + b"]}}",
                      "line"),
        "nul.json": (job(command="true\u0000; rm -rf /"), "command"),
        "surrogate.json": (b'{"command": "echo \\ud800", "input": {"items": [1]}}', "command"),
        "bigint.json": (b'{"command": "true", "input": {"items": [1]}, "retries": 1' + b"0" * 5000 + b"}", "retries"),
        "nan.json": (b'{"command": "true", "input": {"items": [1]}, "config": {"x": NaN}}', "config.x"),
        "newline-pool.json": (job(pool={"id": "mypool\n"}), "pool.id"),
        "dotdot.json": (job(input={"blob": f"{data}/a/../../{settings.results_container}/x.jsonl"}), "input.blob"),
        "escaped.json": (job(input={"blob": f"{data}/..%2f{settings.intake_container}%2fx.json"}), "input.blob"),
        "steal-intake.json": (job(input={"prefix": f"{settings.intake_container}/"}), "input.prefix"),
        "steal-results.json": (job(config={"blob": f"{settings.results_container}/a/status.json"}), "config.blob"),
        "image-flag.json": (job(image="--privileged"), "image"),
        "no-pool.json": (job(pool={"id": "no-such-pool"}), "pool.id"),
        "syntax.json": (b'{"command": "true",\n "input": {"items": [1]}\n,,}', "line"),
    }


def test_hostile_job_files_are_each_rejected_naming_their_field(stack):
    settings, service, log = stack
    runs = {name: (drop(service, settings, name, raw), field)
            for name, (raw, field) in hostile_files(settings).items()}
    for name, (run_id, field) in runs.items():
        status, _ = watch_status(service, settings, run_id, deadline_s=60)
        assert status["state"] == "rejected", (name, status)
        error = json.loads(service.get_blob_client(settings.results_container, f"{run_id}/error.json")
                           .download_blob().readall())
        if field == "line":
            assert "line" in error["message"] and "column" in error["message"], (name, error)
        else:
            assert error["field"] == field, (name, error)
    text = log.read_text()
    assert "Traceback" not in text and "poison" not in text.lower(), text[-3000:]
    assert not list(service.list_containers(name_starts_with=settings.work_prefix + "-"))

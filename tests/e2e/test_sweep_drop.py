"""End to end: a sweep job file dropped into intake under the local functions host, its results watched
the way a user watches them (docs/jobfile.md, "Parameter sweeps")."""
from __future__ import annotations

import json

import pytest

from tests.e2e.test_drop_and_watch import drop, stack, watch_status  # noqa: F401  (stack is a fixture)

pytestmark = pytest.mark.e2e
# each output line: {"task": <TASK_INDEX>, "item": <the input line as the task read it>}
TAG = 'sed "s/^/{\\"task\\":$TASK_INDEX,\\"item\\":/; s/$/}/" "$INPUT_PATH" > "$OUTPUT_PATH"'


def test_a_sweep_runs_one_item_per_combination_through_the_host(stack):  # noqa: F811
    settings, service, log = stack
    job = {"command": TAG, "items_per_task": 4,
           "input": {"sweep": {"model": ["a", "b"], "zip": {"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]},
                               "seed": {"range": [0, 2]}}}}
    run_id = drop(service, settings, "grid.json", json.dumps(job).encode())
    status, _ = watch_status(service, settings, run_id)
    assert status["state"] == "succeeded", (status, log.read_text()[-3000:])
    assert status["tasks"]["total"] == 3  # 2 x 3 x 2 = 12 combinations, 4 a task
    output = service.get_blob_client(settings.results_container, f"{run_id}/output.jsonl").download_blob().readall()
    lines = [json.loads(line) for line in output.splitlines()]
    expected = [{"model": m, "x": x, "y": y, "seed": s}
                for m in ("a", "b") for x, y in ((1, 0.5), (2, 1.5), (3, 2.5)) for s in (0, 1)]
    assert [line["item"] for line in lines] == expected
    assert [line["task"] for line in lines] == [i // 4 for i in range(12)]

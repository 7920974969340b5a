"""Parameter sweeps (`"input": {"sweep": ...}`, docs/jobfile.md) run whole against real Azurite and the real
emulator: each task's input holds its combinations in the documented order, `items_per_task` and `tasks`
apply, the merged output holds every combination once, and limits reject before anything is created.

Not the orphan sweep (tests/pipeline/test_sweep.py), which is unrelated."""
from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from shared.accept import accept
from tests.pipeline.helpers import (
    COPY,
    assert_rejected,
    build_context,
    drop,
    results_blob,
    run_to_end,
    status,
)
from tests.pipeline.test_submit_chunks import CHUNK, submit_all

# each output line: {"task": <TASK_INDEX>, "of": <TASK_COUNT>, "item": <the input line as the task read it>}
TAG = 'sed "s/^/{\\"task\\":$TASK_INDEX,\\"of\\":$TASK_COUNT,\\"item\\":/; s/$/}/" "$INPUT_PATH" > "$OUTPUT_PATH"'


def combinations(**params: list[Any]) -> list[dict[str, Any]]:
    """The documented order, written independently: itertools.product, the last parameter fastest."""
    return [dict(zip(params, values, strict=True)) for values in itertools.product(*params.values())]


def jsonl(items: list[Any]) -> bytes:
    return b"".join(json.dumps(i, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for i in items)


def run_job(ctx, name: str, job: dict) -> tuple[str, dict]:
    d = drop(ctx, name, job)
    assert accept(ctx, d.container, d.name) == d.run_id
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    return d.run_id, final


def tagged_output(ctx, run_id: str) -> list[dict]:
    return [json.loads(line) for line in results_blob(ctx, f"{run_id}/output.jsonl").splitlines()]


def test_issue_shape_with_items_per_task(ctx):
    sweep = {"alpha": [0.1, 0.2, 0.5], "seed": {"range": [0, 4]}, "model": ["a", "b"]}
    expected = combinations(alpha=[0.1, 0.2, 0.5], seed=[0, 1, 2, 3], model=["a", "b"])  # 24
    run_id, final = run_job(ctx, "issue-shape.json", {"command": TAG, "input": {"sweep": sweep}, "items_per_task": 5})
    assert final["tasks"]["total"] == 5 and final["tasks"]["succeeded"] == 5
    lines = tagged_output(ctx, run_id)
    assert [line["item"] for line in lines] == expected
    assert [line["task"] for line in lines] == [i // 5 for i in range(24)]  # 5, 5, 5, 5, 4 in task order
    assert {line["of"] for line in lines} == {5}
    assert list(lines[0]["item"]) == ["alpha", "seed", "model"]  # keys in the job file's order
    report = json.loads(results_blob(ctx, f"{run_id}/report.json"))
    assert [e["task_id"] for e in report["entries"]] == [f"t{i:06d}" for i in range(5)]


def test_zip_group_and_a_counting_down_range_split_into_tasks(ctx):
    sweep = {"lr": [0.1, 0.01], "zip": {"depth": [2, 4, 8], "width": [16, 32, 64]}, "seed": {"range": [10, 0, -4]}}
    expected = [{"lr": lr, "depth": d, "width": w, "seed": s}
                for lr in (0.1, 0.01) for d, w in ((2, 16), (4, 32), (8, 64)) for s in (10, 6, 2)]  # 18
    run_id, final = run_job(ctx, "zipped.json", {"command": TAG, "input": {"sweep": sweep}, "tasks": 4})
    assert final["tasks"]["total"] == 4
    lines = tagged_output(ctx, run_id)
    assert [line["item"] for line in lines] == expected
    per_task = [sum(1 for line in lines if line["task"] == t) for t in range(4)]
    assert per_task == [5, 5, 4, 4]  # sizes differ by at most one, the first tasks take the extra


def test_each_tasks_input_holds_its_combinations_as_jsonl(ctx):
    # mixed scalars, two zip groups, outputs kept per task: each task's output is its input, byte for byte
    sweep = {"v": ["x", 1, 2.5, True, None], "zip": [{"a": [1, 2], "b": ["p", "q"]}]}
    expected = [{"v": v, "a": a, "b": b} for v in ["x", 1, 2.5, True, None] for a, b in ((1, "p"), (2, "q"))]
    run_id, final = run_job(ctx, "inputs.json", {"command": COPY, "input": {"sweep": sweep}, "items_per_task": 3,
                                                 "merge": "none"})
    assert final["tasks"]["total"] == 4
    for task in range(4):
        got = results_blob(ctx, f"{run_id}/tasks/t{task:06d}/output.jsonl")
        assert got == jsonl(expected[task * 3:task * 3 + 3]), task


def test_a_sweep_submitted_in_chunks_resumes_from_the_cursor(env, batch):
    """Each continuation re-parses the kept job file and generates the sweep again up to the cursor:
    the same combinations land in the same tasks."""
    ctx = build_context({**env, "INTAKE_BUDGET_SECONDS": "0", "SUBMIT_CHUNK_TASKS": str(CHUNK)})
    sweep = {"model": ["a", "b", "c"], "zip": {"x": [1, 2, 3], "y": ["p", "q", "r"]}, "seed": {"range": [0, 5]}}
    expected = [{"model": m, "x": x, "y": y, "seed": s}
                for m in "abc" for x, y in ((1, "p"), (2, "q"), (3, "r")) for s in range(5)]  # 45
    d = drop(ctx, "chunked.json", {"command": TAG, "input": {"sweep": sweep}, "items_per_task": 2})
    accept(ctx, d.container, d.name)
    first = status(ctx, d.run_id)
    assert (first["state"], first["tasks"]["total"], first["submitted"]) == ("running", 23, CHUNK)
    assert submit_all(ctx, d.run_id) == [7, 14, 21, 23]
    final = run_to_end(ctx, d.run_id, deadline_s=120)
    assert final["state"] == "succeeded" and final["submitted"] == 23
    lines = tagged_output(ctx, d.run_id)
    assert [line["item"] for line in lines] == expected
    assert [line["task"] for line in lines] == [i // 2 for i in range(45)]
    assert {line["of"] for line in lines} == {23}


@pytest.fixture
def small_limit(env):
    return build_context({**env, "MAX_TASKS_PER_RUN": "50"})


def test_a_sweep_of_more_tasks_than_the_limit_is_rejected_and_fits_with_items_per_task(small_limit, batch):
    ctx = small_limit
    sweep = {"model": ["a", "b", "c"], "seed": {"range": [0, 20]}}  # 60 combinations
    d = drop(ctx, "too-many.json", {"command": COPY, "input": {"sweep": sweep}})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "items_per_task",
                                               "60 tasks", "at most 50")
    ok = drop(ctx, "fits.json", {"command": COPY, "input": {"sweep": sweep}, "items_per_task": 2})
    assert accept(ctx, ok.container, ok.name) == ok.run_id
    assert status(ctx, ok.run_id)["tasks"]["total"] == 30
    assert run_to_end(ctx, ok.run_id)["state"] == "succeeded"
    out = results_blob(ctx, f"{ok.run_id}/output.jsonl")
    assert out == jsonl(combinations(model=["a", "b", "c"], seed=list(range(20))))


def test_an_astronomical_sweep_is_rejected_naming_it(ctx, batch):
    sweep = {f"p{i}": {"range": [0, 1_000_000]} for i in range(50)}  # 10**300 combinations
    d = drop(ctx, "astronomical.json", {"command": COPY, "input": {"sweep": sweep}, "tasks": 10})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "input.sweep",
                                               "more than 1,000,000 combinations")


def test_a_bad_parameter_is_rejected_naming_it(ctx, batch):
    d = drop(ctx, "bad-param.json", {"command": COPY, "input": {"sweep": {"alpha": [0.1], "model": []}}})
    assert_rejected(ctx, batch, accept(ctx, d.container, d.name), "input.sweep.model",
                                               "empty list")

"""Parameter sweeps (docs/jobfile.md, "sweep"): the product, its order, zip groups, ranges, limits and
errors, through the job file parser as a user's file reaches it."""
from __future__ import annotations

import itertools
import json
import random
import time
from typing import Any

import pytest

from shared import paramsweep, split
from shared.errors import JobFileError
from shared.jobfile import ItemsInput, JobSpec, input_extension, parse_job_file, task_output_name
from shared.paramsweep import MAX_ITEMS, Sweep

ISSUE_EXAMPLE = {"alpha": [0.1, 0.2, 0.5], "seed": {"range": [0, 100]}, "model": ["a", "b"]}


def job(sweep: Any, **fields: Any) -> JobSpec:
    doc = {"command": "python3 train.py", "input": {"sweep": sweep}, **fields}
    return parse_job_file(json.dumps(doc).encode(), blob_name="jobs/sweep.json")


def sweep_of(value: Any) -> Sweep:
    spec = job(value)
    assert isinstance(spec.input, ItemsInput) and isinstance(spec.input.items, Sweep)
    return spec.input.items


def rejection(value: Any) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        job(value)
    assert info.value.message.strip()
    return info.value


def product(**params: list[Any]) -> list[dict[str, Any]]:
    """The documented order, written independently: itertools.product, the last parameter fastest."""
    return [dict(zip(params, values, strict=True)) for values in itertools.product(*params.values())]


# ---------------------------------------------------------------- the product and its order


def test_issue_example_is_the_cartesian_product_with_the_last_parameter_fastest():
    sweep = sweep_of(ISSUE_EXAMPLE)
    expected = product(alpha=[0.1, 0.2, 0.5], seed=list(range(100)), model=["a", "b"])
    assert len(sweep) == 600
    assert list(sweep) == expected
    assert sweep[0] == {"alpha": 0.1, "seed": 0, "model": "a"}
    assert sweep[1] == {"alpha": 0.1, "seed": 0, "model": "b"}
    assert sweep[2] == {"alpha": 0.1, "seed": 1, "model": "a"}
    assert sweep[-1] == {"alpha": 0.5, "seed": 99, "model": "b"}
    assert sweep.describe() == "600 combinations: alpha (3) x seed (100) x model (2)"


def test_parameter_order_is_the_order_written_in_the_job_file_not_alphabetical():
    sweep = sweep_of({"zeta": [1, 2], "alpha": ["x", "y"], "mid": [True]})
    assert list(sweep) == product(zeta=[1, 2], alpha=["x", "y"], mid=[True])
    assert all(list(item) == ["zeta", "alpha", "mid"] for item in sweep)


def test_indexing_and_slicing_agree_with_iteration():
    sweep = sweep_of({"a": [1, 2, 3], "b": {"range": [0, 7]}, "c": ["p", "q"], "d": [None]})
    items = list(sweep)
    assert [sweep[i] for i in range(len(sweep))] == items
    assert [sweep[i] for i in range(-len(sweep), 0)] == items
    for start, stop, step in [(0, 42, 1), (5, 17, 1), (13, 14, 1), (40, 3, -1), (0, 42, 5), (41, 100, 1), (7, 7, 1)]:
        assert sweep[start:stop:step] == items[start:stop:step]
    with pytest.raises(IndexError):
        sweep[len(sweep)]
    with pytest.raises(IndexError):
        sweep[-len(sweep) - 1]


# Generation goes a block at a time: shapes on both sides of its choices (paramsweep._TAIL), each with
# its items written out independently.
SHAPES: dict[str, tuple[dict, Any]] = {
    "small last axes": ({"a": [1, 2], "b": {"range": [0, 100]}, "c": {"range": [0, 50]}, "d": [0, 1, 2]},
                        lambda: product(a=[1, 2], b=list(range(100)), c=list(range(50)), d=[0, 1, 2])),
    "long last axis": ({"a": [1, 2, 3], "b": {"range": [0, 10_000]}},
                       lambda: product(a=[1, 2, 3], b=list(range(10_000)))),
    "tiny tail, long head": ({"a": {"range": [0, 30_000]}, "b": [1, 2], "c": [None]},
                             lambda: product(a=list(range(30_000)), b=[1, 2], c=[None])),
    "zip last, long": ({"a": ["p", "q"], "zip": {"x": {"range": [0, 5000]}, "y": {"range": [5000, 0, -1]}}},
                       lambda: [{"a": a, "x": x, "y": 5000 - x} for a in "pq" for x in range(5000)]),
    "many axes": ({f"p{i}": [i, -i] for i in range(14)}, lambda: product(**{f"p{i}": [i, -i] for i in range(14)})),
    "ones": ({"a": [1], "b": ["x"], "c": [True]}, lambda: [{"a": 1, "b": "x", "c": True}]),
    "one long axis": ({"n": {"range": [0, 9000]}}, lambda: [{"n": n} for n in range(9000)]),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_generation_in_blocks_agrees_with_the_product_for_every_shape(shape):
    value, written_out = SHAPES[shape]
    sweep, expected = sweep_of(value), written_out()
    assert len(sweep) == len(expected)
    assert list(sweep) == expected
    n = len(expected)
    for start, stop in [(0, n), (1, n - 1), (n // 3, n // 2), (n - 1, n), (4095, 4097), (4096, 8193), (3, 3)]:
        assert sweep[start:stop] == expected[start:stop], (start, stop)
    assert sweep[::997] == expected[::997]


def test_items_are_fresh_objects():
    sweep = sweep_of({"a": [1, 2], "b": [3, 4]})
    sweep[0]["a"] = "changed"
    for item in sweep:
        item["b"] = "changed"
    sweep[1:3][0]["a"] = "changed"
    assert list(sweep) == product(a=[1, 2], b=[3, 4])


def test_a_sweep_at_the_limit_is_counted_and_indexed_without_being_generated():
    sweep = sweep_of({"a": {"range": [0, 1000]}, "b": {"range": [0, 1000]}})
    started = time.perf_counter()
    assert len(sweep) == MAX_ITEMS
    assert sweep[MAX_ITEMS - 1] == {"a": 999, "b": 999}
    assert sweep[123_456] == {"a": 123, "b": 456}
    assert sweep[999_998:] == [{"a": 999, "b": 998}, {"a": 999, "b": 999}]
    assert time.perf_counter() - started < 0.5


def test_one_parameter_sweeps_its_values_in_order():
    assert list(sweep_of({"seed": {"range": [3, 6]}})) == [{"seed": 3}, {"seed": 4}, {"seed": 5}]


# ---------------------------------------------------------------- values


def test_values_may_be_any_json_scalars_mixed_and_are_kept_as_written():
    values = ["a", 1, 2.5, -0.0, True, False, None, "", "naïve ☃", 10 ** 30, 1e300]
    sweep = sweep_of({"v": values})
    assert [item["v"] for item in sweep] == values
    assert [type(item["v"]) for item in sweep] == [type(v) for v in values]


def test_repeated_values_are_kept():
    assert [i["r"] for i in sweep_of({"r": [1, 1, 2]})] == [1, 1, 2]


@pytest.mark.parametrize("bad, index, what", [([1, [2]], 1, "a list"), ([{"k": 1}], 0, "an object")])
def test_a_non_scalar_value_is_refused_naming_the_parameter_and_index(bad, index, what):
    e = rejection({"alpha": [0.1], "shape": bad})
    assert e.field == f"input.sweep.shape[{index}]"
    assert what in e.message and "single values" in e.message


def test_an_empty_list_is_refused_naming_the_parameter():
    e = rejection({"alpha": [0.1], "model": []})
    assert e.field == "input.sweep.model"
    assert "empty list" in e.message


@pytest.mark.parametrize("spec", [1, "a", None, True, {"values": [1]}, {}])
def test_a_parameter_is_a_list_or_a_range(spec):
    e = rejection({"a": [1], "b": spec})
    assert e.field == "input.sweep.b"
    assert "list of values or a range" in e.message


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize("bounds", [[0, 10], [3, 4], [-5, 5], [0, 10, 3], [0, 9, 3], [10, 0, -1], [10, 0, -3],
                                    [-1, -10, -4], [5, 100, 50], [2 ** 63 - 3, 2 ** 63 - 1], [-(2 ** 63), -(2 ** 63) + 2]])
def test_ranges_follow_pythons_range(bounds):
    sweep = sweep_of({"n": {"range": bounds}})
    assert [item["n"] for item in sweep] == list(range(*bounds))
    assert len(sweep) == len(range(*bounds))


def test_whole_number_floats_are_accepted_as_range_bounds():
    assert [i["n"] for i in sweep_of({"n": {"range": [0.0, 3.0]}})] == [0, 1, 2]


@pytest.mark.parametrize("bounds, field, words", [
    ([5, 0], "input.sweep.n.range", "holds no value"),
    ([0, 5, -1], "input.sweep.n.range", "holds no value"),
    ([3, 3], "input.sweep.n.range", "holds no value"),
    ([0, 5, 0], "input.sweep.n.range[2]", "step is 0"),
    ([0, 1.5], "input.sweep.n.range[1]", "whole numbers"),
    (["0", 5], "input.sweep.n.range[0]", "whole numbers"),
    ([True, 5], "input.sweep.n.range[0]", "whole numbers"),
    ([0], "input.sweep.n.range", "2 or 3 whole numbers"),
    ([0, 1, 2, 3], "input.sweep.n.range", "2 or 3 whole numbers"),
    ({"start": 0}, "input.sweep.n.range", "2 or 3 whole numbers"),
    ([0, 2 ** 63], "input.sweep.n.range[1]", "64-bit"),
    ([-(2 ** 63) - 1, 0], "input.sweep.n.range[0]", "64-bit"),
])
def test_bad_ranges_are_refused_naming_the_parameter(bounds, field, words):
    e = rejection({"n": {"range": bounds}})
    assert e.field == field and words in e.message, e


def test_a_range_object_holds_nothing_else():
    e = rejection({"n": {"range": [0, 5], "step": 2}})
    assert e.field == "input.sweep.n.step"


@pytest.mark.parametrize("bounds", [[0, 10 ** 15], [-(2 ** 63), 2 ** 63 - 1], [0, MAX_ITEMS + 1]])
def test_a_huge_range_is_refused_naming_the_parameter(bounds):
    started = time.perf_counter()
    e = rejection({"alpha": [1, 2], "seed": {"range": bounds}})
    assert e.field == "input.sweep.seed.range"
    assert f"{MAX_ITEMS:,}" in e.message
    assert time.perf_counter() - started < 0.5


def test_a_huge_list_is_refused_naming_the_parameter():
    # only a deployment that raises MAX_JOB_FILE_BYTES well over 1 MiB can hold such a list
    raw = json.dumps({"command": "x", "input": {"sweep": {"seed": list(range(MAX_ITEMS + 1))}}}).encode()
    with pytest.raises(JobFileError) as info:
        parse_job_file(raw, blob_name="j.json", max_bytes=len(raw))
    assert info.value.field == "input.sweep.seed" and f"{MAX_ITEMS:,}" in info.value.message


# ---------------------------------------------------------------- zip groups


def test_a_zip_group_moves_together_where_it_is_written():
    sweep = sweep_of({"lr": [0.1, 0.01], "zip": {"depth": [2, 4, 8], "width": {"range": [16, 80, 24]}},
                      "seed": [0, 1]})
    expected = [{"lr": lr, "depth": d, "width": w, "seed": s}
                for lr in (0.1, 0.01) for d, w in zip([2, 4, 8], [16, 40, 64], strict=True) for s in (0, 1)]
    assert list(sweep) == expected
    assert sweep.describe() == "12 combinations: lr (2) x depth+width (3) x seed (2)"


def test_several_zip_groups_are_a_list_each_its_own_axis():
    sweep = sweep_of({"zip": [{"x": [1, 2], "y": ["a", "b"]}, {"u": [True, False, None], "v": [7, 8, 9]}]})
    expected = [{"x": x, "y": y, "u": u, "v": v}
                for x, y in [(1, "a"), (2, "b")] for u, v in [(True, 7), (False, 8), (None, 9)]]
    assert list(sweep) == expected


def test_a_zip_alone_is_a_plain_list_of_combinations():
    sweep = sweep_of({"zip": {"in": ["a.txt", "b.txt"], "out": ["a.out", "b.out"]}})
    assert list(sweep) == [{"in": "a.txt", "out": "a.out"}, {"in": "b.txt", "out": "b.out"}]


def test_zip_groups_of_unequal_lengths_are_refused_naming_the_parameters():
    e = rejection({"zip": {"depth": [2, 4, 8], "width": [16, 32]}})
    assert e.field == "input.sweep.zip"
    assert "'depth' has 3" in e.message and "'width' has 2" in e.message
    e = rejection({"zip": [{"x": [1], "y": [2]}, {"u": [1, 2], "v": {"range": [0, 3]}}]})
    assert e.field == "input.sweep.zip[1]"
    assert "'u' has 2" in e.message and "'v' has 3" in e.message


@pytest.mark.parametrize("zipped, field", [
    ([], "input.sweep.zip"), ({}, "input.sweep.zip"), ([{}], "input.sweep.zip[0]"), ([1], "input.sweep.zip[0]"),
    ("x", "input.sweep.zip"), ({"zip": {"a": [1]}}, "input.sweep.zip.zip"),
    ({"x": []}, "input.sweep.zip.x"), ([{"x": [1, [2]]}], "input.sweep.zip[0].x[1]"),
])
def test_bad_zip_forms_are_refused(zipped, field):
    assert rejection({"zip": zipped}).field == field


def test_a_parameter_given_twice_is_refused():
    e = rejection({"x": [1], "zip": [{"y": [1], "x": [2]}]})
    assert e.field == "input.sweep.zip[0].x" and "input.sweep.x" in e.message
    e = rejection({"zip": [{"x": [1]}, {"x": [2]}]})
    assert e.field == "input.sweep.zip[1].x"


@pytest.mark.parametrize("name, field", [("", "input.sweep."), ("a\nb", "input.sweep.a\\nb")])
def test_parameter_names_are_non_empty_one_line(name, field):
    assert rejection({name: [1]}).field == field


# ---------------------------------------------------------------- the limit on combinations


def test_a_product_over_the_limit_is_refused_naming_the_sizes():
    e = rejection({"a": {"range": [0, 1000]}, "b": {"range": [0, 1000]}, "c": [1, 2], "d": [1, 2, 3]})
    assert e.field == "input.sweep"
    assert "a (1,000) x b (1,000) x c (2) x 1 more" in e.message and f"{MAX_ITEMS:,}" in e.message


def test_an_astronomical_product_is_refused_without_being_multiplied_out():
    # 5,000 parameters of 1,000 values: 10**15000 combinations, described in under 200 KB
    sweep = {f"p{i}": {"range": [0, 1000]} for i in range(5000)}
    started = time.perf_counter()
    e = rejection(sweep)
    assert e.field == "input.sweep" and "p2 (1,000) x 4,997 more" in e.message
    assert time.perf_counter() - started < 1.0


def test_a_product_of_exactly_the_limit_is_accepted():
    assert len(sweep_of({"a": {"range": [0, 100]}, "b": {"range": [0, 100]}, "c": {"range": [0, 100]}})) == MAX_ITEMS


# ---------------------------------------------------------------- as an input form of the job file


def test_a_sweep_is_an_items_input_with_the_items_forms_defaults():
    spec = job(ISSUE_EXAMPLE)
    assert spec.items_per_task == 1 and spec.tasks is None
    assert spec.merge.kind == "jsonl"
    assert input_extension(spec.input) == "jsonl" and task_output_name(spec) == "output.jsonl"
    assert job(ISSUE_EXAMPLE, items_per_task=50).items_per_task == 50
    assert job(ISSUE_EXAMPLE, tasks=7).tasks == 7


def test_equal_job_files_give_equal_specs():
    assert job(ISSUE_EXAMPLE) == job(json.loads(json.dumps(ISSUE_EXAMPLE)))
    assert job(ISSUE_EXAMPLE) != job({**ISSUE_EXAMPLE, "model": ["a"]})


def test_sweep_is_exclusive_with_the_other_input_forms():
    doc = {"command": "x", "input": {"sweep": ISSUE_EXAMPLE, "items": [1]}}
    with pytest.raises(JobFileError) as info:
        parse_job_file(json.dumps(doc).encode(), blob_name="j.json")
    assert info.value.field == "input" and "'items' and 'sweep'" in info.value.message
    doc = {"command": "x", "input": {"sweep": ISSUE_EXAMPLE, "format": "jsonl"}}
    with pytest.raises(JobFileError) as info:
        parse_job_file(json.dumps(doc).encode(), blob_name="j.json")
    assert info.value.field == "input.format"


def test_a_sweep_at_the_top_level_is_pointed_into_input():
    doc = {"command": "x", "sweep": ISSUE_EXAMPLE, "input": {"items": [1]}}
    with pytest.raises(JobFileError) as info:
        parse_job_file(json.dumps(doc).encode(), blob_name="j.json")
    assert info.value.field == "sweep" and "inside 'input'" in info.value.message


@pytest.mark.parametrize("value", [[1, 2], "alpha", None, 3])
def test_the_sweep_is_an_object(value):
    doc = {"command": "x", "input": {"sweep": value}}
    with pytest.raises(JobFileError) as info:
        parse_job_file(json.dumps(doc).encode(), blob_name="j.json")
    assert info.value.field == "input" if value is None else "input.sweep"


def test_values_the_parser_refuses_anywhere_are_refused_in_a_sweep_too():
    raw = b'{"command": "x", "input": {"sweep": {"a": [1, NaN]}}}'
    with pytest.raises(JobFileError) as info:
        parse_job_file(raw, blob_name="j.json")
    assert info.value.field == "input.sweep.a[1]"
    raw = b'{"command": "x", "input": {"sweep": {"a": [1], "a": [2]}}}'
    with pytest.raises(JobFileError) as info:
        parse_job_file(raw, blob_name="j.json")
    assert info.value.field is not None and info.value.field.startswith("input.sweep")


# ---------------------------------------------------------------- split into task inputs


def jsonl(items: list[Any]) -> bytes:
    return b"".join(json.dumps(i, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for i in items)


@pytest.mark.parametrize("per_task", [1, 7, 600, 1000])
def test_items_per_task_shards_the_sweep_in_order(per_task):
    sweep = sweep_of(ISSUE_EXAMPLE)
    items = list(sweep)
    shards = list(split.iter_item_shards(sweep, items_per_task=per_task))
    assert shards == [jsonl(items[i:i + per_task]) for i in range(0, 600, per_task)]


@pytest.mark.parametrize("tasks", [1, 7, 599, 600, 5000])
def test_tasks_shards_the_sweep_into_near_equal_parts(tasks):
    sweep = sweep_of(ISSUE_EXAMPLE)
    shards = list(split.iter_item_shards(sweep, tasks=tasks))
    counts = [s.count(b"\n") for s in shards]
    assert len(shards) == min(tasks, 600) and max(counts) - min(counts) <= 1
    assert b"".join(shards) == jsonl(list(sweep))


def test_shards_are_generated_lazily():
    sweep = sweep_of({"a": {"range": [0, 1000]}, "b": {"range": [0, 1000]}})
    started = time.perf_counter()
    shards = split.iter_item_shards(sweep, items_per_task=3)
    first = next(shards)
    assert first == jsonl([{"a": 0, "b": 0}, {"a": 0, "b": 1}, {"a": 0, "b": 2}])
    assert time.perf_counter() - started < 0.5


# ---------------------------------------------------------------- totality on generated sweeps


def _random_spec(rng: random.Random, depth: int = 0) -> Any:
    """A parameter's values: mostly valid (so sweeps get accepted), sometimes any kind of wrong."""
    if rng.random() < 0.7:
        if rng.random() < 0.5:
            return [_random_scalar(rng) for _ in range(rng.randrange(1, 5))]
        start = rng.randrange(-5, 5)
        return {"range": rng.choice([[start, start + rng.randrange(1, 9)], [start, start - 7, -rng.randrange(1, 4)]])}
    pick = rng.random()
    if pick < 0.3:
        return [_random_scalar(rng) if rng.random() < 0.7 else rng.choice([[1], {"a": 1}])
                for _ in range(rng.choice([0, 1, 2, 3]))]
    if pick < 0.7:
        bounds = [rng.choice([0, 1, -3, 10, 2 ** 63 - 1, -(2 ** 63), 2 ** 64, 0.5, 7.0, "1", None, True])
                  for _ in range(rng.choice([1, 2, 2, 3, 3, 4]))]
        extra = {"step": 1} if rng.random() < 0.1 else {}
        return {"range": bounds, **extra}
    if pick < 0.85 and depth == 0:
        return {f"z{i}": _random_spec(rng, 1) for i in range(rng.randrange(3))}
    return _random_scalar(rng)


def _random_scalar(rng: random.Random) -> Any:
    return rng.choice([0, 1, -1, 2.5, "a", "", True, False, None, 10 ** 40, "é"])


def test_parsing_is_total_and_every_accepted_sweep_matches_its_count():
    rng = random.Random(13)
    accepted = 0
    for _ in range(3000):
        sweep: dict[str, Any] = {}
        for i in range(rng.randrange(5)):
            key = rng.choice([f"p{i}", f"p{i}", f"p{i}", "zip", "zip", "", "a\tb", "p0"])
            if key == "zip":
                value = rng.choice([{"x": _random_spec(rng, 1), "y": _random_spec(rng, 1)},
                                    [{"x": _random_spec(rng, 1)}, {"y": _random_spec(rng, 1)}], [], "zip"])
            else:
                value = _random_spec(rng)
            sweep[key] = value
        try:
            spec = job(sweep)
        except JobFileError as e:
            assert e.field is not None and e.field.startswith("input.sweep") and e.message.strip()
            continue
        items = spec.input.items
        assert isinstance(items, Sweep)
        generated = list(items) if len(items) <= 10_000 else items[:100]
        if len(items) <= 10_000:
            assert len(generated) == len(items)
        names = [n for axis in items.axes for n in axis.names]
        assert all(list(item) == names for item in generated)
        json.dumps(generated, allow_nan=False)
        accepted += 1
    assert accepted > 300  # the generator reaches valid sweeps, not only errors


def test_parse_refuses_a_non_object_directly():
    with pytest.raises(JobFileError) as info:
        paramsweep.parse([1], "input.sweep")
    assert info.value.field == "input.sweep"


# ---------------------------------------------------------------- the documentation's examples


def test_the_examples_in_docs_jobfile_md_give_what_the_docs_say():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "jobfile.md").read_text()
    section = text[text.index("### Parameter sweeps"):]
    blocks = [part.split("```", 1)[0].strip() for part in section.split("```json\n")[1:3]]
    first = parse_job_file(('{"command": "x", ' + blocks[0] + "}").encode(), blob_name="j.json")
    assert isinstance(first.input, ItemsInput) and first.items_per_task == 20
    items = first.input.items
    assert len(items) == 600 and items[-1] == {"alpha": 0.5, "seed": 99, "model": "b"}
    assert list(items[:3]) == [{"alpha": 0.1, "seed": 0, "model": "a"}, {"alpha": 0.1, "seed": 0, "model": "b"},
                               {"alpha": 0.1, "seed": 1, "model": "a"}]
    second = parse_job_file(('{"command": "x", "input": {' + blocks[1] + "}}").encode(), blob_name="j.json")
    assert isinstance(second.input, ItemsInput)
    items = second.input.items
    assert len(items) == 18
    assert items[0] == {"lr": 0.1, "depth": 2, "width": 16, "seed": 10}
    assert items[-1] == {"lr": 0.01, "depth": 8, "width": 64, "seed": 2}

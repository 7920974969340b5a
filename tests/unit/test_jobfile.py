"""The job file contract (docs/jobfile.md): every field, valid and invalid, and derived names."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from shared.errors import JobFileError
from shared.jobfile import (
    BlobInput, BlobRef, ExistingPool, ItemsInput, JobSpec, MergeSpec, PoolSpec, PrefixInput,
    Resource, default_name, format_from_extension, input_extension, output_extension,
    parse_job_file, run_id, sanitise_name, task_output_name,
)

MINIMAL = {"command": "python3 app.py", "input": {"items": [1, 2, 3]}}


def parse(doc: object = None, blob_name: str = "jobs/heavy.json", **fields: object) -> JobSpec:
    base = dict(MINIMAL) if doc is None else doc
    if isinstance(base, dict):
        base = {**base, **fields}
    return parse_job_file(json.dumps(base).encode(), blob_name=blob_name)


def error(doc: object = None, **fields: object) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        parse(doc, **fields)
    assert info.value.message.strip()
    return info.value


def raw_error(raw: bytes, **kwargs: object) -> JobFileError:
    with pytest.raises(JobFileError) as info:
        parse_job_file(raw, blob_name="jobs/x.json", **kwargs)
    return info.value


# ---------------------------------------------------------------- the whole file

def test_contract_example_covers_every_field():
    doc = {
        "name": "heavylift-nov",
        "command": "python3 app.py -i \"$INPUT_PATH\" -o \"$OUTPUT_PATH\" -c \"$CONFIG_PATH\"",
        "image": "myregistry.azurecr.io/heavylift:1.4",
        "input": {"blob": "data/bigjob.jsonl", "format": "jsonl"},
        "items_per_task": 10,
        "config": {"threshold": 0.5},
        "resources": [{"blob": "data/reference/HeavyLiftSQLite.zip", "unzip": True}],
        "merge": "jsonl",
        "on_task_failure": "fail",
        "retries": 3,
        "task_timeout_minutes": 60,
        "pool": {"vm_size": "standard_d2s_v3", "max_nodes": 20, "spot": False, "slots_per_node": 1},
    }
    spec = parse(doc)
    assert spec == JobSpec(
        name="heavylift-nov",
        command=doc["command"],
        image="myregistry.azurecr.io/heavylift:1.4",
        input=BlobInput(BlobRef("data", "bigjob.jsonl"), "jsonl"),
        items_per_task=10,
        tasks=None,
        config={"threshold": 0.5},
        resources=(Resource(BlobRef("data", "reference/HeavyLiftSQLite.zip"), True),),
        merge=MergeSpec("jsonl"),
        on_task_failure="fail",
        retries=3,
        task_timeout_minutes=60,
        pool=PoolSpec("standard_d2s_v3", 20, False, 1),
    )


def test_minimal_file_takes_documented_defaults():
    spec = parse()
    assert spec.name == "heavy"
    assert spec.image is None
    assert spec.input == ItemsInput((1, 2, 3))
    assert (spec.items_per_task, spec.tasks) == (1, None)
    assert spec.config is None and spec.resources == () and spec.pool is None
    assert spec.merge == MergeSpec("jsonl")
    assert (spec.on_task_failure, spec.retries, spec.task_timeout_minutes) == ("fail", 3, 60)


def test_spec_is_frozen():
    spec = parse()
    with pytest.raises(AttributeError):
        spec.retries = 5  # type: ignore[misc]


def test_null_optional_field_means_not_given():
    spec = parse(image=None, pool=None, merge=None, retries=None, name=None)
    assert spec.image is None and spec.pool is None and spec.retries == 3 and spec.name == "heavy"


def test_unknown_top_level_field_suggests_the_likely_typo():
    e = error({"comand": "x", "input": {"items": [1]}})
    assert e.field == "comand"
    assert e.message == "unknown field 'comand'; did you mean 'command'?"


@pytest.mark.parametrize("typo, meant", [("retry", "retries"), ("Image", "image"),
                                         ("item_per_task", "items_per_task"), ("taks", "tasks")])
def test_typo_suggestions(typo, meant):
    e = error(**{typo: 1})
    assert e.field == typo and f"did you mean {meant!r}" in e.message


def test_unknown_field_without_a_close_match_lists_the_known_fields():
    e = error(colour="blue")
    assert e.field == "colour"
    assert "did you mean" not in e.message and "command" in e.message and "pool" in e.message


@pytest.mark.parametrize("key, home", [("vm_size", "pool"), ("blob", "input"), ("format", "input")])
def test_nested_field_at_top_level_points_to_its_object(key, home):
    e = error(**{key: "x"})
    assert e.field == key and f"belongs inside {home!r}" in e.message


def test_bom_is_tolerated():
    spec = parse_job_file(b"\xef\xbb\xbf" + json.dumps(MINIMAL).encode(), blob_name="a.json")
    assert spec.command == "python3 app.py"


def test_oversized_file():
    raw = json.dumps(MINIMAL).encode()
    e = raw_error(raw, max_bytes=len(raw) - 1)
    assert e.field is None and "limit" in e.message and "blob" in e.message
    assert parse_job_file(raw, blob_name="a.json", max_bytes=len(raw)).command


def test_invalid_utf8_names_line_and_offset():
    e = raw_error(b'{"command":\n "caf\xe9"}')
    assert e.field is None
    assert "UTF-8" in e.message and "line 2" in e.message and "byte offset 17" in e.message


def test_utf16_is_named():
    e = raw_error(json.dumps(MINIMAL).encode("utf-16"))
    assert "UTF-16" in e.message and "UTF-8" in e.message


def test_invalid_json_names_line_and_column():
    e = raw_error(b'{\n  "command": "x"\n  "input": {}\n}')
    assert e.field is None
    assert "not valid JSON" in e.message and "line 3, column 3" in e.message and "comma" in e.message


@pytest.mark.parametrize("raw", [b"", b"  \n"])
def test_empty_file(raw):
    assert "empty" in raw_error(raw).message


@pytest.mark.parametrize("raw, kind", [(b"[1]", "a list"), (b'"x"', "a string"), (b"null", "null")])
def test_top_level_must_be_an_object(raw, kind):
    e = raw_error(raw)
    assert e.field is None and "JSON object" in e.message and kind in e.message


def test_duplicate_key_is_an_error_with_its_path():
    e = raw_error(b'{"command": "a", "input": {"items": [1]}, "pool": {"spot": true, "spot": false}}')
    assert e.field == "pool.spot" and "more than once" in e.message
    e = raw_error(b'{"command": "a", "command": "b", "input": {"items": [1]}}')
    assert e.field == "command"


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_json_numbers_are_rejected(number):
    e = raw_error(b'{"command": "a", "input": {"items": [%s]}}' % number)
    assert number.decode() in e.message


# ---------------------------------------------------------------- name

@pytest.mark.parametrize("given, expected", [
    ("heavylift-nov", "heavylift-nov"),
    ("Heavy Lift_Nov!", "heavy-lift-nov"),
    ("--a--b__c--", "a-b-c"),
    ("Café Ünïcode", "cafe-unicode"),
    ("!!!", "job"),
    ("名前", "job"),
    ("a" * 39 + "-b", "a" * 39),          # no trailing '-' after the cut
    ("x" * 60, "x" * 40),
])
def test_name_is_sanitised(given, expected):
    assert parse(name=given).name == expected
    assert sanitise_name(given) == expected


def test_blank_name_takes_the_default():
    assert parse(name="  ").name == "heavy"


@pytest.mark.parametrize("blob_name, expected", [
    ("jobs/heavy.json", "heavy"),
    ("team/a/My Job.v2.json", "my-job-v2"),
    ("noext", "noext"),
    ("dir/.json", "json"),
    ("dir/___.json", "job"),
])
def test_default_name_from_blob_name(blob_name, expected):
    assert parse(blob_name=blob_name).name == expected


def test_default_name_helper_strips_folders_and_extension():
    assert default_name("a/b/c.d.json") == "c.d"


def test_name_must_be_a_string():
    e = error(name=7)
    assert e.field == "name" and "string" in e.message


# ---------------------------------------------------------------- command and image

@pytest.mark.parametrize("value", [None, "", "   ", 5, ["python3", "app.py"]])
def test_command_required_non_empty_string(value):
    doc = {"input": {"items": [1]}} if value is None else {**MINIMAL, "command": value}
    e = error(doc)
    assert e.field == "command"
    assert "required" in e.message or "non-empty string" in e.message


@pytest.mark.parametrize("value", ["", 3, "my image:1"])
def test_image_invalid(value):
    assert error(image=value).field == "image"


# ---------------------------------------------------------------- input

def test_input_required():
    e = error({"command": "x"})
    assert e.field == "input" and "required" in e.message


@pytest.mark.parametrize("value", ["data/x.jsonl", [1], 3])
def test_input_must_be_an_object(value):
    assert error(input=value).field == "input"


@pytest.mark.parametrize("value", [{}, {"items": [1], "blob": "data/x.jsonl"},
                                   {"blob": "data/x", "prefix": "data/"}])
def test_input_needs_exactly_one_form(value):
    e = error(input=value)
    assert e.field == "input" and "exactly one" in e.message


def test_input_unknown_key_suggests():
    e = error(input={"blbo": "data/x.jsonl"})
    assert e.field == "input.blbo" and "did you mean 'blob'" in e.message


@pytest.mark.parametrize("value", [[], "abc", {"a": 1}, None])
def test_items_must_be_a_non_empty_list(value):
    doc = {**MINIMAL, "input": {"items": value}}
    e = error(doc)
    if value is None:  # null means absent: no form given
        assert e.field == "input"
    else:
        assert e.field == "input.items" and "non-empty list" in e.message


def test_items_keep_any_json_values():
    items = [1, "two", None, {"a": [1, 2]}, [True]]
    assert parse(input={"items": items}).input == ItemsInput(tuple(items))


@pytest.mark.parametrize("form", [{"items": [1]}, {"prefix": "data/shards/"}])
def test_format_only_for_blob(form):
    e = error(input={**form, "format": "jsonl"})
    assert e.field == "input.format" and "blob" in e.message


@pytest.mark.parametrize("fmt", ["jsonl", "lines", "csv", "json"])
def test_explicit_format(fmt):
    assert parse(input={"blob": "data/x.dat", "format": fmt}).input == BlobInput(BlobRef("data", "x.dat"), fmt)


def test_format_invalid_suggests():
    e = error(input={"blob": "data/x.dat", "format": "jsnol"})
    assert e.field == "input.format" and "did you mean 'jsonl'" in e.message


@pytest.mark.parametrize("path, fmt", [
    ("x.jsonl", "jsonl"), ("x.ndjson", "jsonl"), ("X.JSONL", "jsonl"), ("x.csv", "csv"),
    ("x.json", "json"), ("x.txt", "lines"), ("x", "lines"), ("dir.json/x.tsv", "lines"),
])
def test_format_defaults_from_extension(path, fmt):
    assert parse(input={"blob": f"data/{path}"}).input.format == fmt
    assert format_from_extension(path) == fmt


@pytest.mark.parametrize("ref, hint", [
    ("nocontainer", "no path"),
    ("/data/x.jsonl", "leading slash"),
    ("Data/x.jsonl", "container name"),
    ("ab/x.jsonl", "container name"),
    ("a--b/x.jsonl", "container name"),
    ("-ab/x.jsonl", "container name"),
    ("abc-/x.jsonl", "container name"),
    ("a_b/x.jsonl", "container name"),
    ("c" * 64 + "/x", "container name"),
    ("data/", "no blob"),
    ("data/dir/", "folder"),
    ("", "blob reference"),
    (5, "blob reference"),
    ("data/x.jsonl.gz", "compressed"),
])
def test_blob_reference_invalid(ref, hint):
    e = error(input={"blob": ref})
    assert e.field == "input.blob" and hint in e.message


def test_blob_reference_accepts_azure_limits():
    ref = BlobRef.parse("a" * 63 + "/deep/path/x.jsonl", "f")
    assert ref.container == "a" * 63 and ref.path == "deep/path/x.jsonl"
    assert str(BlobRef.parse("d-1/x", "f")) == "d-1/x"


@pytest.mark.parametrize("ref, path", [("data/shards/", "shards/"), ("data/", ""), ("data", "")])
def test_prefix_input(ref, path):
    spec = parse(input={"prefix": ref})
    assert spec.input == PrefixInput(BlobRef("data", path))
    assert (spec.items_per_task, spec.tasks) == (None, None)
    assert spec.merge == MergeSpec("concat")


def test_prefix_invalid_container():
    assert error(input={"prefix": "X/shards/"}).field == "input.prefix"


# ---------------------------------------------------------------- items_per_task and tasks

@pytest.mark.parametrize("field", ["items_per_task", "tasks"])
@pytest.mark.parametrize("value", [0, -1, True, "10", 2.5, [3]])
def test_split_unit_invalid(field, value):
    e = error(**{field: value})
    assert e.field == field and "whole number" in e.message


def test_tasks_form():
    spec = parse(tasks=8)
    assert (spec.items_per_task, spec.tasks) == (None, 8)


def test_whole_float_accepted():
    assert parse(items_per_task=10.0).items_per_task == 10


def test_items_per_task_and_tasks_are_exclusive():
    e = error(items_per_task=5, tasks=2)
    assert e.field == "tasks" and "together" in e.message


@pytest.mark.parametrize("field", ["items_per_task", "tasks"])
def test_split_unit_does_not_apply_to_prefix(field):
    e = error(input={"prefix": "data/s/"}, **{field: 2})
    assert e.field == field and "prefix" in e.message


# ---------------------------------------------------------------- config

def test_config_inline_object():
    assert parse(config={"threshold": 0.5, "blob": 3}).config == {"threshold": 0.5, "blob": 3}


def test_config_blob_reference():
    assert parse(config={"blob": "data/config.json"}).config == BlobRef("data", "config.json")


def test_config_blob_reference_invalid():
    e = error(config={"blob": "config.json"})
    assert e.field == "config.blob"


@pytest.mark.parametrize("value", [[1], "data/c.json", 3, True])
def test_config_must_be_an_object(value):
    assert error(config=value).field == "config"


# ---------------------------------------------------------------- resources

def test_resources():
    spec = parse(resources=[{"blob": "data/ref/a.zip", "unzip": True}, {"blob": "data/b.txt"}])
    assert spec.resources == (Resource(BlobRef("data", "ref/a.zip"), True), Resource(BlobRef("data", "b.txt"), False))
    assert spec.resources[0].file_name == "a.zip"


@pytest.mark.parametrize("value, field", [
    ({"blob": "data/a"}, "resources"),
    (["data/a"], "resources[0]"),
    ([{"blob": "data/a"}, {"unzip": True}], "resources[1].blob"),
    ([{"blob": "data/a"}, {"blob": "bad"}], "resources[1].blob"),
    ([{"blob": "data/a", "unzpi": True}], "resources[0].unzpi"),
    ([{"blob": "data/a.zip", "unzip": "yes"}], "resources[0].unzip"),
    ([{"blob": "data/a.txt", "unzip": True}], "resources[0].unzip"),
    ([{"blob": "data/dir/"}], "resources[0].blob"),
    ([{"blob": "data/x/a.txt"}, {"blob": "other/a.txt"}], "resources[1].blob"),
])
def test_resources_invalid(value, field):
    assert error(resources=value).field == field


def test_resource_unknown_key_suggests():
    assert "did you mean 'unzip'" in error(resources=[{"blob": "data/a.zip", "unzpi": True}]).message


# ---------------------------------------------------------------- merge

@pytest.mark.parametrize("kind", ["jsonl", "lines", "csv", "concat", "none"])
def test_merge_kinds(kind):
    assert parse(merge=kind).merge == MergeSpec(kind)


@pytest.mark.parametrize("inp, kind", [
    ({"items": [1]}, "jsonl"),
    ({"blob": "data/x.jsonl"}, "jsonl"),
    ({"blob": "data/x.json"}, "jsonl"),
    ({"blob": "data/x.txt"}, "lines"),
    ({"blob": "data/x.csv"}, "csv"),
    ({"prefix": "data/s/"}, "concat"),
])
def test_merge_default_by_input(inp, kind):
    assert parse(input=inp).merge.kind == kind


def test_merge_command():
    spec = parse(merge={"command": "python3 merge.py", "image": "reg.io/m:1"})
    assert spec.merge == MergeSpec("command", "python3 merge.py", "reg.io/m:1")
    assert spec.merge.output_extension == "bin"


def test_merge_command_extension():
    assert parse(merge={"command": "m", "extension": ".parquet"}).merge.output_extension == "parquet"
    assert parse(merge={"command": "m", "extension": "tar.gz"}).merge.output_extension == "tar.gz"


@pytest.mark.parametrize("value, field, hint", [
    ("jsnl", "merge", "did you mean 'jsonl'"),
    ("command", "merge", "object"),
    (3, "merge", "object"),
    ({"image": "x"}, "merge.command", "required"),
    ({"command": ""}, "merge.command", "non-empty"),
    ({"command": "m", "image": ""}, "merge.image", "non-empty"),
    ({"command": "m", "extension": "a b"}, "merge.extension", "extension"),
    ({"command": "m", "extension": 1}, "merge.extension", "extension"),
    ({"command": "m", "imgae": "x"}, "merge.imgae", "did you mean 'image'"),
])
def test_merge_invalid(value, field, hint):
    e = error(merge=value)
    assert e.field == field and hint in e.message


# ---------------------------------------------------------------- failure policy, retries, timeout

@pytest.mark.parametrize("policy", ["fail", "partial"])
def test_on_task_failure(policy):
    assert parse(on_task_failure=policy).on_task_failure == policy


def test_on_task_failure_invalid_suggests():
    e = error(on_task_failure="partail")
    assert e.field == "on_task_failure" and "did you mean 'partial'" in e.message


@pytest.mark.parametrize("field, good, bad", [
    ("retries", [0, 100], [-1, 101, True, "3", 1.5]),
    ("task_timeout_minutes", [1, 10080], [0, 10081, False, "60"]),
])
def test_ranges(field, good, bad):
    for value in good:
        assert getattr(parse(**{field: value}), field) == value
    for value in bad:
        e = error(**{field: value})
        assert e.field == field and "whole number" in e.message


# ---------------------------------------------------------------- pool

def test_existing_pool():
    assert parse(pool={"id": "long-lived_pool1"}).pool == ExistingPool("long-lived_pool1")


def test_pool_partial_fields_take_defaults():
    assert parse(pool={"spot": True}).pool == PoolSpec(None, None, True, None)
    assert parse(pool={}).pool == PoolSpec()


@pytest.mark.parametrize("value, field", [
    ({"id": "p", "vm_size": "standard_d2s_v3"}, "pool"),
    ({"id": "bad id"}, "pool.id"),
    ({"id": 3}, "pool.id"),
    ({"vm_sise": "x"}, "pool.vm_sise"),
    ({"vm_size": ""}, "pool.vm_size"),
    ({"vm_size": "standard d2"}, "pool.vm_size"),
    ({"max_nodes": 0}, "pool.max_nodes"),
    ({"max_nodes": True}, "pool.max_nodes"),
    ({"spot": "yes"}, "pool.spot"),
    ({"slots_per_node": 0}, "pool.slots_per_node"),
    ({"slots_per_node": 257}, "pool.slots_per_node"),
    ("standard_d2s_v3", "pool"),
])
def test_pool_invalid(value, field):
    assert error(pool=value).field == field


def test_pool_upper_bounds():
    assert parse(pool={"slots_per_node": 256, "max_nodes": 1000}).pool.slots_per_node == 256


# ---------------------------------------------------------------- derived names

@pytest.mark.parametrize("kind, ext", [("jsonl", "jsonl"), ("lines", "txt"), ("csv", "csv"),
                                       ("concat", "bin"), ("command", "bin"), ("none", None)])
def test_output_extension(kind, ext):
    assert output_extension(kind) == ext
    assert MergeSpec(kind).output_extension == ext


def test_output_extension_unknown_kind():
    with pytest.raises(ValueError):
        output_extension("zip")


@pytest.mark.parametrize("fields, name", [
    ({}, "output.jsonl"),
    ({"merge": "lines"}, "output.txt"),
    ({"merge": "csv"}, "output.csv"),
    ({"merge": "concat"}, "output.bin"),
    ({"merge": {"command": "m"}}, "output.bin"),
    ({"merge": {"command": "m", "extension": "parquet"}}, "output.parquet"),
    ({"merge": "none"}, "output.jsonl"),
    ({"merge": "none", "input": {"blob": "data/x.json"}}, "output.jsonl"),
    ({"merge": "none", "input": {"blob": "data/x.txt"}}, "output.txt"),
    ({"merge": "none", "input": {"blob": "data/x.csv"}}, "output.csv"),
    ({"merge": "none", "input": {"prefix": "data/s/"}}, "output.bin"),
])
def test_task_output_name(fields, name):
    assert task_output_name(parse(**fields)) == name


def test_input_extension():
    assert input_extension(ItemsInput((1,))) == "jsonl"
    assert input_extension(BlobInput(BlobRef("data", "x"), "lines")) == "txt"
    assert input_extension(PrefixInput(BlobRef("data", ""))) == "bin"


# ---------------------------------------------------------------- run id

def test_run_id_is_deterministic_and_shaped():
    first = run_id("heavy", "intake", "jobs/heavy.json", '"0x8DC1"')
    assert first == run_id("heavy", "intake", "jobs/heavy.json", '"0x8DC1"')
    assert re.fullmatch(r"heavy-[0-9a-f]{8}", first)
    expected = hashlib.sha256("intake\0jobs/heavy.json\0" "0x8DC1".encode()).hexdigest()[:8]
    assert first == f"heavy-{expected}"


def test_run_id_ignores_etag_quotes():
    assert run_id("a", "intake", "j.json", '"0x1"') == run_id("a", "intake", "j.json", "0x1")


@pytest.mark.parametrize("change", [
    ("a", "intake", "j.json", "0x2"),       # a re-upload: new ETag
    ("a", "intake", "k.json", "0x1"),
    ("a", "other", "j.json", "0x1"),
])
def test_run_id_changes_with_blob_identity(change):
    assert run_id("a", "intake", "j.json", "0x1") != run_id(*change)


def test_run_id_name_is_sanitised():
    assert run_id("My Job", "intake", "j.json", "0x1").startswith("my-job-")

"""The job file contract (docs/jobfile.md): every field, valid and invalid, and derived names."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from shared.errors import JobFileError
from shared.jobfile import (
    BlobInput,
    BlobRef,
    ExistingPool,
    ItemsInput,
    JobSpec,
    MergeSpec,
    PoolSpec,
    PrefixInput,
    Resource,
    default_name,
    format_from_extension,
    input_extension,
    output_extension,
    parse_job_file,
    run_id,
    run_id_candidates,
    sanitise_name,
    task_output_name,
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
    assert parse(pool={"spot": True}).pool == PoolSpec(None, None, True, None, spot_fallback=True)
    assert parse(pool={}).pool == PoolSpec()


def test_spot_fallback_is_on_with_spot_unless_turned_off():
    assert parse(pool={"spot": True}).pool.spot_fallback is True
    assert parse(pool={"spot": True, "spot_fallback": False}).pool.spot_fallback is False
    assert parse(pool={"spot": False}).pool.spot_fallback is False


@pytest.mark.parametrize("pool", [{"spot_fallback": True}, {"spot": False, "spot_fallback": False}])
def test_spot_fallback_without_spot_is_refused(pool):
    e = error(pool=pool)
    assert e.field == "pool.spot_fallback" and '"spot": true' in e.message


def test_gpu_sizes_are_accepted_and_unknown_or_amd_gpu_sizes_refused():
    assert parse(pool={"vm_size": "Standard_NC6s_v3"}).pool.vm_size == "Standard_NC6s_v3"
    assert parse(pool={"vm_size": "standard_nd96asr_v4"}).pool.vm_size == "standard_nd96asr_v4"
    unknown = error(pool={"vm_size": "Standard_NC7x_v9"})
    assert unknown.field == "pool.vm_size" and "does not know" in unknown.message
    amd = error(pool={"vm_size": "Standard_NV8as_v4"})
    assert amd.field == "pool.vm_size" and "AMD" in amd.message


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
    ({"spot": True, "spot_fallback": "yes"}, "pool.spot_fallback"),
    ({"id": "p", "spot_fallback": True}, "pool"),
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
    assert re.fullmatch(r"heavy-[0-9a-f]{16}", first)  # 64 bits: collisions are not a daily event
    expected = hashlib.sha256(b"intake\0jobs/heavy.json\0" b"0x8DC1").hexdigest()[:16]
    assert first == f"heavy-{expected}"


def test_run_id_candidates_are_deterministic_and_start_with_run_id():
    candidates = run_id_candidates("heavy", "intake", "jobs/heavy.json", '"0x8DC1"')
    assert candidates == run_id_candidates("heavy", "intake", "jobs/heavy.json", "0x8DC1")
    assert candidates[0] == run_id("heavy", "intake", "jobs/heavy.json", "0x8DC1")
    assert len(candidates) == 4 and len(set(candidates)) == 4
    digest = hashlib.sha256(b"intake\0jobs/heavy.json\0" b"0x8DC1").hexdigest()
    assert candidates == [f"heavy-{digest[i:i + 16]}" for i in range(0, 64, 16)]


def test_run_id_of_the_longest_name_is_a_valid_batch_job_id():
    ident = run_id("x" * 100, "intake", "j.json", "0x1")
    assert re.fullmatch(r"[a-z0-9-]{1,64}", ident) and ident.startswith("x" * 40 + "-")


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


# ---------------------------------------------------------------- untrusted bytes: every class refused cleanly

def job_bytes(fragment: str, **fields: str) -> bytes:
    """A minimal job file with raw JSON text spliced in: `fragment` as extra top-level members,
    `fields` replacing members (so hooks see NaN, huge numbers and escapes exactly as written)."""
    members = {"command": '"python3 app.py"', "input": '{"items": [1]}', **fields}
    body = ", ".join(f'"{k}": {v}' for k, v in members.items())
    return ("{" + body + (", " + fragment if fragment else "") + "}").encode()


@pytest.mark.parametrize("where", ["items", "config", "top"])
def test_deep_nesting_is_refused_with_line_and_column(where):
    deep = "[" * 1000 + "]" * 1000
    raw = {"items": job_bytes("", input=f'{{"items": [{deep}]}}'),
           "config": job_bytes("", config=f'{{"a": {deep}}}'),
           "top": deep.encode()}[where]
    e = raw_error(raw)
    assert e.field is None and "64 levels" in e.message and "line 1, column" in e.message


def test_nesting_up_to_the_limit_is_accepted():
    from shared.jobfile import MAX_DEPTH
    nested = "[" * (MAX_DEPTH - 2) + "1" + "]" * (MAX_DEPTH - 2)  # top object and input add two
    spec = parse_job_file(job_bytes("", input=f'{{"items": {nested}}}'), blob_name="a.json")
    assert isinstance(spec.input, ItemsInput)
    too_deep = "[" + nested + "]"
    assert "levels deep" in raw_error(job_bytes("", input=f'{{"items": {too_deep}}}')).message


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = json.dumps("[{" * 5000)
    spec = parse_job_file(job_bytes("", command=text), blob_name="a.json")
    assert spec.command == "[{" * 5000


def test_depth_error_names_the_line():
    raw = b'{"command": "x",\n "input": {"items": [\n' + b"[" * 100 + b"]" * 100 + b"]}}"
    e = raw_error(raw)
    assert "line 3, column 62" in e.message  # object, input and items are levels 1-3


@pytest.mark.parametrize("field, value, path", [
    ("input", '{"items": [1, %s]}', "input.items[1]"),
    ("retries", "%s", "retries"),
    ("config", '{"a": {"b": [%s]}}', "config.a.b[0]"),
])
def test_integers_too_long_name_their_path(field, value, path):
    e = raw_error(job_bytes("", **{field: value % ("9" * 5000)}))
    assert e.field == path and "too long" in e.message and "5,000 digits" in e.message


def test_long_but_convertible_integers_are_kept_or_range_checked():
    big = "9" * 4300
    assert parse_job_file(job_bytes("", input=f'{{"items": [{big}]}}'), blob_name="a.json").input.items == (int(big),)
    e = raw_error(job_bytes("", retries=big))
    assert e.field == "retries" and "whole number" in e.message and len(e.message) < 200


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("field, template, path", [
    ("input", '{"items": [0, %s]}', "input.items[1]"),
    ("tasks", "%s", "tasks"),
    ("pool", '{"max_nodes": %s}', "pool.max_nodes"),
    ("config", '{"threshold": %s}', "config.threshold"),
])
def test_non_json_numbers_name_their_path(number, field, template, path):
    e = raw_error(job_bytes("", **{field: template % number}))
    assert e.field == path and repr(number) in e.message


@pytest.mark.parametrize("number", [b"NaN", b"1e400", b"9" * 5000])
def test_a_bare_bad_number_is_not_an_object(number):
    e = raw_error(number)
    assert e.field is None and "JSON object" in e.message


@pytest.mark.parametrize("escape", [r"\ud800", r"\udfff", r"x\udc00y", r"\u0000"])
@pytest.mark.parametrize("field, template, path", [
    ("command", '"%s"', "command"),
    ("input", '{"items": [1, {"k": "%s"}]}', "input.items[1].k"),
    ("config", '{"note": "%s"}', "config.note"),
    ("name", '"%s"', "name"),
    ("merge", '{"command": "m %s"}', "merge.command"),
])
def test_nul_and_lone_surrogates_are_refused_anywhere(escape, field, template, path):
    e = raw_error(job_bytes("", **{field: template % escape}))
    assert e.field == path and ("NUL" in e.message or "surrogate" in e.message)


def test_nul_and_surrogates_in_keys_are_refused_with_a_printable_path():
    e = raw_error(job_bytes("", config=r'{"a\u0000b": 1}'))
    assert e.field == r"config.a\x00b" and "field name" in e.message
    e = raw_error(job_bytes("", input=r'{"items": [{"\ud800": 1}]}'))
    assert e.field == r"input.items[0].\ud800"
    e = raw_error(job_bytes(r'"co\u0000mmand": "x"'))
    assert e.field == r"co\x00mmand"


def test_a_surrogate_pair_is_a_character_not_an_error():
    spec = parse_job_file(job_bytes("", command=r'"echo \ud83d\ude00"'), blob_name="a.json")
    assert spec.command == "echo \U0001F600"
    spec.command.encode("utf-8")


def test_command_keeps_shell_control_characters_but_not_nul():
    spec = parse_job_file(job_bytes("", command=r'"set -e\n\tpython3 app.py\r\n"'), blob_name="a.json")
    assert spec.command == "set -e\n\tpython3 app.py\r\n"
    assert raw_error(job_bytes("", command=r'"a\u0000"')).field == "command"


@pytest.mark.parametrize("char", ["\n", "\t", "\x01", "\x7f", "\x85", "\u2028"])
def test_control_characters_in_the_name_are_refused(char):
    e = error(name=f"heavy{char}lift")
    assert e.field == "name" and "control character" in e.message


@pytest.mark.parametrize("fields, path", [
    ({"pool": {"id": "mypool\n"}}, "pool.id"),
    ({"pool": {"vm_size": "standard_d2s_v3\n"}}, "pool.vm_size"),
    ({"merge": {"command": "m", "extension": "bin\n"}}, "merge.extension"),
    ({"image": "python:3.11\n"}, "image"),
    ({"input": {"blob": "data\n/x.jsonl"}}, "input.blob"),
    ({"input": {"blob": "data/x.jsonl\n"}}, "input.blob"),
    ({"input": {"prefix": "data\n"}}, "input.prefix"),
])
def test_a_trailing_newline_never_passes_an_anchored_pattern(fields, path):
    assert error(**fields).field == path


@pytest.mark.parametrize("ref, rule", [
    ("data/a/../x.jsonl", "'..' segment"),
    ("data/../intake/x.jsonl", "'..' segment"),
    ("data/./x.jsonl", "'.' segment"),
    ("data/x/..", "'..' segment"),
    ("data/a%2f..%2fx.jsonl", "'%'"),
    ("data/x%20y.jsonl", "'%'"),
    ("data/a\\x.jsonl", "backslash"),
    ("data/a//x.jsonl", "empty folder"),
    ("data//x.jsonl", "empty folder"),
    (" data/x.jsonl", "whitespace"),
    ("data/x.jsonl ", "whitespace"),
    ("data/x\x07.jsonl", "control character"),
    ("data/x\u2028.jsonl", "control character"),
])
@pytest.mark.parametrize("where", ["input.blob", "input.prefix", "config.blob", "resources[0].blob"])
def test_blob_paths_are_used_exactly_as_written(ref, rule, where):
    fields = {"input.blob": {"input": {"blob": ref}}, "input.prefix": {"input": {"prefix": ref}},
              "config.blob": {"config": {"blob": ref}}, "resources[0].blob": {"resources": [{"blob": ref}]}}
    e = error(**fields[where])
    assert e.field == where and rule in e.message


@pytest.mark.parametrize("ref", ["data/a b/x y.jsonl", "data/..x/x..jsonl", "data/.hidden/x.jsonl",
                                 "data/ü/名前.jsonl", "data/a-b_c.d~e/x+y=z@w.jsonl"])
def test_unusual_but_exact_blob_paths_are_accepted(ref):
    assert str(parse(input={"blob": ref}).input.blob) == ref


@pytest.mark.parametrize("ref", ["data/run1/", "data/", "data", "data/a/b/"])
def test_a_prefix_may_still_end_with_a_slash(ref):
    assert isinstance(parse(input={"prefix": ref}).input, PrefixInput)


@pytest.mark.parametrize("image", [
    "python", "python:3.11-slim", "myregistry.azurecr.io/heavylift:1.4", "localhost:5000/team/app:v1",
    "ghcr.io/org/app_x__y.z-w--v:tag.1-2", "app@sha256:" + "a" * 64,
    "reg.example.com:443/a/b/c:latest@sha256:" + "0f" * 32, "[::1]:5000/app", "Registry.Example/app",
])
def test_valid_image_references(image):
    assert parse(image=image).image == image
    assert parse(merge={"command": "m", "image": image}).merge.image == image


@pytest.mark.parametrize("image", [
    "-app", "app-", "App", "a..b", "a/../b", "reg.io//app", "app:", "app:-tag", "app:" + "t" * 129,
    "app@sha256:abc", "app@sha256", "app\n", "app\t:1", "a" * 256, "ftp://reg/app",
    "reg.io/app:1.4 --privileged", "app:tag:tag", "/app", "app/",
])
def test_invalid_image_references_say_what_a_valid_one_looks_like(image):
    for fields, path in (({"image": image}, "image"), ({"merge": {"command": "m", "image": image}}, "merge.image")):
        e = error(**fields)
        assert e.field == path and "myregistry.azurecr.io/app:1.4" in e.message


@pytest.mark.parametrize("vm_size", ["standard_d2s_v3", "Standard_NC6s_v3", "Standard_E4-2s_v3",
                                     "Basic_A1", "Standard_NC24ads_A100_v4"])
def test_valid_vm_sizes(vm_size):
    assert parse(pool={"vm_size": vm_size}).pool.vm_size == vm_size


@pytest.mark.parametrize("vm_size", ["standard.d2", "_standard", "2s_v3", "x" * 65, "std/d2",
                                     "standard_d2s_v3;rm", "ständard"])
def test_invalid_vm_sizes(vm_size):
    e = error(pool={"vm_size": vm_size})
    assert e.field == "pool.vm_size" and "standard_d2s_v3" in e.message


@pytest.mark.parametrize("pool_id", ["p" * 65, "my.pool", "pool\t", "pöol"])
def test_invalid_pool_ids(pool_id):
    assert error(pool={"id": pool_id}).field == "pool.id"


def test_pool_id_of_64_characters_is_accepted():
    assert parse(pool={"id": "p" * 64}).pool == ExistingPool("p" * 64)


@pytest.mark.parametrize("ext", ["bin\n", "a..b", ".", "tar.", "x" * 21, "ta r"])
def test_invalid_extensions(ext):
    assert error(merge={"command": "m", "extension": ext}).field == "merge.extension"


def test_huge_keys_and_values_give_short_messages():
    e = error(**{"k" * 100_000: 1})
    assert len(e.message) < 400 and len(e.field) <= 64
    e = error(retries="r" * 100_000)
    assert len(e.message) < 400


def test_duplicate_keys_deep_in_items_name_the_path():
    e = raw_error(job_bytes("", input='{"items": [1, {"a": {"b": 1, "b": 2}}]}'))
    assert e.field == "input.items[1].a.b" and "more than once" in e.message


def test_the_first_problem_in_document_order_is_named():
    e = raw_error(job_bytes("", input='{"items": ["\\u0000", NaN]}'))
    assert e.field == "input.items[0]"
    e = raw_error(job_bytes("", input='{"items": [NaN, "\\u0000"]}'))
    assert e.field == "input.items[0]" and "NaN" in e.message


@pytest.mark.parametrize("raw, words", [
    (b'{"command": "x"', ["line 1", "column"]),
    (b'{"a": "unterminated', ["Unterminated string starting at line 1, column 7"]),
    (b"\xef\xbb\xbf{\xff}", ["UTF-8", "byte 0xff", "byte offset 4"]),
    (b'\x00{"command": "x"}', ["line 1, column 1"]),
])
def test_whole_document_errors_say_where_and_what_to_fix(raw, words):
    e = raw_error(raw)
    assert e.field is None and all(w in e.message for w in words)


@pytest.mark.parametrize("raw", [
    b"]" * 100 + b"[" * 100,                                     # closers first: json stops at once
    b'{"a": "\\\\", "b": "[[[[' + b"[" * 100 + b'"}',            # brackets in a string after an escaped backslash
    b'{"a": "\\"' + b"[" * 100 + b'"}',                          # ... and after an escaped quote
    b'{"a": "' + b"[" * 100,                                     # inside an unterminated string
    b"[" * 30 + b"}" * 30 + b"[" * 100,                          # mismatched brackets
])
def test_brackets_json_never_nests_into_are_not_nesting(raw):
    e = raw_error(raw)
    assert "levels deep" not in e.message
    assert e.field == "a" or "line 1, column" in e.message  # an unknown field, or where json stops


@pytest.mark.parametrize("raw", [
    b'{"a": "\\\\", "b": ' + b"[" * 65 + b"]" * 65 + b"}",
    b'{"a": "\\"]]]]", "b": ' + b"[" * 65 + b"]" * 65 + b"}",
    b"[" * 100_000,
    b'{"a": ' + b'{"b": ' * 70 + b"1" + b"}" * 70 + b"}",
])
def test_deep_nesting_is_found_past_strings_and_escapes(raw):
    assert "levels deep" in raw_error(raw).message

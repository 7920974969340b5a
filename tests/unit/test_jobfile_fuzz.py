"""Seeded fuzzing of the job file parser: for any bytes, a spec that can run, or JobFileError.

The inputs are mutations of the documented examples (README's job file, examples/heavylift/jobs,
cancel requests) aimed at the classes of hostile input: values of other types, deep nesting,
huge integers, NaN/Infinity/1e400, lone surrogates, NUL and control characters, trailing
newlines, dot segments, %2f and backslashes in blob paths, odd image references, duplicate
keys, huge arrays, byte flips, truncations, insertions, non-UTF-8 bytes and BOMs.

Every input has its own generator, random.Random(f"{seed}:{index}"), so a failure names the seed
and index and shows the input's repr: `replay(seed, index)` rebuilds it. Inputs are capped in
size (no test is timed): the whole module runs in a few seconds.
"""
from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from shared.errors import JobFileError
from shared.jobfile import (
    MAX_DEPTH,
    BlobInput,
    BlobRef,
    CancelRequest,
    ExistingPool,
    ItemsInput,
    JobSpec,
    PoolSpec,
    PrefixInput,
    ReadPolicy,
    parse_intake_file,
    parse_job_file,
    run_id,
    run_id_candidates,
)

SEEDS = range(10)
CASES_PER_SEED = 1000  # 10,000 job files in all
MAX_INPUT_BYTES = 256 * 1024  # longer inputs are cut (a truncation is one more mutation)
ROOT = Path(__file__).resolve().parents[2]
POLICY = ReadPolicy(allowed=frozenset({"data", "refs", "intake"}),
                    forbidden=frozenset({"intake", "results", "batchdrop-runs"}),
                    forbidden_prefixes=("bd-", "azure-webjobs-", "$"))


# ---------------------------------------------------------------- the documented examples

def _documented_examples() -> list[Any]:
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    files = sorted((ROOT / "examples" / "heavylift" / "jobs").glob("*.json"))
    assert blocks and len(files) >= 5, "the documented examples moved; point the fuzzer at them"
    docs = [json.loads(b) for b in blocks] + [json.loads(f.read_text()) for f in files]
    return docs + [
        {"command": "python3 app.py", "input": {"items": [1, 2, 3]}},
        {"command": "m", "input": {"prefix": "data/parts/"}, "merge": {"command": "python3 merge.py",
                                                                      "image": "reg.io/m:1", "extension": "parquet"}},
        {"command": "x", "input": {"items": [1]}, "pool": {"id": "long-lived_pool1"}},
        {"cancel": "heavylift-nov-3f2a9c1e"},
        {"cancel": "heavylift-nov-3f2a9c1e5b7d9f01"},
    ]


EXAMPLES = _documented_examples()


# ---------------------------------------------------------------- hostile values

class Raw(str):
    """JSON text emitted as is (NaN, 1e400, 5000 digits: what json.dumps would not write)."""


class Pairs(list):
    """An object as a list of (key, value) pairs, so that a key can repeat."""


@dataclasses.dataclass(frozen=True)
class Nest:
    """`value` inside `levels` lists (or {"a": ...} objects), written as text: the generator
    must not recurse as deep as the inputs it makes."""

    value: Any
    levels: int
    in_objects: bool


RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "10.0", "1.5", "1E2",
               "9" * 4300, "9" * 4301, "-" + "9" * 5000, "0." + "0" * 3000 + "1", "1" + "0" * 400 + ".0"]
STRINGS = ["", " ", "x", "\n", "a\nb", "\0", "a\0b", "\ud800", "x\udfff", "\udc00\ud800", "\ud83d\ude00", "\t",
           "\x01", "\x1b[31m", "\x7f", "\x85", "\u2028", "\ufeff", "\u200e", ".", "..", "...", "%2f", "%",
           "\\", "名前", "Café", "-x", "x" * 300, "  padded  ", "jsonl", "csv", "none", "command", "partial"]
PATHS = ["data/x.jsonl", "data/a/../x.jsonl", "data/../intake/job.json", "data/./x", "data/x/..", "data/a//b",
         "data//x", "data/a%2f..%2fb", "data/%2e%2e/x", "data/a\\b", "data/x\n", " data/x", "data/x ", "data/x\t",
         "data/x\0", "data/\ud800", "data/x\x07", "data/\u2028x", "intake/other.json", "results/r/status.json",
         "batchdrop-runs/r.json", "bd-run-1234abcd-in/shards/0.jsonl", "azure-webjobs-secrets/host.json",
         "$logs/x", "refs/r.zip", "data/ref.zip", "data/", "data", "/data/x", "DATA/x", "da/x", "data/x.gz",
         "data/" + "x" * 1030, "data/..x/x..", "data/.hidden", "data/名前.csv", "refs/dir/", "data/run1/"]
IMAGES = ["python:3.11-slim", "myregistry.azurecr.io/heavylift:1.4", "localhost:5000/a/b:t",
          "app@sha256:" + "a" * 64, "reg.io/app:1@sha256:" + "0f" * 32, "[::1]:5000/app", "Upper/app",
          "-bad", "bad-", "a..b", "a/../b", "App", "app:", "app:-t", "app:" + "t" * 129, "app@sha256:abc",
          "a" * 256, "app\n", "app:1.4\n", "app \n", "ftp://reg/app", "a:b:c", "/app", "app/", "reg.io//app",
          "app;rm -rf /", "app$(id)", "ghcr.io/a__b/c--d.e_f:1"]
VM_SIZES = ["standard_d2s_v3", "Standard_NC6s_v3", "Standard_E4-2s_v3", "standard_d2s_v3\n", "std.d2", "_x",
            "2s", "x" * 65, "standard d2", "st\0d", "ständard"]
POOL_IDS = ["my-pool", "p" * 64, "p" * 65, "mypool\n", "my.pool", "", "pöol", "a\tb"]
EXTENSIONS = ["parquet", "tar.gz", ".csv", "bin\n", "a..b", ".", "x" * 21, "ta r", "x\0"]
CANCEL_IDS = ["heavylift-nov-3f2a9c1e", "x-1234abcd1234abcd", "x-1234abcd\n", "x-1234abcd1234abcd\n",
              "x-1234ABCD", "x-123", "../x-1234abcd", "-x-1234abcd", "x" * 60 + "-1234abcd", "x-1234abcd\0"]
FIELD_POOLS: dict[tuple[str, ...], list[Any]] = {
    ("image",): IMAGES, ("merge", "image"): IMAGES, ("pool", "vm_size"): VM_SIZES, ("pool", "id"): POOL_IDS,
    ("merge", "extension"): EXTENSIONS, ("input", "blob"): PATHS, ("input", "prefix"): PATHS,
    ("config", "blob"): PATHS, ("cancel",): CANCEL_IDS, ("name",): STRINGS, ("command",): STRINGS,
}
BYTE_SNIPPETS = [b"[", b"{", b"]", b"}", b'"', b"\\", b",", b":", b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80",
                 b"\xef\xbb\xbf", b"\\u0000", b"\\ud800", b"NaN", b"1e400", b"\n", b"\r\n", b" ", b"null"]
PREFIXES = [b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b" \n"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A hostile JSON value; below depth 2 only scalars, so that inputs stay small."""
    kind = rng.randrange(12 if depth < 2 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, 1, -1, 3, 100, 101, 10080, 10081, 2**53, 2**64, -(2**63)])
    if kind == 2:
        return rng.choice([0.5, 2.5, 10.0, -0.0, 1e308, 1e-300])
    if kind == 3:
        return Raw(rng.choice(RAW_NUMBERS))
    if kind in (4, 5):
        return string_mutation(rng, rng.choice(STRINGS + PATHS + IMAGES))
    if kind == 6:
        return nest(rng, random_value(rng, depth + 1))
    if kind == 7:
        element = rng.choice([0, None, "x", 1.5, "\0", Raw("NaN"), {"a": 1}])
        return [element] * rng.choice([0, 1, 2, 1000, 5000])  # huge arrays
    if kind in (8, 9):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 10:
        return {rng.choice(["blob", "items", "id", "command", "image", "x", "\0", "\ud800"]): random_value(rng, depth + 1)}
    return Pairs([("blob", random_value(rng, depth + 1)), ("blob", random_value(rng, depth + 1))])


def nest(rng: random.Random, value: Any) -> Nest:
    return Nest(value, rng.choice([1, 10, 60, 62, 63, 64, 65, 70, 200, 1000]), rng.random() < 0.5)


def string_mutation(rng: random.Random, text: str) -> str:
    kind = rng.randrange(8)
    at = rng.randrange(len(text) + 1)
    if kind == 0:
        return text + rng.choice(["\n", "\r\n", " ", "\t", "\0", "\ud800", "/", "/..", "%2f"])
    if kind == 1:
        return text[:at] + rng.choice(STRINGS[:22] + ["/../", "//", "\\", "%2F", "/./"]) + text[at:]
    if kind == 2:
        return text[:at]
    if kind == 3:
        return text.upper()
    if kind == 4:
        return rng.choice(STRINGS)
    return text


# ---------------------------------------------------------------- mutating a document

def nodes(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, value) of a JSON tree, the root first."""
    found = [(path, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            found += nodes(item, (*path, key))
    elif isinstance(value, list) and not isinstance(value, Pairs) and len(value) < 50:
        for i, item in enumerate(value):
            found += nodes(item, (*path, i))
    return found


def put(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


def mutate(rng: random.Random, doc: Any) -> Any:
    doc = json.loads(json.dumps(doc))  # a private copy
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        kind = rng.randrange(8)
        targets = nodes(doc)
        path, value = rng.choice(targets)
        if kind == 0:
            doc = put(doc, path, random_value(rng))
        elif kind == 1 and isinstance(value, str):
            doc = put(doc, path, string_mutation(rng, value))
        elif kind == 2:
            field = rng.choice(list(FIELD_POOLS))
            doc = set_field(doc, field, string_mutation(rng, rng.choice(FIELD_POOLS[field])))
        elif kind == 3 and isinstance(value, dict) and value:
            key = rng.choice(list(value))
            del value[key]
            if rng.random() < 0.5:  # renamed: a typo, a stray key, or one with NUL / a surrogate
                value[rng.choice([key[:-1], key.upper(), key + "\n", key + "\0", "\ud800", "cancel", "x"])] = 1
        elif kind == 4 and isinstance(value, dict) and value:
            key = rng.choice(list(value))
            pairs = Pairs(value.items())
            pairs.insert(rng.randrange(len(pairs) + 1), (key, random_value(rng)))
            doc = put(doc, path, pairs)  # opaque to further mutation
        elif kind == 5:
            doc = put(doc, path, nest(rng, value))
        elif kind == 6:
            doc = set_field(doc, ("resources",), [{"blob": rng.choice(PATHS), "unzip": rng.random() < 0.3}
                                                  for _ in range(rng.randrange(4))])
        elif kind == 7:
            doc = set_field(doc, ("input", "items"), [random_value(rng, 2) for _ in range(rng.randrange(1, 30))])
    return doc


def set_field(doc: Any, field: tuple[str, ...], value: Any) -> Any:
    if not isinstance(doc, dict):
        return doc
    parent = doc
    for step in field[:-1]:
        if not isinstance(parent.get(step), dict):
            parent[step] = {}
        parent = parent[step]
    parent[field[-1]] = value
    return doc


def emit(value: Any, rng: random.Random, ascii_only: bool) -> str:
    """JSON text of `value`, with Raw tokens as is and Pairs' repeated keys kept."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Nest):
        opening, closing = ('{"a": ', "}") if value.in_objects else ("[", "]")
        return opening * value.levels + emit(value.value, rng, ascii_only) + closing * value.levels
    if isinstance(value, Pairs):
        value = list(value)
        return "{" + ", ".join(f"{emit(str(k), rng, ascii_only)}: {emit(v, rng, ascii_only)}" for k, v in value) + "}"
    if isinstance(value, dict):
        sep = rng.choice([", ", ",\n  "])
        return "{" + sep.join(f"{emit(k, rng, ascii_only)}: {emit(v, rng, ascii_only)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        if len(value) > 50 and all(v is value[0] for v in value):  # a huge array: one element, repeated
            return "[" + ",".join([emit(value[0], rng, ascii_only)] * len(value)) + "]"
        return "[" + ",".join(emit(v, rng, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def mangle(rng: random.Random, raw: bytes) -> bytes:
    """Byte-level damage: flips, cuts, insertions, BOMs."""
    for _ in range(rng.choice([1, 1, 2, 4])):
        kind = rng.randrange(6)
        at = rng.randrange(len(raw) + 1)
        if kind == 0 and raw:
            i = rng.randrange(len(raw))
            raw = raw[:i] + bytes([raw[i] ^ (1 << rng.randrange(8))]) + raw[i + 1:]
        elif kind == 1:
            raw = raw[:at]
        elif kind == 2:
            raw = raw[:at] + rng.choice(BYTE_SNIPPETS) + raw[at:]
        elif kind == 3:
            raw = rng.choice(PREFIXES) + raw
        elif kind == 4:
            raw = raw[:at] + raw[at:at + rng.randrange(1, 40)] + raw[at:]  # a repeated slice
        else:
            raw = raw + rng.choice([b"\n", b"}", b" {}", b"\x00", b"\n\n"])
    return raw


def replay(seed: int, index: int) -> tuple[bytes, dict[str, Any]]:
    """The input `index` of `seed` and the keyword arguments it was parsed with."""
    rng = random.Random(f"{seed}:{index}")
    doc = mutate(rng, rng.choice(EXAMPLES))
    raw = emit(doc, rng, ascii_only=rng.random() < 0.7).encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        raw = mangle(rng, raw)
    raw = raw[:MAX_INPUT_BYTES]
    kwargs: dict[str, Any] = {"blob_name": rng.choice(["jobs/heavy.json", "My Job.v2.json", "a/.json", "x" * 300,
                                                       "名前.json", "\ud800.json"])}
    if rng.random() < 0.5:
        kwargs["policy"] = POLICY
    if rng.random() < 0.05:
        kwargs["max_bytes"] = rng.randrange(1, 400)
    return raw, kwargs


# ---------------------------------------------------------------- what must hold

CONTAINER = re.compile(r"[a-z0-9](?:-?[a-z0-9]){2,62}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])"
IMAGE = re.compile(rf"(?:{_HOST}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::\w[\w.-]{{0,127}})?"
                   r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
VM_SIZE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
POOL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
BATCH_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
RUN_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
CANCEL_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-(?:[0-9a-f]{16}|[0-9a-f]{8})")
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def every_string(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if dataclasses.is_dataclass(value):
        return every_string([getattr(value, f.name) for f in dataclasses.fields(value)])
    if isinstance(value, dict):
        return every_string(list(value)) + every_string(list(value.values()))
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in every_string(item)]
    return []


def assert_usable_ref(ref: BlobRef, *, folder: bool) -> None:
    assert CONTAINER.fullmatch(ref.container), ref
    assert len(ref.path) <= 1024 and not CONTROL.search(ref.path), ref
    assert "%" not in ref.path and "\\" not in ref.path and str(ref) == str(ref).strip(), ref
    segments = ref.path.split("/")
    if folder and segments[-1] == "":
        segments.pop()
    assert all(s not in ("", ".", "..") for s in segments), ref
    if not folder:
        assert ref.path and not ref.path.endswith("/"), ref


def assert_runnable(spec: JobSpec, kwargs: dict[str, Any]) -> None:
    """What docs/jobfile.md promises of an accepted job file, checked independently of jobfile.py."""
    for text in every_string(spec):
        assert "\0" not in text
        text.encode("utf-8")  # no lone surrogates: the spec can be written back, sent, logged
    json.dumps([spec.input.items if isinstance(spec.input, ItemsInput) else None,
                spec.config if isinstance(spec.config, dict) else None], allow_nan=False)
    assert RUN_NAME.fullmatch(spec.name) and len(spec.name) <= 40
    assert spec.command.strip()
    refs: list[tuple[BlobRef, bool]] = [(r.blob, False) for r in spec.resources]
    if isinstance(spec.input, BlobInput):
        refs.append((spec.input.blob, False))
    if isinstance(spec.input, PrefixInput):
        refs.append((spec.input.prefix, True))
    if isinstance(spec.config, BlobRef):
        refs.append((spec.config, False))
    for ref, folder in refs:
        assert_usable_ref(ref, folder=folder)
        if "policy" in kwargs:
            assert kwargs["policy"].readable(ref.container), ref
    for image in (spec.image, spec.merge.image):
        assert image is None or (len(image) <= 255 and IMAGE.fullmatch(image)), image
    if spec.merge.extension is not None:
        assert re.fullmatch(r"[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*", spec.merge.extension)
    if isinstance(spec.pool, PoolSpec) and spec.pool.vm_size is not None:
        assert VM_SIZE.fullmatch(spec.pool.vm_size), spec.pool.vm_size
    if isinstance(spec.pool, ExistingPool):
        assert POOL_ID.fullmatch(spec.pool.id), spec.pool.id
    ids = run_id_candidates(spec.name, "intake", "jobs/a.json", '"0x8DC1"')
    assert ids[0] == run_id(spec.name, "intake", "jobs/a.json", '"0x8DC1"')
    for ident in ids:
        assert BATCH_JOB_ID.fullmatch(ident) and CANCEL_ID.fullmatch(ident), ident
        assert parse_intake_file(json.dumps({"cancel": ident}).encode(), blob_name="c.json") == CancelRequest(ident)


def assert_clear(error: JobFileError) -> None:
    """A field path, or a whole-document error saying what to fix ("line" and "column" for JSON syntax)."""
    str(error).encode("utf-8")  # it goes into error.json and the logs
    assert error.message.strip()
    if error.field is not None:
        # a path: at most MAX_DEPTH steps of at most 64 characters each
        assert error.field and error.field.isprintable() and len(error.field) <= MAX_DEPTH * 70, error.field
    else:
        assert error.message.startswith("the job file"), error.message
        if "not valid JSON" in error.message or "levels deep" in error.message:
            assert "line" in error.message and "column" in error.message


def check(seed: int, index: int) -> str:
    raw, kwargs = replay(seed, index)
    job_only = index % 7 == 0
    try:
        result: JobSpec | CancelRequest = (parse_job_file if job_only else parse_intake_file)(raw, **kwargs)
    except JobFileError as e:
        try:
            assert_clear(e)
        except AssertionError as bad:
            pytest.fail(f"unclear error for seed {seed} index {index} (replay({seed}, {index})): {e!r}: {bad}\n"
                        f"input: {raw[:4000]!r}")
        return "rejected"
    except Exception as e:  # noqa: BLE001 - the bug this test exists for
        pytest.fail(f"{type(e).__name__} escaped for seed {seed} index {index} (replay({seed}, {index})): {e}\n"
                    f"input: {raw[:4000]!r}\nkwargs: {kwargs!r}")
    try:
        if isinstance(result, CancelRequest):
            assert not job_only and CANCEL_ID.fullmatch(result.run_id), result
        else:
            assert isinstance(result, JobSpec)
            assert_runnable(result, kwargs)
    except AssertionError as bad:
        pytest.fail(f"accepted but not runnable, seed {seed} index {index} (replay({seed}, {index})): {bad}\n"
                    f"input: {raw[:4000]!r}\nspec: {result!r}"[:8000])
    return "accepted"


@pytest.mark.parametrize("seed", SEEDS)
def test_any_bytes_give_a_runnable_spec_or_a_clear_job_file_error(seed):
    outcomes = [check(seed, index) for index in range(CASES_PER_SEED)]
    # the mutations must leave enough valid files for the acceptance checks to mean something
    assert outcomes.count("accepted") > CASES_PER_SEED // 20, outcomes.count("accepted")
    assert outcomes.count("rejected") > CASES_PER_SEED // 2


def test_the_fuzzer_reaches_every_hostile_class():
    """A guard for the generator itself: each class above shows up among the inputs."""
    seen = b"".join(replay(SEEDS[0], index)[0] for index in range(CASES_PER_SEED))
    for marker in [b"[" * 65, b"{\"a\": " * 65, b"9" * 4301, b"NaN", b"Infinity", b"1e400", b"\\ud800",
                   b"\\u0000", b"\\n\"", b"/../", b"%2f", b"\\\\", b"\xef\xbb\xbf", b"\xff", b"-bad",
                   b"\"blob\": \"data/a//b\""]:
        assert marker in seen, marker

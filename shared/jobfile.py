"""The job file: its model, its validation, and the names derived from it.

`parse_job_file` turns the bytes a user dropped into `intake` into a `JobSpec`,
or raises `JobFileError` naming the offending field (dotted path such as
"pool.max_nodes" or "resources[1].blob") with a message that says what is
wrong and how to fix it. The contract is docs/jobfile.md; choices the
contract leaves open are documented on the functions below.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import posixpath
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Union

from shared.errors import JobFileError

MAX_JOB_FILE_BYTES = 1_048_576
NAME_MAX_CHARS = 40
INPUT_FORMATS = ("jsonl", "lines", "csv", "json")
MERGE_KINDS = ("jsonl", "lines", "csv", "concat", "none", "command")
FAILURE_POLICIES = ("fail", "partial")
DEFAULT_RETRIES = 3
DEFAULT_TASK_TIMEOUT_MINUTES = 60

TOP_LEVEL_FIELDS = (
    "name", "command", "image", "input", "items_per_task", "tasks", "config",
    "resources", "merge", "on_task_failure", "retries", "task_timeout_minutes", "pool",
)

# Azure Storage container names: 3-63 chars of a-z, 0-9 and single hyphens, starting
# and ending with a letter or digit.
_CONTAINER_RE = re.compile(r"^[a-z0-9](?:-?[a-z0-9])+$")
_BLOB_PATH_MAX = 1024
# Batch pool ids: letters, digits, hyphens and underscores, at most 64 characters.
_POOL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EXTENSION_RE = re.compile(r"^[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*$")
_EXTENSION_MAX = 20
_FORMAT_BY_EXTENSION = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}
# Splitting reads text; a compressed blob would be cut into meaningless "lines".
_COMPRESSED_EXTENSIONS = (".gz", ".gzip", ".zip", ".bz2", ".xz", ".zst", ".7z", ".tgz")
_MERGE_EXTENSION = {"jsonl": "jsonl", "lines": "txt", "csv": "csv", "concat": "bin", "command": "bin"}
_NATURAL_EXTENSION = {"jsonl": "jsonl", "json": "jsonl", "lines": "txt", "csv": "csv"}


# ---------------------------------------------------------------- model

@dataclass(frozen=True)
class BlobRef:
    """A blob (or a name prefix) in a container, written "<container>/<path>"."""

    container: str
    path: str

    @classmethod
    def parse(cls, text: Any, field: str, *, allow_empty_path: bool = False) -> "BlobRef":
        """Parse "<container>/<path>"; raise JobFileError(field=field) unless valid.

        `allow_empty_path` admits "<container>/" and "<container>" (a whole container,
        for prefixes).
        """
        example = '"data/big.jsonl"'
        if not isinstance(text, str) or not text.strip():
            raise JobFileError(
                f"must be a blob reference written as a string \"<container>/<path>\", "
                f"e.g. {example}; got {_describe(text)}", field=field)
        if text.startswith("/"):
            raise JobFileError(
                f"{text!r} starts with '/'; write it as \"<container>/<path>\" without a "
                f"leading slash, e.g. {example}", field=field)
        container, slash, path = text.partition("/")
        if not slash and not allow_empty_path:
            raise JobFileError(
                f"{text!r} has no path; write it as \"<container>/<path>\", e.g. {example}",
                field=field)
        if not (3 <= len(container) <= 63 and _CONTAINER_RE.match(container)):
            raise JobFileError(
                f"{container!r} is not a valid container name: use 3 to 63 lowercase letters, "
                f"digits and single hyphens, starting and ending with a letter or digit "
                f"(e.g. \"data\")", field=field)
        if not path and not allow_empty_path:
            raise JobFileError(
                f"{text!r} names a container but no blob; add the blob's path after the "
                f"'/', e.g. {example}", field=field)
        if len(path) > _BLOB_PATH_MAX:
            raise JobFileError(
                f"the blob path is {len(path)} characters long; Azure allows at most "
                f"{_BLOB_PATH_MAX}", field=field)
        return cls(container, path)

    def __str__(self) -> str:
        return f"{self.container}/{self.path}"


@dataclass(frozen=True)
class ItemsInput:
    """Inline JSON values; each task's input is a JSONL file of its items."""

    items: tuple[Any, ...]


@dataclass(frozen=True)
class BlobInput:
    """One blob split into shards; `format` is one of INPUT_FORMATS."""

    blob: BlobRef
    format: str


@dataclass(frozen=True)
class PrefixInput:
    """Already-split inputs: one task per blob whose name starts with the prefix, in name order.

    The prefix is a plain name prefix, as in Azure's listing: "data/run1/" lists that
    folder, while "data/run1" would also match "data/run10/...". A prefix with an
    empty path ("data/") means every blob in the container.
    """

    prefix: BlobRef


InputSpec = Union[ItemsInput, BlobInput, PrefixInput]


@dataclass(frozen=True)
class Resource:
    """A reference file every task can read under RESOURCES_DIR, as `file_name`; a .zip
    with `unzip` is unpacked there instead."""

    blob: BlobRef
    unzip: bool = False

    @property
    def file_name(self) -> str:
        return posixpath.basename(self.blob.path)


@dataclass(frozen=True)
class MergeSpec:
    """How task outputs become results/<run>/output.<ext>.

    kind: jsonl | lines | csv | concat | none | command. `command` and `image` are set
    only for kind "command" (the user's merge task); `extension` is an addition to the
    contract: the merge object may give {"extension": "parquet"} to name the merged
    output (kind "command" only; default "bin").
    """

    kind: str
    command: str | None = None
    image: str | None = None
    extension: str | None = None

    @property
    def output_extension(self) -> str | None:
        """Extension of the merged output; None for "none" (per-task outputs are kept)."""
        return output_extension(self.kind, self.extension)


@dataclass(frozen=True)
class PoolSpec:
    """An auto pool living and dying with the job; None fields take the settings' defaults."""

    vm_size: str | None = None
    max_nodes: int | None = None
    spot: bool = False
    slots_per_node: int | None = None


@dataclass(frozen=True)
class ExistingPool:
    """A long-lived pool the user manages; the run never resizes or deletes it."""

    id: str


ConfigSpec = Union[dict, BlobRef, None]


@dataclass(frozen=True)
class JobSpec:
    """A validated job file. Exactly one of `items_per_task` and `tasks` is set, except
    for a prefix input, where both are None (one task per blob)."""

    name: str
    command: str
    image: str | None
    input: InputSpec
    items_per_task: int | None
    tasks: int | None
    config: ConfigSpec
    resources: tuple[Resource, ...]
    merge: MergeSpec
    on_task_failure: str
    retries: int = DEFAULT_RETRIES
    task_timeout_minutes: int = DEFAULT_TASK_TIMEOUT_MINUTES
    pool: PoolSpec | ExistingPool | None = None


# ---------------------------------------------------------------- derived names

def output_extension(kind: str, extension: str | None = None) -> str | None:
    """The merged output's extension for a merge kind: jsonl->"jsonl", lines->"txt",
    csv->"csv", concat->"bin", command->`extension` or "bin", none->None."""
    if kind == "none":
        return None
    if kind not in _MERGE_EXTENSION:
        raise ValueError(f"unknown merge kind {kind!r}")
    return extension if kind == "command" and extension else _MERGE_EXTENSION[kind]


def input_extension(spec_input: InputSpec) -> str:
    """The natural extension of a task's data for an input form: items and jsonl/json
    blobs -> "jsonl", lines -> "txt", csv -> "csv", a prefix -> "bin"."""
    if isinstance(spec_input, ItemsInput):
        return "jsonl"
    if isinstance(spec_input, BlobInput):
        return _NATURAL_EXTENSION[spec_input.format]
    return "bin"


def task_output_name(spec: JobSpec) -> str:
    """The file name a task writes (OUTPUT_PATH's name): "output.<ext>", where ext is the
    merge format's extension, or the input's natural one when merge is "none"."""
    ext = spec.merge.output_extension or input_extension(spec.input)
    return f"output.{ext}"


def sanitise_name(text: str) -> str:
    """A run-name-safe form of `text`: only [a-z0-9-], no leading, trailing or repeated
    '-', at most 40 characters, never empty ("job" stands in).

    Accents are folded first ("Café" -> "cafe"); every other character becomes '-'.
    """
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    name = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")
    name = name[:NAME_MAX_CHARS].rstrip("-")
    return name or "job"


def default_name(blob_name: str) -> str:
    """The job file's blob name without folders and without its last extension."""
    stem, _ = posixpath.splitext(posixpath.basename(blob_name.rstrip("/")))
    return stem


def run_id(name: str, container: str, blob_name: str, etag: str) -> str:
    """"<name>-<8 hex>": the same blob version (container, name, ETag) always gives the
    same id, and a new upload (new ETag) a new one. Quotes around the ETag are ignored,
    so '"0x8D"' and '0x8D' are the same version."""
    normalised_etag = etag.strip().strip('"')
    identity = "\0".join((container, blob_name, normalised_etag)).encode("utf-8")
    return f"{sanitise_name(name)}-{hashlib.sha256(identity).hexdigest()[:8]}"


# ---------------------------------------------------------------- parsing

@dataclass(frozen=True)
class CancelRequest:
    """`{"cancel": "<run id>"}` dropped into intake: stop that run and clean up after it (an
    addition to the contract; a file with "cancel" must hold nothing else)."""

    run_id: str


class _CancelSeen(Exception):
    def __init__(self, doc: dict) -> None:
        self.doc = doc


_RUN_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?-[0-9a-f]{8}$")


def parse_intake_file(raw: bytes, *, blob_name: str, max_bytes: int = MAX_JOB_FILE_BYTES) -> JobSpec | CancelRequest:
    """A file dropped into intake: a job file (see parse_job_file) or a cancel request."""
    try:
        return _parse_document(raw, blob_name=blob_name, max_bytes=max_bytes)
    except _CancelSeen as seen:
        extra = sorted(set(seen.doc) - {"cancel"})
        if extra:
            raise JobFileError(f"a cancel request holds only \"cancel\"; remove {', '.join(map(repr, extra))}",
                               field=extra[0]) from None
        run = seen.doc["cancel"]
        if not isinstance(run, str) or not _RUN_ID_RE.match(run):
            raise JobFileError(f"must be the id of a run, like \"heavylift-nov-3f2a9c1e\" (the folder name "
                               f"under results/), got {_describe(run)}", field="cancel") from None
        return CancelRequest(run)


def parse_job_file(raw: bytes, *, blob_name: str, max_bytes: int = MAX_JOB_FILE_BYTES) -> JobSpec:
    """Validate a job file and return its model.

    Guarantee: returns only a JobSpec every field of which is usable as documented in
    docs/jobfile.md; otherwise raises JobFileError whose `field` is the dotted path of
    the first problem found (None for problems with the file as a whole).

    Beyond the contract: a UTF-8 BOM is tolerated; JSON `null` for an optional field
    means "not given"; a key repeated within one object is an error (the first value
    would be lost silently); NaN/Infinity and numbers too large for a double are
    errors; whole-number floats such as 10.0 are accepted where an integer is expected.
    """
    try:
        return _parse_document(raw, blob_name=blob_name, max_bytes=max_bytes)
    except _CancelSeen:
        raise JobFileError("this is a cancel request, not a job file", field="cancel") from None


def _parse_document(raw: bytes, *, blob_name: str, max_bytes: int) -> JobSpec:
    doc = _load_json(raw, max_bytes)
    if not isinstance(doc, dict):
        raise JobFileError(
            f"the job file must be a JSON object ({{\"command\": ..., \"input\": ...}}), "
            f"but it is {_describe(doc)}")
    _check_duplicates(doc, "")
    if "cancel" in doc:
        raise _CancelSeen(doc)  # a cancel request, not a job: see parse_intake_file
    _check_keys(doc, TOP_LEVEL_FIELDS, "")

    name_value = doc.get("name")
    if name_value is not None and not isinstance(name_value, str):
        raise JobFileError(f"must be a string, got {_describe(name_value)}", field="name")
    name = sanitise_name(name_value if name_value and name_value.strip() else default_name(blob_name))

    command = _required(doc, "command", 'the shell command each task runs, e.g. '
                                        '"python3 app.py -i \\"$INPUT_PATH\\" -o \\"$OUTPUT_PATH\\""')
    command = _non_empty_string(command, "command", "the shell command each task runs")
    image = _image(doc.get("image"), "image")
    spec_input = _parse_input(_required(doc, "input", 'where the data comes from, e.g. '
                                                      '{"blob": "data/big.jsonl"}'))
    items_per_task, tasks = _parse_split(doc, spec_input)
    return JobSpec(
        name=name,
        command=command,
        image=image,
        input=spec_input,
        items_per_task=items_per_task,
        tasks=tasks,
        config=_parse_config(doc.get("config")),
        resources=_parse_resources(doc.get("resources")),
        merge=_parse_merge(doc.get("merge"), spec_input),
        on_task_failure=_choice(doc.get("on_task_failure"), FAILURE_POLICIES,
                                "on_task_failure", default="fail"),
        retries=_int(doc.get("retries"), "retries", 0, 100, DEFAULT_RETRIES),
        task_timeout_minutes=_int(doc.get("task_timeout_minutes"), "task_timeout_minutes",
                                  1, 10080, DEFAULT_TASK_TIMEOUT_MINUTES),
        pool=_parse_pool(doc.get("pool")),
    )


class _DupDict(dict):
    """A JSON object that remembers keys seen more than once (json keeps only the last)."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _DupDict:
    obj = _DupDict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.duplicates = tuple(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


class _BadNumber(ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber(text)
    return value


def _reject_constant(text: str) -> float:
    raise _BadNumber(text)


def _load_json(raw: bytes, max_bytes: int) -> Any:
    if len(raw) > max_bytes:
        raise JobFileError(
            f"the job file is {len(raw):,} bytes, over the limit of {max_bytes:,}; keep large "
            f"data out of it: upload it to a blob and point to it with "
            f"\"input\": {{\"blob\": \"<container>/<path>\"}}")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise JobFileError("the job file is saved as UTF-16; save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise JobFileError(
            f"the job file is not valid UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}, "
            f"byte offset {e.start}); save it as UTF-8") from None
    if not text.strip():
        raise JobFileError("the job file is empty; it must be a JSON object such as "
                           "{\"command\": \"...\", \"input\": {...}}")
    try:
        return json.loads(text, object_pairs_hook=_object_pairs,
                          parse_float=_finite_float, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise JobFileError(
            f"the job file is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
            f"Look for a missing or extra comma, quote or bracket there") from None
    except _BadNumber as e:
        raise JobFileError(
            f"the job file contains the number {e.text}, which JSON does not allow (NaN and "
            f"Infinity are not JSON, and numbers must fit a double); use a string or a "
            f"smaller number") from None


def _check_duplicates(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key in getattr(value, "duplicates", ()):
            raise JobFileError(
                f"the field {key!r} appears more than once in the same object; keep only one",
                field=_join(path, key))
        for key, item in value.items():
            _check_duplicates(item, _join(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_duplicates(item, f"{path}[{i}]")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_keys(obj: dict, allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise JobFileError(_unknown_message(key, allowed, path), field=_join(path, key))


# Fields of nested objects that people put at the top level by mistake.
_NESTED_HOME = {"items": "input", "blob": "input", "prefix": "input", "format": "input",
                "vm_size": "pool", "max_nodes": "pool", "spot": "pool", "slots_per_node": "pool"}


def _unknown_message(key: str, allowed: tuple[str, ...], path: str) -> str:
    if not path and key in _NESTED_HOME:
        home = _NESTED_HOME[key]
        return (f"unknown field {key!r} at the top level; it belongs inside {home!r}, "
                f"e.g. \"{home}\": {{\"{key}\": ...}}")
    hint = _suggest(key, allowed)
    if hint:
        return f"unknown field {key!r}; did you mean {hint!r}?"
    where = f"in {path!r}" if path else "at the top level"
    return f"unknown field {key!r} {where}; the known fields are: {', '.join(allowed)}"


def _suggest(word: str, choices: tuple[str, ...]) -> str | None:
    """The closest choice when `word` looks like a typo of it (case-insensitive)."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _describe(value: Any) -> str:
    """Name a JSON value's type for a person, with a short excerpt of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (true/false)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _required(obj: dict, key: str, what: str, path: str = "") -> Any:
    value = obj.get(key)
    if value is None:
        raise JobFileError(f"is required ({what})", field=_join(path, key))
    return value


def _non_empty_string(value: Any, field: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise JobFileError(f"must be a non-empty string ({what}); got {_describe(value)}",
                           field=field)
    return value


def _image(value: Any, field: str) -> str | None:
    if value is None:
        return None
    image = _non_empty_string(value, field, 'a container image such as '
                                            '"myregistry.azurecr.io/app:1.4"')
    if image != image.strip() or any(ch.isspace() for ch in image):
        raise JobFileError(f"{image!r} contains spaces; an image reference looks like "
                           f"\"myregistry.azurecr.io/app:1.4\"", field=field)
    return image


def _int(value: Any, field: str, low: int, high: int | None, default: int | None) -> int | None:
    if value is None:
        return default
    bound = f"from {low} to {high}" if high is not None else f"of {low} or more"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobFileError(f"must be a whole number {bound}; got {_describe(value)}", field=field)
    if value < low or (high is not None and value > high):
        raise JobFileError(f"must be a whole number {bound}; got {value}", field=field)
    return value


def _bool(value: Any, field: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise JobFileError(f"must be true or false (without quotes); got {_describe(value)}",
                           field=field)
    return value


def _choice(value: Any, choices: tuple[str, ...], field: str, *, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, str) and value in choices:
        return value
    hint = _suggest(value, choices) if isinstance(value, str) else None
    tail = f"; did you mean {hint!r}?" if hint else ""
    raise JobFileError(f"must be one of {', '.join(repr(c) for c in choices)}; "
                       f"got {_describe(value)}{tail}", field=field)


def _object(value: Any, field: str, example: str) -> dict:
    if not isinstance(value, dict):
        raise JobFileError(f"must be an object like {example}; got {_describe(value)}",
                           field=field)
    return value


def _parse_input(value: Any) -> InputSpec:
    obj = _object(value, "input", '{"blob": "data/big.jsonl"}')
    forms = ("items", "blob", "prefix")
    _check_keys(obj, (*forms, "format"), "input")
    given = [f for f in forms if obj.get(f) is not None]
    if len(given) != 1:
        found = f"it has {' and '.join(repr(g) for g in given)}" if given else "it has none"
        raise JobFileError(
            f"must have exactly one of \"items\" (inline values), \"blob\" (one blob to split) "
            f"or \"prefix\" (already-split blobs); {found}", field="input")
    form = given[0]
    fmt = obj.get("format")
    if fmt is not None and form != "blob":
        raise JobFileError(
            f"\"format\" applies only to a \"blob\" input (it says how to split the blob); "
            f"remove it from this {form!r} input", field="input.format")
    if form == "items":
        items = obj["items"]
        if not isinstance(items, list) or not items:
            raise JobFileError(
                f"must be a non-empty list of JSON values, one per item; got "
                f"{'an empty list' if items == [] else _describe(items)}", field="input.items")
        return ItemsInput(tuple(items))
    if form == "prefix":
        return PrefixInput(BlobRef.parse(obj["prefix"], "input.prefix", allow_empty_path=True))
    return _parse_blob_input(obj["blob"], fmt)


def _parse_blob_input(value: Any, fmt: Any) -> BlobInput:
    blob = BlobRef.parse(value, "input.blob")
    if blob.path.endswith("/"):
        raise JobFileError(
            f"{str(blob)!r} ends with '/', which names a folder, not a blob; to run one task "
            f"per blob in a folder use {{\"prefix\": {str(blob)!r}}}", field="input.blob")
    lowered = blob.path.lower()
    if lowered.endswith(_COMPRESSED_EXTENSIONS):
        raise JobFileError(
            f"{str(blob)!r} looks compressed; the splitter reads plain text. Upload it "
            f"uncompressed, or split it yourself and use a \"prefix\" input", field="input.blob")
    if fmt is None:
        return BlobInput(blob, format_from_extension(blob.path))
    return BlobInput(blob, _choice(fmt, INPUT_FORMATS, "input.format", default="jsonl"))


def format_from_extension(path: str) -> str:
    """The input format a blob's name implies: .jsonl/.ndjson -> jsonl, .csv -> csv,
    .json -> json, anything else (.txt, no extension, ...) -> lines. Case-insensitive."""
    _, ext = posixpath.splitext(path.lower())
    return _FORMAT_BY_EXTENSION.get(ext, "lines")


def _parse_split(doc: dict, spec_input: InputSpec) -> tuple[int | None, int | None]:
    items_per_task = _int(doc.get("items_per_task"), "items_per_task", 1, None, None)
    tasks = _int(doc.get("tasks"), "tasks", 1, None, None)
    if items_per_task is not None and tasks is not None:
        raise JobFileError(
            "\"items_per_task\" and \"tasks\" cannot be used together: give items_per_task to "
            "fix each task's size, or tasks to fix the number of tasks", field="tasks")
    if isinstance(spec_input, PrefixInput):
        for key, value in (("items_per_task", items_per_task), ("tasks", tasks)):
            if value is not None:
                raise JobFileError(
                    f"does not apply to a \"prefix\" input, which runs one task per blob; "
                    f"remove {key!r}", field=key)
        return None, None
    if tasks is None and items_per_task is None:
        items_per_task = 1
    return items_per_task, tasks


def _parse_config(value: Any) -> ConfigSpec:
    """An inline object, or {"blob": "<container>/<path>"}: an object whose only key is
    "blob" with a string value is a file reference, anything else is inline config."""
    if value is None:
        return None
    obj = _object(value, "config", '{"threshold": 0.5} or {"blob": "data/config.json"}')
    if set(obj) == {"blob"} and isinstance(obj["blob"], str):
        return BlobRef.parse(obj["blob"], "config.blob")
    return dict(obj)


def _parse_resources(value: Any) -> tuple[Resource, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise JobFileError(
            f"must be a list like [{{\"blob\": \"data/ref.zip\", \"unzip\": true}}]; got "
            f"{_describe(value)}", field="resources")
    resources: list[Resource] = []
    names: dict[str, int] = {}
    for i, entry in enumerate(value):
        path = f"resources[{i}]"
        obj = _object(entry, path, '{"blob": "data/ref.zip", "unzip": true}')
        _check_keys(obj, ("blob", "unzip"), path)
        blob = BlobRef.parse(_required(obj, "blob", 'the reference file, e.g. "data/ref.zip"', path),
                             f"{path}.blob")
        if blob.path.endswith("/"):
            raise JobFileError(f"{str(blob)!r} names a folder; list each file as its own "
                               f"resource", field=f"{path}.blob")
        unzip = _bool(obj.get("unzip"), f"{path}.unzip", False)
        if unzip and not blob.path.lower().endswith(".zip"):
            raise JobFileError(f"is true but {str(blob)!r} is not a .zip file; only .zip files "
                               f"are unpacked, so remove \"unzip\" or point to the .zip",
                               field=f"{path}.unzip")
        resource = Resource(blob, unzip)
        # Every resource lands in one directory by file name, so names must not collide.
        if not unzip and resource.file_name in names:
            raise JobFileError(
                f"{resource.file_name!r} is also the file name of resources[{names[resource.file_name]}]; "
                f"both would land in RESOURCES_DIR under the same name, so rename one",
                field=f"{path}.blob")
        if not unzip:
            names[resource.file_name] = i
        resources.append(resource)
    return tuple(resources)


def _default_merge_kind(spec_input: InputSpec) -> str:
    if isinstance(spec_input, ItemsInput):
        return "jsonl"
    if isinstance(spec_input, BlobInput):
        return "jsonl" if spec_input.format in ("jsonl", "json") else spec_input.format
    return "concat"


def _parse_merge(value: Any, spec_input: InputSpec) -> MergeSpec:
    """Default by input: items and jsonl/json blobs -> jsonl, lines -> lines, csv -> csv,
    prefix -> concat."""
    if value is None:
        return MergeSpec(_default_merge_kind(spec_input))
    if isinstance(value, str):
        if value == "command":
            raise JobFileError(
                "a merge command is written as an object: {\"command\": \"...\", \"image\": "
                "\"...\"}", field="merge")
        kinds = tuple(k for k in MERGE_KINDS if k != "command")
        return MergeSpec(_choice(value, kinds, "merge", default="jsonl"))
    obj = _object(value, "merge", '"jsonl" or {"command": "python3 merge.py", "image": "..."}')
    _check_keys(obj, ("command", "image", "extension"), "merge")
    command = _non_empty_string(
        _required(obj, "command", "the merge task's shell command", "merge"),
        "merge.command", "the merge task's shell command")
    return MergeSpec("command", command, _image(obj.get("image"), "merge.image"),
                     _extension(obj.get("extension"), "merge.extension"))


def _extension(value: Any, field: str) -> str | None:
    if value is None:
        return None
    ext = value.removeprefix(".") if isinstance(value, str) else value
    if not isinstance(ext, str) or not _EXTENSION_RE.match(ext) or len(ext) > _EXTENSION_MAX:
        raise JobFileError(
            f"must be a file extension of letters and digits such as \"parquet\" or "
            f"\"tar.gz\"; got {_describe(value)}", field=field)
    return ext


_POOL_VM_FIELDS = ("vm_size", "max_nodes", "spot", "slots_per_node")


def _parse_pool(value: Any) -> PoolSpec | ExistingPool | None:
    if value is None:
        return None
    obj = _object(value, "pool", '{"vm_size": "standard_d2s_v3", "max_nodes": 20} or '
                                 '{"id": "my-pool"}')
    _check_keys(obj, ("id", *_POOL_VM_FIELDS), "pool")
    if obj.get("id") is not None:
        others = [k for k in _POOL_VM_FIELDS if obj.get(k) is not None]
        if others:
            raise JobFileError(
                f"\"id\" (an existing pool) cannot be combined with {', '.join(others)}: an "
                f"existing pool keeps its own settings. Remove one or the other",
                field="pool")
        pool_id = obj["id"]
        if not isinstance(pool_id, str) or not _POOL_ID_RE.match(pool_id):
            raise JobFileError(
                f"must be an existing Batch pool id (1 to 64 letters, digits, hyphens or "
                f"underscores); got {_describe(pool_id)}", field="pool.id")
        return ExistingPool(pool_id)
    vm_size = obj.get("vm_size")
    if vm_size is not None:
        vm_size = _non_empty_string(vm_size, "pool.vm_size", 'a VM size such as "standard_d2s_v3"')
        if any(ch.isspace() for ch in vm_size):
            raise JobFileError(f"{vm_size!r} contains spaces; a VM size looks like "
                               f"\"standard_d2s_v3\"", field="pool.vm_size")
    return PoolSpec(
        vm_size=vm_size,
        max_nodes=_int(obj.get("max_nodes"), "pool.max_nodes", 1, None, None),
        spot=_bool(obj.get("spot"), "pool.spot", False),
        slots_per_node=_int(obj.get("slots_per_node"), "pool.slots_per_node", 1, 256, None),
    )

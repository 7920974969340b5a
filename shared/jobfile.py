"""The job file: its model, its validation, and the names derived from it.

`parse_job_file` turns the bytes a user dropped into `intake` into a `JobSpec`,
or raises `JobFileError` naming the offending field (dotted path such as
"pool.max_nodes" or "resources[1].blob") with a message that says what is
wrong and how to fix it. The contract is docs/jobfile.md; choices the
contract leaves open are documented on the functions below.

The job file is untrusted input: for any bytes, parsing either returns a spec or
raises JobFileError, in time and memory bounded by the file's size (at most
`max_bytes`). Nesting deeper than MAX_DEPTH, whole numbers of more than
MAX_INT_DIGITS digits, NaN/Infinity, lone surrogates and NUL are refused before
any field is looked at; which containers a job file may read is `ReadPolicy`'s.
"""
from __future__ import annotations

import difflib
import json
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from shared import gpus, merge, paramsweep, split
from shared.errors import JobFileError

# Run ids and names are naming's; re-exported here for the callers that know them from jobfile.
from shared.naming import (  # noqa: F401
    NAME_MAX_CHARS,
    RUN_ID_CANDIDATES,
    RUN_ID_HEX_DIGITS,
    default_name,
    is_run_id,
    run_id,
    run_id_candidates,
    sanitise_name,
)

if TYPE_CHECKING:
    from shared.settings import Settings

MAX_JOB_FILE_BYTES = 1_048_576
INPUT_FORMATS = split.FORMATS
MERGE_KINDS = (*merge.STREAMED_KINDS, "none", "command")
FAILURE_POLICIES = ("fail", "partial")
DEFAULT_RETRIES = 3
DEFAULT_TASK_TIMEOUT_MINUTES = 60
# Nesting of objects and lists, counted from the top-level object (which is depth 1). json and
# every tree walk recurse, so depth is checked on the text first; 64 is far beyond any real job.
MAX_DEPTH = 64
# Python refuses to convert longer digit strings (int_max_str_digits), and no JSON reader
# keeps such a number exactly anyway.
MAX_INT_DIGITS = 4300

TOP_LEVEL_FIELDS = (
    "name", "command", "image", "input", "items_per_task", "tasks", "config",
    "resources", "merge", "on_task_failure", "retries", "task_timeout_minutes", "pool",
)

# Every pattern below is used with fullmatch: "$" would let a trailing newline through.
# Azure Storage container names: 3-63 chars of a-z, 0-9 and single hyphens, starting
# and ending with a letter or digit.
_CONTAINER_RE = re.compile(r"[a-z0-9](?:-?[a-z0-9])+")
_BLOB_PATH_MAX = 1024
# Batch pool ids: letters, digits, hyphens and underscores, at most 64 characters.
_POOL_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Azure VM sizes: "Standard_D2s_v3", "standard_nc6s_v3", "Standard_E4-2s_v3" (constrained vCPU
# sizes carry a hyphen); the name starts with a letter, at most 64 characters.
_VM_SIZE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_EXTENSION_RE = re.compile(r"[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*")
# Image references, after the OCI distribution spec's reference grammar
# (github.com/distribution/reference): [host[:port]/]path[:tag][@digest]. The first
# component is a host only if the path follows it; path components are lowercase.
_IMAGE_MAX = 255
_IMAGE_DOMAIN = (r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                 r"|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    rf"(?:{_IMAGE_DOMAIN}/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators: never part of a
# name, path or identifier, and they hide in logs and portals.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# NUL (Batch answers InternalError, C tools cut the string) and lone surrogates (no UTF-8 form,
# so the spec could not be written back): refused in every string of the file, keys too.
_UNWRITABLE_RE = re.compile("[\x00\ud800-\udfff]")
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
    def parse(cls, text: Any, field: str, *, allow_empty_path: bool = False) -> BlobRef:
        """Parse "<container>/<path>"; raise JobFileError(field=field) unless valid.

        `allow_empty_path` admits "<container>/" and "<container>" (a whole container,
        for prefixes). Guarantee: the container is a valid container name and the path
        is used exactly as written (see `_check_blob_path`), so the blob that is checked
        and signed is the blob that is read.
        """
        example = '"data/big.jsonl"'
        if not isinstance(text, str) or not text.strip():
            raise JobFileError(
                f"must be a blob reference written as a string \"<container>/<path>\", "
                f"e.g. {example}; got {_describe(text)}", field=field)
        if text != text.strip():
            raise JobFileError(
                f"{_excerpt(text)} starts or ends with whitespace; remove it, e.g. {example}",
                field=field)
        if text.startswith("/"):
            raise JobFileError(
                f"{_excerpt(text)} starts with '/'; write it as \"<container>/<path>\" without a "
                f"leading slash, e.g. {example}", field=field)
        container, slash, path = text.partition("/")
        if not slash and not allow_empty_path:
            raise JobFileError(
                f"{_excerpt(text)} has no path; write it as \"<container>/<path>\", e.g. {example}",
                field=field)
        if not valid_container_name(container):
            raise JobFileError(
                f"{_excerpt(container)} is not a valid container name: use 3 to 63 lowercase letters, "
                f"digits and single hyphens, starting and ending with a letter or digit "
                f"(e.g. \"data\")", field=field)
        if not path and not allow_empty_path:
            raise JobFileError(
                f"{_excerpt(text)} names a container but no blob; add the blob's path after the "
                f"'/', e.g. {example}", field=field)
        if len(path) > _BLOB_PATH_MAX:
            raise JobFileError(
                f"the blob path is {len(path)} characters long; Azure allows at most "
                f"{_BLOB_PATH_MAX}", field=field)
        _check_blob_path(text, path, field)
        return cls(container, path)

    def __str__(self) -> str:
        return f"{self.container}/{self.path}"


def valid_container_name(name: str) -> bool:
    """Whether `name` is a valid Azure Storage container name (3-63 of a-z, 0-9, single '-')."""
    return 3 <= len(name) <= 63 and _CONTAINER_RE.fullmatch(name) is not None


def _check_blob_path(text: str, path: str, field: str) -> None:
    """Refuse what would make the blob read differ from the blob named (and checked).

    HTTP clients fold "." and ".." segments and decode "%2f"; some tools turn "\\" into
    "/"; an empty segment ("a//b") or a control character is never meant. A trailing "/"
    (a folder, for a prefix) is allowed; the callers decide whether a folder fits.
    """
    how = "write the path exactly as the blob is named, e.g. \"data/folder/file.jsonl\""
    match = _CONTROL_RE.search(path)
    if match:
        raise JobFileError(f"{_excerpt(text)} contains the control character {match.group()!r}; {how}",
                           field=field)
    if "\\" in path:
        raise JobFileError(f"{_excerpt(text)} contains a backslash; folders are separated by '/': {how}",
                           field=field)
    if "%" in path:
        raise JobFileError(f"{_excerpt(text)} contains '%'; percent-encoding (such as %2f) is not "
                           f"decoded here, so {how}", field=field)
    segments = path.split("/")
    if segments[-1] == "":
        segments.pop()  # "folder/": a trailing slash, not an empty segment
    for segment in segments:
        if segment in (".", ".."):
            raise JobFileError(f"{_excerpt(text)} has a {segment!r} segment, which clients fold away "
                               f"(so another blob would be read); {how}", field=field)
        if segment == "":
            raise JobFileError(f"{_excerpt(text)} has an empty folder name ('//'); {how}", field=field)


@dataclass(frozen=True)
class ItemsInput:
    """Inline JSON values, or the combinations of a parameter sweep (a `paramsweep.Sweep`: a lazy
    sequence, counted arithmetically and generated in order); each task's input is a JSONL file
    of its items."""

    items: Sequence[Any]


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


InputSpec = ItemsInput | BlobInput | PrefixInput


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
    # spot pools only: add dedicated nodes when spot nodes do not come or are preempted (shared.batch)
    spot_fallback: bool = False


@dataclass(frozen=True)
class ExistingPool:
    """A long-lived pool the user manages; the run never resizes or deletes it."""

    id: str


ConfigSpec = dict | BlobRef | None


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


# ---------------------------------------------------------------- what a job file may read

@dataclass(frozen=True)
class ReadPolicy:
    """Which containers a job file may read: DATA_CONTAINER and INPUT_CONTAINERS, never the pipeline's own.

    Task SAS tokens are signed by the pipeline, so without this a job file could have any
    blob of the account copied into a run's inputs: job files of others (intake), results,
    run records (control), other runs' work containers, the Functions host's secrets.
    `forbidden` and `forbidden_prefixes` win over `allowed`, whatever the settings say.
    """

    allowed: frozenset[str]
    forbidden: frozenset[str]          # intake, results, control container (exact names)
    forbidden_prefixes: tuple[str, ...]  # f"{work_prefix}-", "azure-webjobs-", "$"

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadPolicy:
        return cls(
            allowed=frozenset((settings.data_container, *settings.input_containers)),
            forbidden=frozenset((settings.intake_container, settings.results_container,
                                 settings.control_container)),
            forbidden_prefixes=(f"{settings.work_prefix}-", "azure-webjobs-", "$"),
        )

    def readable(self, container: str) -> bool:
        """Whether a job file may read blobs of `container`."""
        return (container in self.allowed and container not in self.forbidden
                and not container.startswith(self.forbidden_prefixes))

    def check(self, ref: BlobRef, field: str) -> None:
        """Raise JobFileError(field=field), saying which containers are readable, unless
        `ref` is in one of them."""
        if self.readable(ref.container):
            return
        readable = sorted(c for c in self.allowed if self.readable(c))
        if not readable:
            where = ("no container is readable by job files in this deployment; ask its "
                     "administrator to set DATA_CONTAINER or INPUT_CONTAINERS")
        else:
            listed = " or ".join(repr(c) for c in readable)
            where = f"put inputs in {listed} (or a container listed in the INPUT_CONTAINERS setting)"
        raise JobFileError(f"container {ref.container!r} is not readable by a job file; {where}",
                           field=field)


def check_readable(spec: JobSpec, policy: ReadPolicy) -> None:
    """Raise JobFileError naming the first blob reference of `spec` (input.blob, input.prefix,
    config.blob, resources[i].blob, in that order) that `policy` does not allow."""
    if isinstance(spec.input, BlobInput):
        policy.check(spec.input.blob, "input.blob")
    elif isinstance(spec.input, PrefixInput):
        policy.check(spec.input.prefix, "input.prefix")
    if isinstance(spec.config, BlobRef):
        policy.check(spec.config, "config.blob")
    for i, resource in enumerate(spec.resources):
        policy.check(resource.blob, f"resources[{i}].blob")


# ---------------------------------------------------------------- parsing

@dataclass(frozen=True)
class CancelRequest:
    """`{"cancel": "<run id>"}` dropped into intake: stop that run and clean up after it (an
    addition to the contract; a file with "cancel" must hold nothing else)."""

    run_id: str


class _CancelSeen(Exception):
    def __init__(self, doc: dict) -> None:
        self.doc = doc


RERUN_OVERRIDES = ("command", "image", "retries", "task_timeout_minutes", "pool")


@dataclass(frozen=True)
class RerunRequest:
    """`{"rerun": "<run id>", ...}` dropped into intake: a new run of that run's job that runs only
    the tasks that did not succeed and reuses the outputs of those that did (shared.rerun).
    `overrides` replace the job file's fields of the same names (RERUN_OVERRIDES); they are
    checked as the job file's own when the job is planned again."""

    run_id: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


class _RerunSeen(Exception):
    def __init__(self, doc: dict) -> None:
        self.doc = doc


def parse_intake_file(raw: bytes, *, blob_name: str, max_bytes: int = MAX_JOB_FILE_BYTES,
                      policy: ReadPolicy | None = None) -> JobSpec | CancelRequest | RerunRequest:
    """A file dropped into intake: a job file (see parse_job_file), a cancel or a rerun request.

    Total: for any bytes, returns a JobSpec, CancelRequest or RerunRequest, or raises JobFileError.
    """
    try:
        return _parse_document(raw, blob_name=blob_name, max_bytes=max_bytes, policy=policy)
    except _RerunSeen as seen:
        return _rerun_request(seen.doc)
    except _CancelSeen as seen:
        extra = sorted(set(seen.doc) - {"cancel"})
        if extra:
            raise JobFileError(f"a cancel request holds only \"cancel\"; remove "
                               f"{', '.join(_excerpt(k) for k in extra[:5])}",
                               field=_segment(extra[0])) from None
        run = seen.doc["cancel"]
        if not isinstance(run, str) or not is_run_id(run):
            raise JobFileError(f"must be the id of a run, like \"heavylift-nov-3f2a9c1e5b7d9f01\" (the "
                               f"folder name under results/), got {_describe(run)}", field="cancel") from None
        return CancelRequest(run)


def parse_job_file(raw: bytes, *, blob_name: str, max_bytes: int = MAX_JOB_FILE_BYTES,
                   policy: ReadPolicy | None = None) -> JobSpec:
    """Validate a job file and return its model.

    Guarantee: total. For any bytes, returns only a JobSpec every field of which is
    usable as documented in docs/jobfile.md, or raises JobFileError whose `field` is the
    dotted path of the first problem found (such as "input.items[17]"); `field` is None
    only for problems with the file as a whole (too big, not UTF-8, not JSON, with line
    and column, not an object, nested too deep), whose message says what to fix. No other
    exception escapes, and time and memory are bounded by the file's size.

    With `policy`, every blob the spec reads must also be in a container the policy
    allows (see check_readable).

    Beyond the contract: a UTF-8 BOM is tolerated; JSON `null` for an optional field
    means "not given"; a key repeated within one object is an error (the first value
    would be lost silently); NaN/Infinity, numbers too large for a double and whole
    numbers of more than MAX_INT_DIGITS digits are errors, as are nesting deeper than
    MAX_DEPTH, NUL and lone surrogates in any string (keys too); whole-number floats
    such as 10.0 are accepted where an integer is expected.
    """
    try:
        return _parse_document(raw, blob_name=blob_name, max_bytes=max_bytes, policy=policy)
    except _CancelSeen:
        raise JobFileError("this is a cancel request, not a job file", field="cancel") from None
    except _RerunSeen:
        raise JobFileError("this is a rerun request, not a job file", field="rerun") from None


def _rerun_request(doc: dict) -> RerunRequest:
    extra = sorted(set(doc) - {"rerun", *RERUN_OVERRIDES})
    if extra:
        raise JobFileError(f"a rerun request holds \"rerun\" and, to change them, only "
                           f"{', '.join(repr(k) for k in RERUN_OVERRIDES)}; remove "
                           f"{', '.join(_excerpt(k) for k in extra[:5])}", field=_segment(extra[0]))
    run = doc["rerun"]
    if not isinstance(run, str) or not is_run_id(run):
        raise JobFileError(f"must be the id of a run, like \"heavylift-nov-3f2a9c1e5b7d9f01\" (the folder name "
                           f"under results/), got {_describe(run)}", field="rerun")
    return RerunRequest(run, {k: doc[k] for k in RERUN_OVERRIDES if k in doc})


def _parse_document(raw: bytes, *, blob_name: str, max_bytes: int, policy: ReadPolicy | None) -> JobSpec:
    doc = _load_json(raw, max_bytes)
    if not isinstance(doc, dict):
        raise JobFileError(
            f"the job file must be a JSON object ({{\"command\": ..., \"input\": ...}}), "
            f"but it is {_describe(doc)}")
    _check_values(doc)
    if "cancel" in doc:
        raise _CancelSeen(doc)  # a cancel request, not a job: see parse_intake_file
    if "rerun" in doc:
        raise _RerunSeen(doc)  # a rerun request, not a job: see parse_intake_file
    spec = _parse_spec(doc, blob_name)
    if policy is not None:
        check_readable(spec, policy)
    return spec


def _parse_spec(doc: dict, blob_name: str) -> JobSpec:
    _check_keys(doc, TOP_LEVEL_FIELDS, "")
    name_value = doc.get("name")
    if name_value is not None and not isinstance(name_value, str):
        raise JobFileError(f"must be a string, got {_describe(name_value)}", field="name")
    _reject_control(name_value, "name", "a run name such as \"heavylift-nov\"")
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
        repeated: list[str] = []
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        obj.duplicates = tuple(repeated)
    return obj


class _BadNumber:
    """Stands in for a number JSON readers cannot keep (NaN, Infinity, 1e400, 5000 digits), so
    that the tree walk, which knows the path, reports it."""

    __slots__ = ("reason", "text")

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason


_NOT_JSON = ("is not a JSON number (NaN and Infinity are not JSON); write a number, or the "
             "word as a string")


def _float(text: str) -> float | _BadNumber:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return _BadNumber(text, "is too large for a double-precision number (JSON readers would "
                                "read Infinity); use a smaller number or a string")
    return value


def _whole(text: str) -> int | _BadNumber:
    digits = len(text.lstrip("-"))
    if digits <= MAX_INT_DIGITS:
        try:
            return int(text)
        except ValueError:  # a lower int_max_str_digits set by the host process
            pass
    return _BadNumber(text, f"is too long ({digits:,} digits): a whole number may have at most "
                            f"{MAX_INT_DIGITS:,} digits; use a string or a shorter number")


def _constant(text: str) -> _BadNumber:
    return _BadNumber(text, _NOT_JSON)


def too_large(size: int, max_bytes: int) -> JobFileError | None:
    """The rejection of a job file of `size` bytes, or None when it is within the limit (one
    message whether intake sees the blob's size or the parser the bytes)."""
    if size <= max_bytes:
        return None
    return JobFileError(
        f"the job file is {size:,} bytes, over the limit of {max_bytes:,}; keep large "
        f"data out of it: upload it to a blob and point to it with "
        f"\"input\": {{\"blob\": \"<container>/<path>\"}}")


def _load_json(raw: bytes, max_bytes: int) -> Any:
    error = too_large(len(raw), max_bytes)
    if error is not None:
        raise error
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise JobFileError("the job file is saved as UTF-16; save it as UTF-8")
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + len(raw) - len(body)
        line = raw.count(b"\n", 0, offset) + 1
        raise JobFileError(
            f"the job file is not valid UTF-8 text (byte 0x{raw[offset]:02x} at line {line}, "
            f"byte offset {offset}); save it as UTF-8") from None
    if not text.strip():
        raise JobFileError("the job file is empty; it must be a JSON object such as "
                           "{\"command\": \"...\", \"input\": {...}}")
    _check_depth(text)
    try:
        return json.loads(text, object_pairs_hook=_object_pairs,
                          parse_float=_float, parse_int=_whole, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise JobFileError(
            f"the job file is not valid JSON: {e.msg.removesuffix(' at')} at line {e.lineno}, "
            f"column {e.colno}. "
            f"Look for a missing or extra comma, quote or bracket there") from None


_ESCAPE_RE = re.compile(r"\\.", re.DOTALL)
_STRING_RE = re.compile(r'"[^"]*"')  # once escapes are gone, a string holds no '"'
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_AS_PARENS = str.maketrans("[{]}", "(())")
_STRUCTURE_RE = re.compile(r'[\[\]{}"]')
# The rest of a JSON string after its opening quote; unrolled so that it never backtracks.
_STRING_REST_RE = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, naming line and column, before json (which
    recurses) reads the text. Linear in the text's length, without recursion."""
    if text.count("[") + text.count("{") <= MAX_DEPTH or _nesting_bound(text) <= MAX_DEPTH:
        return  # (nearly) every file: decided by a few passes at C speed
    _locate_too_deep(text)


def _nesting_bound(text: str) -> int:
    """An upper bound of how deep json would nest reading `text` (exact for valid JSON), or
    more than MAX_DEPTH: at most MAX_DEPTH + 1 passes of str methods over the brackets."""
    bare = _STRING_RE.sub("", _ESCAPE_RE.sub("", text))
    quote = bare.find('"')
    if quote >= 0:
        bare = bare[:quote]  # an unterminated string: json stops there
    parens = _NOT_BRACKET_RE.sub("", bare).translate(_AS_PARENS)
    depth = 0
    while "()" in parens and depth <= MAX_DEPTH:
        parens = parens.replace("()", "")  # each pass removes one level of nesting
        depth += 1
    return depth + parens.count("(")  # what is left is ")...)(...(": unclosed openers


def _locate_too_deep(text: str) -> None:
    """Raise naming the line and column where nesting first goes deeper than MAX_DEPTH, if it
    does before json would stop: one pass over the brackets outside strings."""
    closers: list[str] = []  # what closes each open bracket; never longer than MAX_DEPTH
    pos = 0
    while (found := _STRUCTURE_RE.search(text, pos)) is not None:
        char, pos = found.group(), found.end()
        if char == '"':
            rest = _STRING_REST_RE.match(text, pos)
            if rest is None:
                return  # an unterminated string: json names its line and column
            pos = rest.end()
        elif char in "[{":
            closers.append("]" if char == "[" else "}")
            if len(closers) > MAX_DEPTH:
                line = text.count("\n", 0, found.start()) + 1
                column = found.start() - text.rfind("\n", 0, found.start())
                raise JobFileError(
                    f"the job file nests objects and lists more than {MAX_DEPTH} levels deep "
                    f"(at line {line}, column {column}); flatten it, or put deep data in a "
                    f"blob and point to it with \"config\": {{\"blob\": \"<container>/<path>\"}}")
        elif not closers or closers.pop() != char:
            return  # a closing bracket too many, or the wrong one: json stops there


def _check_values(doc: Any) -> None:
    """Walk every value of the document (keys too) in document order, without recursion, and
    refuse the first repeated key, unusable number, NUL or lone surrogate, naming its path.

    Linear: a path is spelled out only for the value refused.
    """
    _check_value(doc, "")
    if not isinstance(doc, (dict, list)):
        return
    # one frame per open container: (the step into it, is it an object, its entries left)
    frames: list[tuple[Any, bool, Iterator[tuple[Any, Any]]]] = [(None, *_entries(doc))]
    while frames:
        _, is_object, entries = frames[-1]
        for step, item in entries:
            if is_object and _UNWRITABLE_RE.search(step):
                _refuse_unwritable(step, _frames_path(frames, step), is_key=True)
            kind = type(item)
            if kind is int or kind is float or kind is bool or item is None:
                continue  # the bulk of a big file: nothing to check
            if kind is str and not _UNWRITABLE_RE.search(item):
                continue
            if kind is _DupDict or kind is list:
                if getattr(item, "duplicates", None):
                    _check_value(item, _frames_path(frames, step))  # a repeated key: raises
                frames.append((step, *_entries(item)))
                break  # depth first, so the first problem in document order is the one named
            _check_value(item, _frames_path(frames, step))  # a bad string or number: raises
        else:
            frames.pop()


def _entries(value: dict | list) -> tuple[bool, Iterator[tuple[Any, Any]]]:
    return (True, iter(value.items())) if isinstance(value, dict) else (False, enumerate(value))


def _frames_path(frames: list[tuple[Any, bool, Any]], last: Any) -> str:
    """The field path of step `last` inside the innermost frame."""
    path = ""
    for (_, in_object, _), (step, _, _) in zip(frames, [*frames[1:], (last, False, None)], strict=True):
        path = _join(path, _segment(step)) if in_object else f"{path}[{step}]"
    return path


def _check_value(value: Any, path: str) -> None:
    """Refuse, naming `path`, an object with a repeated key, a lone surrogate or NUL in a
    string, or a number JSON readers cannot keep."""
    repeated = getattr(value, "duplicates", ())
    if repeated:
        raise JobFileError(f"the field {_excerpt(repeated[0])} appears more than once in the same "
                           f"object; keep only one", field=_join(path, _segment(repeated[0])))
    if isinstance(value, str) and _UNWRITABLE_RE.search(value):
        _refuse_unwritable(value, path)
    if isinstance(value, _BadNumber):
        raise JobFileError(f"{_excerpt(value.text)} {value.reason}", field=path)


def _refuse_unwritable(text: str, path: str, *, is_key: bool = False) -> None:
    match = _UNWRITABLE_RE.search(text)
    if match is None:
        return
    what = "NUL character (\\u0000)" if match.group() == "\0" else \
        f"lone surrogate ({ascii(match.group())[1:-1]}, half of a UTF-16 pair)"
    subject = f"the field name {_excerpt(text)} contains" if is_key else "contains"
    raise JobFileError(f"{subject} a {what} at character {match.start() + 1}, which cannot be "
                       f"passed on as UTF-8 text; remove it", field=path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _segment(key: str) -> str:
    """A key as a field-path segment: printable (escaped otherwise) and at most 64 characters."""
    shown = key if key.isprintable() else ascii(key)[1:-1]
    return shown if len(shown) <= 64 else shown[:61] + "..."


def _excerpt(text: str, limit: int = 60) -> str:
    """`text` quoted for a message (control characters escaped), cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def _reject_control(value: Any, field: str, what: str) -> None:
    """Refuse control characters in an identifier-like string (they are never meant there)."""
    if isinstance(value, str) and (match := _CONTROL_RE.search(value)):
        raise JobFileError(f"contains the control character {match.group()!r} at character "
                           f"{match.start() + 1}; it must be {what}, on one line",
                           field=field)


def _check_keys(obj: dict, allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise JobFileError(_unknown_message(key, allowed, path), field=_join(path, _segment(key)))


# Fields of nested objects that people put at the top level by mistake.
_NESTED_HOME = {"items": "input", "sweep": "input", "blob": "input", "prefix": "input", "format": "input",
                "vm_size": "pool", "max_nodes": "pool", "spot": "pool", "slots_per_node": "pool",
                "spot_fallback": "pool"}


def _unknown_message(key: str, allowed: tuple[str, ...], path: str) -> str:
    if not path and key in _NESTED_HOME:
        home = _NESTED_HOME[key]
        return (f"unknown field {key!r} at the top level; it belongs inside {home!r}, "
                f"e.g. \"{home}\": {{\"{key}\": ...}}")
    hint = _suggest(key, allowed)
    if hint:
        return f"unknown field {_excerpt(key)}; did you mean {hint!r}?"
    where = f"in {path!r}" if path else "at the top level"
    return f"unknown field {_excerpt(key)} {where}; the known fields are: {', '.join(allowed)}"


def _suggest(word: str, choices: tuple[str, ...]) -> str | None:
    """The closest choice when `word` looks like a typo of it (case-insensitive)."""
    if len(word) > 64:
        return None  # no typo of a short name; and difflib is quadratic
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _describe(value: Any) -> str:
    """Name a JSON value's type for a person, with a short excerpt of it."""
    if value is None:
        return "null"
    if isinstance(value, _BadNumber):
        return f"the number {_excerpt(value.text)}"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (true/false)"
    if isinstance(value, (int, float)):
        return f"{_excerpt(repr(value))[1:-1]} (a number)"
    if isinstance(value, str):
        return f"{_excerpt(value, 40)} (a string)"
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


_IMAGE_EXAMPLE = ('an image reference such as "myregistry.azurecr.io/app:1.4" or "python:3.11-slim": '
                  'an optional registry host[:port]/, a lowercase path of letters and digits separated '
                  'by ".", "_", "__" or "-", an optional ":tag" and an optional "@sha256:<digest>"')


def _image(value: Any, field: str) -> str | None:
    """A container image reference per the OCI distribution reference grammar, at most
    255 characters."""
    if value is None:
        return None
    image = _non_empty_string(value, field, 'a container image such as '
                                            '"myregistry.azurecr.io/app:1.4"')
    if image != image.strip() or any(ch.isspace() for ch in image):
        raise JobFileError(f"{_excerpt(image)} contains spaces or line breaks; it must be {_IMAGE_EXAMPLE}",
                           field=field)
    if len(image) > _IMAGE_MAX:
        raise JobFileError(f"is {len(image)} characters long; an image reference such as "
                           f"\"myregistry.azurecr.io/app:1.4\" has at most {_IMAGE_MAX}", field=field)
    if not _IMAGE_RE.fullmatch(image):
        raise JobFileError(f"{_excerpt(image)} is not a valid image reference; it must be {_IMAGE_EXAMPLE}",
                           field=field)
    return image


@overload
def _int(value: Any, field: str, low: int, high: int | None, default: int) -> int: ...


@overload
def _int(value: Any, field: str, low: int, high: int | None, default: None) -> int | None: ...


def _int(value: Any, field: str, low: int, high: int | None, default: int | None) -> int | None:
    if value is None:
        return default
    bound = f"from {low} to {high}" if high is not None else f"of {low} or more"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobFileError(f"must be a whole number {bound}; got {_describe(value)}", field=field)
    if value < low or (high is not None and value > high):
        raise JobFileError(f"must be a whole number {bound}; got {_excerpt(str(value))[1:-1]}",
                           field=field)
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
    forms = ("items", "sweep", "blob", "prefix")
    _check_keys(obj, (*forms, "format"), "input")
    given = [f for f in forms if obj.get(f) is not None]
    if len(given) != 1:
        found = f"it has {' and '.join(repr(g) for g in given)}" if given else "it has none"
        raise JobFileError(
            f"must have exactly one of \"items\" (inline values), \"sweep\" (combinations of "
            f"parameter values), \"blob\" (one blob to split) or \"prefix\" (already-split "
            f"blobs); {found}", field="input")
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
    if form == "sweep":
        return ItemsInput(paramsweep.parse(obj["sweep"], "input.sweep"))
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
        ref = BlobRef.parse(obj["blob"], "config.blob")
        if ref.path.endswith("/"):
            raise JobFileError(f"{str(ref)!r} names a folder; point to the config file itself, e.g. "
                               f"\"data/config.json\"", field="config.blob")
        return ref
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
    if not isinstance(ext, str) or len(ext) > _EXTENSION_MAX or not _EXTENSION_RE.fullmatch(ext):
        raise JobFileError(
            f"must be a file extension of letters and digits such as \"parquet\" or "
            f"\"tar.gz\"; got {_describe(value)}", field=field)
    return ext


_POOL_VM_FIELDS = ("vm_size", "max_nodes", "spot", "spot_fallback", "slots_per_node")


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
        if not isinstance(pool_id, str) or not _POOL_ID_RE.fullmatch(pool_id):
            raise JobFileError(
                f"must be an existing Batch pool id (1 to 64 letters, digits, hyphens or "
                f"underscores); got {_describe(pool_id)}", field="pool.id")
        return ExistingPool(pool_id)
    vm_size = obj.get("vm_size")
    if vm_size is not None:
        vm_size = _non_empty_string(vm_size, "pool.vm_size", 'a VM size such as "standard_d2s_v3"')
        if any(ch.isspace() for ch in vm_size):
            raise JobFileError(f"{_excerpt(vm_size)} contains spaces; a VM size looks like "
                               f"\"standard_d2s_v3\"", field="pool.vm_size")
        if not _VM_SIZE_RE.fullmatch(vm_size):
            raise JobFileError(f"{_excerpt(vm_size)} is not an Azure VM size: use the size's name, 1 to "
                               f"64 letters, digits, underscores or hyphens starting with a letter, "
                               f"such as \"standard_d2s_v3\" or \"Standard_NC6s_v3\"", field="pool.vm_size")
        try:
            gpus.gpu_count(vm_size)
        except gpus.UnknownGpuSize as e:
            raise JobFileError(str(e), field="pool.vm_size") from None
    spot = _bool(obj.get("spot"), "pool.spot", False)
    if obj.get("spot_fallback") is not None and not spot:
        raise JobFileError("applies to spot pools only: set \"spot\": true as well, or remove it",
                           field="pool.spot_fallback")
    return PoolSpec(
        vm_size=vm_size,
        max_nodes=_int(obj.get("max_nodes"), "pool.max_nodes", 1, None, None),
        spot=spot,
        slots_per_node=_int(obj.get("slots_per_node"), "pool.slots_per_node", 1, 256, None),
        spot_fallback=_bool(obj.get("spot_fallback"), "pool.spot_fallback", True) if spot else False,
    )

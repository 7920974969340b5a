"""The output manifest: what a task left in OUTPUT_DIR, recorded on the node after its command
exited 0, so that an output lost or cut short on the way to the merge is told apart from one the
task never wrote.

Format (UTF-8 text, every line ends in "\\n"):

    batchdrop-manifest 1
    <size in bytes> <SHA-256, 64 lowercase hex digits, or "-"> <path relative to OUTPUT_DIR>

one line per regular file, sorted by path (byte order); no file lines means the task wrote nothing.
"-" says the node had no sha256sum (the size is still checked). A path may hold spaces; a name with
a newline makes the task fail instead (a line per file could not record it). Names starting with
"." (files or folders) are left out, as Batch's upload pattern leaves them out; so are symbolic
links. `wrapper_tail` writes it (POSIX sh on the node); the rest of this module reads and checks it,
pure and without I/O.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from shared.errors import BatchdropError

HEADER = "batchdrop-manifest 1"
NO_HASH = "-"
MAX_MANIFEST_BYTES = 32 * 1024 * 1024  # some 200,000 files: far more than a task should leave
MAX_PATH_CHARS = 1024  # a blob name's limit

_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")  # no sign, no leading zeros: one spelling per size
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PLAIN_FILE = re.compile(r"[A-Za-z0-9._-]+")


class ManifestError(BatchdropError):
    """A manifest that cannot be trusted: not in the format above."""


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative to OUTPUT_DIR, "/"-separated
    size: int
    sha256: str | None  # None: not recorded ("-")


class OutputMismatch(BatchdropError):
    """A task output's bytes differ from what its task recorded (`found.sha256` is None when the
    manifest has no hash to compare with)."""

    def __init__(self, task: str, expected: ManifestEntry, found: ManifestEntry) -> None:
        self.task, self.path, self.expected, self.found = task, expected.path, expected, found
        if expected.size != found.size:
            what = f"is {found.size} bytes, its task wrote {expected.size}"
        else:
            what = f"has SHA-256 {found.sha256}, its task wrote {expected.sha256}"
        super().__init__(f"task {task}: output {expected.path!r} {what}")


@dataclass(frozen=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]
    _by_path: dict[str, ManifestEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_path", {e.path: e for e in self.entries})

    def get(self, path: str) -> ManifestEntry | None:
        return self._by_path.get(path)

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    def __len__(self) -> int:
        return len(self.entries)


def parse(data: bytes) -> Manifest:
    """The manifest in `data`; ManifestError, naming the line, for anything not in the format
    (including entries out of order: a sign of an edited or spliced file)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(data)} bytes, over the limit of {MAX_MANIFEST_BYTES}")
    if not data.endswith(b"\n"):
        raise ManifestError("manifest does not end with a line break (empty or cut short)")
    lines = data[:-1].split(b"\n")  # "\n" only: "\r" and the like are legal in file names
    if lines[0] != HEADER.encode():
        raise ManifestError(f"manifest does not start with {HEADER!r}: {lines[0][:40]!r}")
    entries: list[ManifestEntry] = []
    for number, raw in enumerate(lines[1:], start=2):
        entry = _entry(number, raw)
        if entries and entry.path <= entries[-1].path:  # str order of UTF-8 text is its byte order
            what = "is listed twice" if entry.path == entries[-1].path else "is out of order"
            raise ManifestError(f"manifest line {number}: {entry.path!r} {what}")
        entries.append(entry)
    return Manifest(tuple(entries))


def _entry(number: int, raw: bytes) -> ManifestEntry:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"manifest line {number}: not UTF-8 text") from None
    size, _, rest = line.partition(" ")
    sha256, _, path = rest.partition(" ")
    if not _SIZE.fullmatch(size):
        raise ManifestError(f"manifest line {number}: bad size {size[:30]!r}")
    if sha256 != NO_HASH and not _SHA256.fullmatch(sha256):
        raise ManifestError(f"manifest line {number}: bad SHA-256 {sha256[:70]!r}")
    if problem := _path_problem(path):
        raise ManifestError(f"manifest line {number}: path {path[:80]!r} {problem}")
    return ManifestEntry(path, int(size), None if sha256 == NO_HASH else sha256)


def _path_problem(path: str) -> str | None:
    """Why `path` cannot name a file under OUTPUT_DIR (None when it can)."""
    if not path:
        return "is empty"
    if len(path) > MAX_PATH_CHARS:
        return f"is over {MAX_PATH_CHARS} characters"
    if path.startswith("/"):
        return "is absolute"
    if "\0" in path:
        return "holds a NUL"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "has an empty, '.' or '..' segment"
    return None


# ---------------------------------------------------------------- checks


@dataclass(frozen=True)
class Missing:
    path: str
    expected: int  # bytes

    def __str__(self) -> str:
        return f"{self.path!r} ({self.expected} bytes) was written but is not in storage"


@dataclass(frozen=True)
class SizeDiffers:
    path: str
    expected: int
    found: int

    def __str__(self) -> str:
        return f"{self.path!r} is {self.found} bytes in storage, {self.expected} were written"


Problem: TypeAlias = Missing | SizeDiffers


def check_listing(manifest: Manifest, listed: Mapping[str, int]) -> list[Problem]:
    """What the blobs under a task's output prefix (`listed`: path relative to the prefix -> size)
    lack against its manifest, in manifest order; empty when every recorded file is there with its
    size. Blobs the manifest does not name are not its concern."""
    problems: list[Problem] = []
    for entry in manifest.entries:
        found = listed.get(entry.path)
        if found is None:
            problems.append(Missing(entry.path, entry.size))
        elif found != entry.size:
            problems.append(SizeDiffers(entry.path, entry.size, found))
    return problems


def verify_stream(chunks: Iterable[bytes], entry: ManifestEntry, task: str) -> Iterator[bytes]:
    """`chunks` passed through unchanged; after the last one, OutputMismatch when their size or
    SHA-256 (when recorded) differs from `entry`. Only a stream read to its end is checked, so a
    merge that commits after reading everything never commits a mismatched output."""
    digest = hashlib.sha256() if entry.sha256 is not None else None
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if digest is not None:
            digest.update(chunk)
        yield chunk
    found = ManifestEntry(entry.path, size, digest.hexdigest() if digest is not None else None)
    if found != entry:
        raise OutputMismatch(task, entry, found)


# ---------------------------------------------------------------- the writer, on the node


def wrapper_tail(manifest_file: str) -> list[str]:
    """POSIX sh commands that end a task's wrapper, once it has set `wd` and OUTPUT_DIR: run
    "$BATCHDROP_COMMAND" and exit with its exit status, exactly; only after a 0, write the manifest
    of OUTPUT_DIR to "$wd/<manifest_file>" and exit 0 (or exit 1, saying why on stderr, when it
    cannot: a name with a newline, an unreadable file).

    The command runs as a child (the wrapper has work left after it), so a TERM, INT or HUP sent to
    the wrapper alone (Batch's terminate, `docker stop` of a container whose PID 1 it is) is passed
    on as TERM; a kill of the process group or container reaches the command directly. Needs only
    find, wc and sort; sha256sum when present (else "-")."""
    if not _PLAIN_FILE.fullmatch(manifest_file):
        raise ValueError(f"not a plain file name: {manifest_file!r}")
    shown = '-name ".*" -prune -o'  # no dot names: Batch's "output/**/*" leaves them out
    gone = 'for x in "$m" "$m.list"; do [ ! -e "$x" ] || rm -f "$x"; done'  # rm only when there is something
    return [
        f'm="$wd/{manifest_file}"', gone, "pid= stop=",
        # a signal before $! is known is remembered and passed on once it is
        """trap 'stop=1; [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null' HUP INT TERM""",
        '/bin/sh -c "$BATCHDROP_COMMAND" & pid=$!', '[ -z "$stop" ] || kill -TERM "$pid" 2>/dev/null',
        # a trapped signal ends `wait` early (status > 128): wait again while the command lives
        'wait "$pid"; rc=$?',
        'while [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done',
        "trap - HUP INT TERM", '[ "$rc" -eq 0 ] || exit "$rc"',
        f'bad() {{ echo "batchdrop: $1" >&2; {gone}; exit 1; }}',
        "h=; if command -v sha256sum >/dev/null 2>&1; then h=1; fi",
        # the common case without find, sort or a list file (some 5 ms of a task's 9): no OUTPUT_DIR, or
        # a real, readable folder holding nothing but dot names (q=0) or one regular file whose name is
        # printable, a line break is not (q=1); anything else (a link, no permission) takes find's path
        'q=; if [ ! -e "$OUTPUT_DIR" ] && [ ! -L "$OUTPUT_DIR" ]; then q=0; elif [ -d "$OUTPUT_DIR" ] && '
        '[ ! -L "$OUTPUT_DIR" ] && [ -r "$OUTPUT_DIR" ] && [ -x "$OUTPUT_DIR" ]; then set -- "$OUTPUT_DIR"/*; '
        'if [ "$#" -eq 1 ] && [ ! -e "$1" ] && [ ! -L "$1" ]; then q=0; '
        'elif [ "$#" -eq 1 ] && [ -f "$1" ] && [ ! -L "$1" ]; then '
        'case "$1" in *[![:print:]]*) ;; *) q=1;; esac; fi; fi',
        f'if [ "$q" = 0 ]; then echo "{HEADER}" > "$m" || bad "could not write the output manifest"; exit 0; fi',
        f'if [ "$q" = 1 ]; then s=$(wc -c < "$1") && d={NO_HASH} && {{ [ -z "$h" ] || d=$(sha256sum < "$1"); }} && '
        f'printf "%s\\n%s %s %s\\n" "{HEADER}" "$((s))" "${{d%% *}}" "${{1#"$OUTPUT_DIR"/}}" > "$m" '
        '|| bad "could not read a file in OUTPUT_DIR for the output manifest"; exit 0; fi',
        'nl=$(printf "\\n_"); nl=${nl%_}',
        # one find: a name holding a line break is not listed but marked by an empty line (no path is
        # empty), which sorts first
        f'if [ -d "$OUTPUT_DIR" ]; then find "$OUTPUT_DIR" {shown} -name "*$nl*" -exec echo \\; -prune -o '
        '-type f -print > "$m.list"; else : > "$m.list"; fi || bad "could not list OUTPUT_DIR for the output manifest"',
        'n=0; while [ "$n" -lt 2 ] && IFS= read -r f; do n=$((n + 1)); done < "$m.list"',
        # one line needs no sorting (the common case: one output file)
        '[ "$n" -lt 2 ] || LC_ALL=C sort -o "$m.list" "$m.list" || bad "could not sort the output manifest"',
        'IFS= read -r f < "$m.list"; if [ "$n" -gt 0 ] && [ -z "$f" ]; then '
        'bad "a name in OUTPUT_DIR holds a line break, which the output manifest cannot record; rename it"; fi',
        # a subshell, so that `exit 1` on a failed read ends only the listing
        f'( echo "{HEADER}"; while IFS= read -r f; do s=$(wc -c < "$f") || exit 1; d={NO_HASH}; '
        'if [ -n "$h" ]; then d=$(sha256sum < "$f") || exit 1; fi; '
        'printf "%s %s %s\\n" "$((s))" "${d%% *}" "${f#"$OUTPUT_DIR"/}"; done < "$m.list" ) > "$m" '
        '|| bad "could not read a file in OUTPUT_DIR for the output manifest"',
        'rm -f "$m.list"', "exit 0",
    ]

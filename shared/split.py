"""Streaming splitters: one input stream in, one shard (a task's input file) per task out.

Input is an iterable of byte chunks of any size, e.g. a blob download's
`chunks()`; output is an iterator of shard bytes, in task order. Memory stays
bounded by the largest shard plus one chunk: the input is never joined whole, and a
single record (line, CSV record, JSON element) over MAX_RECORD_BYTES (64 MiB) is a
JobFileError, since it almost always means the wrong format. An input with no
records yields no shards; the caller decides what an empty split means. Bad input
raises JobFileError(field="input.blob") with the byte offset, possibly after some
shards were yielded (the error is found while streaming).

Rules a user sees (documented in docs/jobfile.md's terms):

- Every format: a leading UTF-8 byte order mark is dropped, and every shard ends
  with a line break (one is added after a last record that lacks it). jsonl, lines
  and csv records are bytes, passed on without decoding or validating them; json
  input must be UTF-8, and is parsed (so it splits slower than jsonl).
- jsonl: a record is a non-blank line; blank (empty or whitespace-only) lines are
  skipped; CRLF line endings become LF; record bytes are otherwise kept as written.
- lines: every line is a record, blank ones included (like `split -l`); only the
  empty string after the final line break is not a line. CRLF becomes LF.
- csv: the first record is the header, repeated at the top of every shard; a record
  ends at a line break outside double quotes (RFC 4180 quoting: a quote inside a
  quoted field is written ""), so quoted fields may hold line breaks. Records are
  kept byte-exact, line endings included; empty lines between records are skipped.
  A header with no rows yields no shards; a quote left open at the end is an error.
- json: the input is one top-level array, read incrementally; each shard is a JSONL
  file with one element per line. An element's text is kept as written (numbers and
  escapes are not re-encoded), except that line breaks between its tokens are
  removed so it fits on one line (JSON strings cannot hold raw line breaks, so this
  never changes a value).
- `tasks` (instead of items per task) balances shards by bytes for blob inputs:
  shard k ends at the record boundary nearest to (k+1)/tasks of the blob's size, so
  the split stays one streaming pass (the record count is not known in advance).
  There are at most `tasks` shards, none empty; fewer when there are fewer records
  than tasks, or when records are so uneven that one spans several targets.

Resuming (a submission in chunks, shared.submit): a split given `Marks` notes, about once per
input chunk, a `Resume` (a byte offset and where the split stands there); `resume_shards` starts
from one, reading the input from that offset on, and yields exactly the shards the whole split
yields from then on. So a continuation does not read the input up to its cursor again. (A json
split into `tasks` notes none: it starts from the start again, see _shards.)
"""
from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice, repeat
from operator import and_
from typing import Any

from shared.errors import JobFileError

FORMATS = ("jsonl", "lines", "csv", "json")
# A single record (line, CSV record, JSON element) larger than this is an error: it is
# almost always a wrong format, and holding it would break the memory bound.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
GRID = 512 * 1024  # byte-balanced splits read the input in chunks ending on multiples of this: _on_grid
_FIELD = "input.blob"

Chunks = Iterable[bytes]
# A "line block" is (clean, raw_len): whole records, each ending with b"\n", and the
# number of input bytes they came from (they differ by dropped blank lines, CRs, BOM).
LineBlock = tuple[bytes, int]


# ---------------------------------------------------------------- where a split can resume

@dataclass(frozen=True)
class Resume:
    """A point where a blob's split can start again without reading what comes before it: the
    record at input byte `offset` is record number `have` (from 0) of shard number `shard`.
    `counted` is the byte-balanced csv split's own count of bytes there (blank lines are not
    counted, so it differs from the offset). Noted by `Marks`, kept in the run's record."""

    offset: int = 0
    shard: int = 0
    have: int = 0
    counted: int = 0

    @property
    def first_whole(self) -> int:
        """The first shard a split resumed here yields (the one under way at `offset` is not whole)."""
        return self.shard + (1 if self.have else 0)

    def to_json(self) -> dict[str, int]:
        return {"offset": self.offset, "shard": self.shard, "have": self.have, "counted": self.counted}

    @classmethod
    def of(cls, doc: Any) -> Resume | None:
        """The Resume `to_json` wrote; None for anything else (the split then starts from the start)."""
        if not isinstance(doc, dict) or "offset" not in doc:
            return None
        values = [doc.get(key, 0) for key in ("offset", "shard", "have", "counted")]
        if not all(type(value) is int and value >= 0 for value in values):
            return None
        return cls(*values)


class Marks:
    """The latest Resume of a split under way, updated at input chunk boundaries. When the
    consumer has just received shard i, `latest.first_whole <= i + 1`: a split resumed there
    yields shard i + 1 (the shard a chunk of tasks ending at i starts the next one with)."""

    def __init__(self) -> None:
        self.latest = Resume()


_START = Resume()


# ---------------------------------------------------------------- public entry points

def iter_shards(fmt: str, chunks: Chunks, *, items_per_task: int | None = None,
                tasks: int | None = None, total_bytes: int | None = None,
                marks: Marks | None = None, grid: bool = True) -> Iterator[bytes]:
    """Shards of a blob in format `fmt` (jsonl, lines, csv, json), in order.

    Give `items_per_task` (default 1) for fixed-size shards, or `tasks` together with
    `total_bytes` (the blob's size) for at most `tasks` byte-balanced shards. With `marks`,
    the split notes where it could resume (see resume_shards). `grid=False` cuts a byte-balanced
    split where the chunks given end (as before the grid, for runs begun then), and notes nothing.
    """
    per_task = _sizing(fmt, items_per_task, tasks, total_bytes)
    if not grid and tasks is not None:
        return _shards(fmt, chunks, per_task, tasks, total_bytes, None, _START, None, grid=False)
    return _shards(fmt, chunks, per_task, tasks, total_bytes, marks, _START, None)


def resume_shards(fmt: str, read_from: Callable[[int], Chunks], at: Resume, *,
                  items_per_task: int | None = None, tasks: int | None = None, total_bytes: int | None = None,
                  marks: Marks | None = None, grid: bool = True) -> Iterator[bytes]:
    """The shards `iter_shards` yields from number `at.first_whole` on, reading the input from
    byte `at.offset` on: `read_from(offset)` gives its chunks from there (a csv input's header is
    read from offset 0 too). `at` must come from the Marks of a split of the same bytes with the
    same sizing (`grid`: see iter_shards; without it, from the start)."""
    per_task = _sizing(fmt, items_per_task, tasks, total_bytes)
    if not grid:
        return islice(iter_shards(fmt, read_from(0), items_per_task=items_per_task, tasks=tasks,
                                  total_bytes=total_bytes, grid=False), at.first_whole, None)
    if at.offset == 0:
        return islice(_shards(fmt, read_from(0), per_task, tasks, total_bytes, marks, _START, None),
                      at.first_whole, None)
    header = _csv_header(read_from(0)) if fmt == "csv" else None
    shards = _shards(fmt, read_from(at.offset), per_task, tasks, total_bytes, marks, at, header)
    return islice(shards, 1, None) if at.have else shards  # the first is the end of a shard begun before


def _on_grid(chunks: Chunks, at: int) -> Iterator[bytes]:
    """The same bytes (starting at input byte `at`) in chunks that end on multiples of GRID bytes of
    the input. A byte-balanced lines or jsonl split maps its target offsets onto records block by
    block, so its cuts depend on where blocks begin; blocks begin where chunks do, so on the grid a
    split resumed at an offset cuts exactly where the whole split does (and the split is the same
    however its input is chunked). A json split's blocks also depend on its refills: it is not
    resumed (see _shards), the grid only makes its cuts less dependent on the chunking. Chunks are
    cut without joining them whole, so this costs one copy of the input; a cell of half a MiB keeps
    the blocks (and memory) small and their number low (as fast as without the grid)."""
    need = GRID - at % GRID  # bytes from the last grid line passed to the next
    parts: list[bytes] = []  # the input since the last grid line passed
    have = 0                 # bytes in `parts`
    for chunk in chunks:
        pos = 0
        while len(chunk) - pos >= need - have:  # the chunk reaches the next grid line
            end = pos + need - have
            parts.append(chunk[pos:end])
            yield b"".join(parts) if len(parts) > 1 else parts[0]
            parts, have, need, pos = [], 0, GRID, end
        if pos < len(chunk):
            parts.append(chunk[pos:])
            have += len(chunk) - pos
    if have:
        yield b"".join(parts)


def _sizing(fmt: str, items_per_task: int | None, tasks: int | None, total_bytes: int | None) -> int:
    """Records per shard (ignored when splitting into `tasks`), after checking the arguments."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; expected one of {FORMATS}")
    if tasks is not None:
        if items_per_task is not None:
            raise ValueError("give items_per_task or tasks, not both")
        if total_bytes is None:
            raise ValueError("splitting into a number of tasks needs total_bytes")
        _check_positive(tasks, "tasks")
        if total_bytes < 0:
            raise ValueError("total_bytes must be 0 or more")
        return 1
    per_task = 1 if items_per_task is None else items_per_task
    _check_positive(per_task, "per_task")
    return per_task


def _shards(fmt: str, chunks: Chunks, per_task: int, tasks: int | None, total_bytes: int | None,
            marks: Marks | None, at: Resume, header: bytes | None, grid: bool = True) -> Iterator[bytes]:
    """The split from `at` on (chunks from at.offset; a resumed csv split is given its header)."""
    if fmt == "csv":
        if tasks is not None:
            size = total_bytes or 0
            return _csv_shards(chunks, lambda batches, header_bytes: _group_records_by_bytes(
                batches, tasks, size, header_bytes, marks, at), header, at.offset)
        return _csv_shards(chunks, lambda batches, _header_bytes: _group_records(batches, per_task, marks, at),
                           header, at.offset)
    if tasks is not None and grid:  # where blocks begin moves these cuts (below): blocks begin on the grid
        chunks = _on_grid(chunks, at.offset)
    if tasks is not None and fmt == "json":
        # a json block ends at the first element after a refill, and how much a refill reads depends on
        # what was read before: a resumed split's blocks can differ, so this split resumes from the start
        marks = None
    if fmt == "json":
        blocks = _json_array_blocks(chunks, at.offset)
    else:
        blocks = _line_blocks(chunks, skip_blank=fmt == "jsonl", at=at.offset)
    if tasks is not None:
        return _group_lines_by_bytes(blocks, tasks, total_bytes or 0, marks, at)
    return _group_lines(blocks, per_task, marks, at)


def iter_item_shards(items: Sequence[Any], *, items_per_task: int | None = None,
                     tasks: int | None = None) -> Iterator[bytes]:
    """JSONL shards of inline items: `items_per_task` each (default 1), or `tasks` shards
    whose sizes differ by at most one."""
    if tasks is not None:
        if items_per_task is not None:
            raise ValueError("give items_per_task or tasks, not both")
        return split_items_into(items, tasks)
    return split_items(items, 1 if items_per_task is None else items_per_task)


def split_jsonl(chunks: Chunks, per_task: int) -> Iterator[bytes]:
    """Shards of `per_task` JSONL records (non-blank lines); the last may hold fewer."""
    return iter_shards("jsonl", chunks, items_per_task=per_task)


def split_lines(chunks: Chunks, per_task: int) -> Iterator[bytes]:
    """Shards of `per_task` lines, blank lines included; the last may hold fewer."""
    return iter_shards("lines", chunks, items_per_task=per_task)


def split_csv(chunks: Chunks, per_task: int) -> Iterator[bytes]:
    """Shards of the header plus `per_task` CSV records; the last may hold fewer."""
    return iter_shards("csv", chunks, items_per_task=per_task)


def split_json_array(chunks: Chunks, per_task: int) -> Iterator[bytes]:
    """JSONL shards of `per_task` elements of a top-level JSON array.

    Raises JobFileError(field="input.blob") naming the byte offset when the input is
    not one well-formed JSON array.
    """
    return iter_shards("json", chunks, items_per_task=per_task)


def split_into(chunks: Chunks, fmt: str, tasks: int, total_bytes: int) -> Iterator[bytes]:
    """At most `tasks` non-empty shards of near-equal size in bytes, in one pass.

    Shard k ends at the record boundary nearest to (k+1)/tasks of `total_bytes`; the
    last shard takes whatever remains, so a wrong `total_bytes` costs balance, never
    correctness.
    """
    return iter_shards(fmt, chunks, tasks=tasks, total_bytes=total_bytes)


def split_items(items: Sequence[Any], per_task: int) -> Iterator[bytes]:
    """JSONL shards of `per_task` inline items (compact JSON, one per line)."""
    _check_positive(per_task, "per_task")
    return _item_shards(items, repeat(per_task, _ceil_div(len(items), per_task)))


def split_items_into(items: Sequence[Any], tasks: int) -> Iterator[bytes]:
    """min(tasks, len(items)) JSONL shards whose item counts differ by at most one
    (the first shards take the extra items)."""
    _check_positive(tasks, "tasks")
    size, extra = divmod(len(items), tasks)
    return _item_shards(items, (size + (1 if index < extra else 0) for index in range(min(tasks, len(items)))))


def _item_shards(items: Sequence[Any], counts: Iterable[int]) -> Iterator[bytes]:
    """Shards of `counts` items each, in one pass over the items (a parameter sweep generates
    them as it goes, faster in order than by slices)."""
    remaining = iter(items)
    return (_items_jsonl(list(islice(remaining, count))) for count in counts)


def strip_bom(chunks: Chunks) -> Iterator[bytes]:
    """The same bytes without a leading UTF-8 byte order mark (also one split across
    chunks); empty chunks are dropped."""
    iterator = iter(chunks)
    head = b""
    for chunk in iterator:
        head += chunk
        if len(head) >= len(_BOM):
            break
    if head.startswith(_BOM):
        head = head[len(_BOM):]
    if head:
        yield bytes(head)
    for chunk in iterator:
        if chunk:
            yield chunk if type(chunk) is bytes else bytes(chunk)


# ---------------------------------------------------------------- helpers

def _check_positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer of 1 or more, got {value!r}")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _items_jsonl(items: Sequence[Any]) -> bytes:
    text = "".join(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for item in items)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: keep it escaped
        return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()


# ---------------------------------------------------------------- jsonl and lines

# A blank line after a line break; the first line is checked separately. One regex scan
# of the block is far cheaper than inspecting every line in Python.
_BLANK_AFTER_BREAK = re.compile(rb"\n[ \t\r\f\v]*\n")
_BLANK_AT_START = re.compile(rb"[ \t\r\f\v]*\n")


def _line_blocks(chunks: Chunks, *, skip_blank: bool, at: int = 0) -> Iterator[LineBlock]:
    """Line blocks of the input (from byte `at` on), about one per chunk; a last line without a
    break gets one."""
    lines = _WholeLines(chunks, at)
    for block in lines:
        raw_len = len(block)
        if lines.first and block.startswith(_BOM):
            block = block[len(_BOM):]
        yield _clean_lines(block, skip_blank), raw_len
    tail = lines.tail
    raw_len = len(tail)
    if lines.first and tail.startswith(_BOM):
        tail = tail[len(_BOM):]
    if tail:
        yield _clean_lines(tail + b"\n", skip_blank), raw_len


class _WholeLines:
    """Iterates blocks of whole lines (each ending with b"\n"), about one per chunk.

    The bytes after the last line break are `tail` once iteration ends. A line longer
    than MAX_RECORD_BYTES is an error: it almost always means a wrong format, and
    holding it would break the memory bound.
    """

    def __init__(self, chunks: Chunks, at: int = 0) -> None:
        self._chunks = chunks
        self._carry: list[bytes] = []  # the start of a line whose break has not arrived
        self._carried = 0              # bytes in _carry
        self._offset = at              # input bytes read so far (`chunks` start at byte `at`)
        self.first = at == 0           # whether the block being handled is the input's first

    @property
    def tail(self) -> bytes:
        return b"".join(self._carry)

    def __iter__(self) -> Iterator[bytes]:
        carry = self._carry
        for chunk in self._chunks:
            if not chunk:
                continue
            if type(chunk) is not bytes:
                chunk = bytes(chunk)
            self._offset += len(chunk)
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                carry.append(chunk)
                self._carried += len(chunk)
                if self._carried > MAX_RECORD_BYTES:
                    raise _oversized("a line", self._offset - self._carried)
                continue
            if carry:
                carry.append(chunk[:cut])
                block = b"".join(carry)
                carry.clear()
            else:
                block = chunk[:cut]
            if cut < len(chunk):
                carry.append(chunk[cut:])
            self._carried = len(chunk) - cut
            yield block
            self.first = False


def _oversized(what: str, offset: int) -> JobFileError:
    return JobFileError(
        f"{what} starting at byte offset {offset} is longer than {MAX_RECORD_BYTES:,} bytes; "
        f"check that \"format\" matches the data (a JSON array needs \"json\", a file "
        f"without line breaks cannot be split into lines)", field=_FIELD)


def _clean_lines(block: bytes, skip_blank: bool) -> bytes:
    """`block` (whole lines) with CRLF as LF, and blank lines dropped when asked."""
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n")
    if skip_blank and (_BLANK_AT_START.match(block) or _BLANK_AFTER_BREAK.search(block)):
        kept = [line for line in block.split(b"\n") if line.strip()]
        kept.append(b"")
        block = b"\n".join(kept) if len(kept) > 1 else b""
    return block


def _group_lines(blocks: Iterable[LineBlock], per_task: int, marks: Marks | None = None,
                 at: Resume = _START) -> Iterator[bytes]:
    """Shards of `per_task` lines each, cut out of the blocks as slices (no per-line work)."""
    parts: list[bytes] = [b""] if at.have else []  # the shard being built, when it spans blocks
    have = at.have           # lines in `parts` (resumed: the shard's lines before `at`, not held)
    span = 0                 # bytes of the last shard: where to look for the next cut
    number, offset = at.shard, at.offset  # the shard being built, the input offset of `block`
    for block, raw_len in blocks:
        if marks is not None:
            marks.latest = Resume(offset, number, have)
        offset += raw_len
        if per_task == 1 and b"\r" not in block:
            # Blocks hold whole lines, so each line is a shard (splitlines cuts only at \n
            # when there is no \r).
            lines = block.splitlines(keepends=True)
            number += len(lines)
            yield from lines
            continue
        pos, size = 0, len(block)
        while pos < size:
            need = per_task - have
            end = _nth_line_end(block, pos, need, span * need // per_task)
            if end < 0:
                parts.append(block[pos:])
                have += block.count(b"\n", pos)
                break
            shard = block[pos:end]
            if parts:
                parts.append(shard)
                shard = b"".join(parts)
                parts, have = [], 0
            span = len(shard)
            number += 1
            yield shard
            pos = end
    if parts:
        yield b"".join(parts)


def _nth_line_end(block: bytes, pos: int, n: int, guess: int) -> int:
    """The index just after the n-th line break at or after `pos`, or -1 if there are fewer.

    Shards tend to be alike, so jump `guess` bytes ahead (or to the block's end), count
    the breaks skipped in one C call and correct by a few finds, instead of one find per
    line.
    """
    if n == 1:
        return block.find(b"\n", pos) + 1 or -1
    size = len(block)
    probe = min(pos + guess, size) if guess > 0 else size
    found = block.count(b"\n", pos, probe)
    if found < n:
        if probe == size:
            return -1
        end = probe
        for _ in range(n - found):
            end = block.find(b"\n", end) + 1
            if not end:
                return -1
        return end
    if found - n < n:  # overshot by less than a shard: step back
        end = probe
        for _ in range(found - n + 1):
            end = block.rfind(b"\n", pos, end)
        return end + 1
    end = pos
    for _ in range(n):
        end = block.find(b"\n", end) + 1
    return end


def _group_lines_by_bytes(blocks: Iterable[LineBlock], tasks: int, total_bytes: int,
                          marks: Marks | None = None, at: Resume = _START) -> Iterator[bytes]:
    """At most `tasks` non-empty shards; shard k ends at the line end nearest to input byte
    (k+1)*total_bytes/tasks (cumulative targets, so errors never add up)."""
    parts: list[bytes] = [b""] if at.have else []  # resumed: the shard has lines before `at`, not held
    shard = at.shard         # index of the shard being filled
    raw_done = at.offset     # input bytes before the current block
    for block, raw_len in blocks:
        if marks is not None:
            marks.latest = Resume(raw_done, shard, 1 if parts else 0)
        pos, size = 0, len(block)
        while pos < size and shard < tasks - 1:
            boundary = _ceil_div((shard + 1) * total_bytes, tasks)
            # The block's clean bytes map linearly onto its input bytes.
            want = _ceil_div((boundary - raw_done) * size, raw_len)
            if want > size:
                break
            end = block.find(b"\n", max(want - 1, pos)) + 1  # first line end at or after
            before = block.rfind(b"\n", pos, end - 1) + 1 or pos  # the line end before it
            if (before > pos or (before == 0 and parts)) and want - before < end - want:
                end = before
            piece = block[pos:end]
            if parts:
                parts.append(piece)
                piece = b"".join(parts)
                parts = []
            yield piece
            shard += 1
            pos = end
        if pos < size:
            parts.append(block[pos:])
        raw_done += raw_len
    if parts:
        yield b"".join(parts)


# ---------------------------------------------------------------- csv

# A batch of records and the input offset of its first one (None when a quoted record spans its start).
RecordBatch = tuple[list[bytes], int | None]
RecordGrouper = Callable[[Iterable[RecordBatch], int], Iterator[list[bytes]]]


def _csv_shards(chunks: Chunks, group: RecordGrouper, header: bytes | None = None, at: int = 0) -> Iterator[bytes]:
    """Header-topped CSV shards; `group(batches, header_bytes)` decides the cuts. A split resumed
    at byte `at` (> 0) is given the input's `header`."""
    if header is not None:
        batches = _CsvReader(at, crlf=header.endswith(b"\r")).batches(chunks)
    else:
        batches = _CsvReader().batches(chunks)
        for records, _offset in batches:
            if records:
                header, rows = records[0], records[1:]
                break
        else:
            return
        batches = chain([(rows, None)], batches)
    for shard in group(batches, len(header) + 1):
        shard.insert(0, header)
        shard.append(b"")
        yield b"\n".join(shard)


class _CsvReader:
    """Splits CSV bytes into records (without their final b"\\n"; quoted line breaks kept).

    A record ends at a line break outside quotes: with RFC 4180 quoting, that is where
    the count of '"' since the record's start is even, so a line with an odd count
    opens or closes a multi-line record. Counting per line is one C call per line.
    """

    def __init__(self, at: int = 0, crlf: bool | None = None) -> None:
        self._open: list[bytes] | None = None  # lines of a record inside a quoted field
        self._open_bytes = 0                   # its input bytes, line breaks included
        self._offset = at                      # input bytes handled so far (the chunks start at `at`)
        self._crlf = crlf                      # whether the first record (the header) ends with CR

    def batches(self, chunks: Chunks) -> Iterator[RecordBatch]:
        """Lists of records, about one list per chunk, with the input offset where each begins
        (None when a quoted record spans that point); empty lines are skipped."""
        lines = _WholeLines(chunks, self._offset)
        for block in lines:
            begins = self._offset if self._open is None else None
            self._offset += len(block)
            if lines.first and block.startswith(_BOM):
                block = block[len(_BOM):]
            parts = block.split(b"\n")
            parts.pop()  # the empty string after the block's last break
            yield self._records(parts, block), begins
        tail = lines.tail
        begins = self._offset if self._open is None else None
        if not tail:
            records = []
        else:
            self._offset += len(tail) + 1  # as if it ended with a line break
            if lines.first and tail.startswith(_BOM):
                tail = tail[len(_BOM):]
            records = self._records([tail], tail)
            # The last record had no line break: give it the file's own line ending.
            if records and self._crlf and not records[-1].endswith(b"\r"):
                records[-1] += b"\r"
        if self._open is not None:
            raise JobFileError(
                f"the CSV input has a quoted field that is never closed: the record starting "
                f"at byte offset {self._offset - self._open_bytes} has an odd number of '\"'. "
                f"Quote fields as in RFC 4180 (a quote inside a quoted field is written \"\")",
                field=_FIELD)
        yield records, begins

    def _records(self, lines: list[bytes], block: bytes) -> list[bytes]:
        odd: list[int] | None = None
        if self._open is not None or b'"' in block:
            odd = list(map(and_, map(bytes.count, lines, repeat(b'"')), repeat(1)))
            if self._open is None and 1 not in odd:
                odd = None
        records = lines if odd is None else self._join_quoted(lines, odd)
        if b"" in records or b"\r" in records:
            records = [record for record in records if record and record != b"\r"]
        if self._crlf is None and records:
            self._crlf = records[0].endswith(b"\r")
        return records

    def _join_quoted(self, lines: list[bytes], odd: list[int]) -> list[bytes]:
        """Records of `lines`, where a line with an odd quote count opens or closes one."""
        records: list[bytes] = []
        i, n = 0, len(lines)
        while i < n:
            j = _index(odd, 1, i, n)
            if self._open is None:
                records.extend(lines[i:j])
                if j < n:
                    self._open = [lines[j]]
                    self._open_bytes = len(lines[j]) + 1
            else:
                taken = lines[i:j + 1]
                self._open.extend(taken)
                self._open_bytes += sum(map(len, taken)) + len(taken)
                if j < n:
                    records.append(b"\n".join(self._open))
                    self._open = None
            i = j + 1
        if self._open is not None and self._open_bytes > MAX_RECORD_BYTES:
            raise _oversized("a CSV record (a quoted field that may never close)",
                             self._offset - self._open_bytes)
        return records


def _csv_header(chunks: Chunks) -> bytes:
    """The first record of a CSV input (its header), reading no further than its end's chunk."""
    for records, _offset in _CsvReader().batches(chunks):
        if records:
            return records[0]
    raise JobFileError("the CSV input has no header any more; it was read before", field=_FIELD)


def _index(values: list[int], value: int, start: int, default: int) -> int:
    """values.index(value, start), or `default` when absent."""
    try:
        return values.index(value, start)
    except ValueError:
        return default


def _group_records(batches: Iterable[RecordBatch], per_task: int, marks: Marks | None = None,
                   at: Resume = _START) -> Iterator[list[bytes]]:
    """Lists of `per_task` records each; the last may hold fewer."""
    pending: list[bytes] = [b""] * at.have  # resumed: the shard's records before `at`, not held
    number = at.shard  # the shard `pending` belongs to
    for records, offset in batches:
        if marks is not None and offset is not None:
            marks.latest = Resume(offset, number, len(pending))
        number += (len(pending) + len(records)) // per_task
        start = 0
        if pending:
            start = per_task - len(pending)
            pending.extend(records[:start])
            if len(pending) < per_task:
                continue
            yield pending
        while len(records) - start >= per_task:
            yield records[start:start + per_task]
            start += per_task
        pending = records[start:]
    if pending:
        yield pending


def _group_records_by_bytes(batches: Iterable[RecordBatch], tasks: int, total_bytes: int, header_bytes: int,
                            marks: Marks | None = None, at: Resume = _START) -> Iterator[list[bytes]]:
    """At most `tasks` non-empty lists; list k ends at the record end nearest to input byte
    (k+1)*total_bytes/tasks, counting from `header_bytes` (the header's bytes)."""
    pending: list[bytes] = [b""] if at.have else []  # resumed: the shard has records before `at`, not held
    shard, done = at.shard, at.counted if at.offset else header_bytes
    boundary = _ceil_div((shard + 1) * total_bytes, tasks)
    for records, offset in batches:
        if marks is not None and offset is not None:
            marks.latest = Resume(offset, shard, 1 if pending else 0, done)
        for record in records:
            size = len(record) + 1
            # Cut before this record when that lands nearer the boundary than after it.
            if pending and shard < tasks - 1 and boundary - done < done + size - boundary:
                yield pending
                pending = []
                shard += 1
                boundary = _ceil_div((shard + 1) * total_bytes, tasks)
            pending.append(record)
            done += size
            if done >= boundary and shard < tasks - 1:
                yield pending
                pending = []
                shard += 1
                boundary = _ceil_div((shard + 1) * total_bytes, tasks)
    if pending:
        yield pending


# ---------------------------------------------------------------- json array

class _BadConstant(ValueError):
    """NaN, Infinity or -Infinity: accepted by Python's json, but not JSON."""


def _reject_constant(name: str) -> Any:
    raise _BadConstant(name)


_JSON_WS = re.compile(r"[ \t\n\r]*")


class _Text:
    """The decoded text of a byte stream, read on demand, with input byte offsets.

    Holds only unparsed text: consumed text is dropped at each refill.
    """

    def __init__(self, chunks: Chunks, at: int = 0) -> None:
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.fills = 0    # refills so far: the caller flushes its output on each
        self._base = at   # input byte offset of buf[0] (the chunks start at byte `at`)
        self._fed = at    # input bytes decoded so far

    def offset(self, index: int | None = None) -> int:
        """The input byte offset of buf[index] (default: the current position)."""
        index = self.pos if index is None else index
        return self._base + _utf8_len(self.buf, index)

    @property
    def total(self) -> int:
        return self._fed

    def fill(self, at_least: int = 1) -> bool:
        """Add at least `at_least` characters (fewer only at the end); False at the end."""
        if self.eof:
            return False
        if self.pos:
            self._base += _utf8_len(self.buf, self.pos)
            self.buf = self.buf[self.pos:]
            self.pos = 0
        added: list[str] = []
        count = 0
        while count < at_least and not self.eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.eof = True
                text = self._decode(b"", final=True)
            else:
                text = self._decode(chunk)
            added.append(text)
            count += len(text)
        self.buf += "".join(added)
        self.fills += 1
        return count > 0

    def _decode(self, data: bytes, final: bool = False) -> str:
        pending = len(self._utf8.getstate()[0])
        try:
            text = self._utf8.decode(data, final)
        except UnicodeDecodeError as e:
            at = self._fed - pending + e.start
            raise JobFileError(f"the input is not valid UTF-8 text: invalid byte at byte offset "
                               f"{at}; save it as UTF-8", field=_FIELD) from None
        self._fed += len(data)
        return text


def _utf8_len(text: str, end: int) -> int:
    """UTF-8 length of text[:end]; free for ASCII text (str.isascii is O(1))."""
    return end if text.isascii() else len(text[:end].encode("utf-8"))


def _json_error(text: _Text, index: int, what: str) -> JobFileError:
    return JobFileError(f"the input is not a valid JSON array: {what} at byte offset "
                        f"{text.offset(index)}", field=_FIELD)


def _next_char(text: _Text) -> str:
    """The next non-whitespace character (not consumed), or "" at the end of input."""
    while True:
        text.pos = _JSON_WS.match(text.buf, text.pos).end()  # type: ignore[union-attr]  # \s* always matches
        if text.pos < len(text.buf):
            return text.buf[text.pos]
        if not text.fill():
            return ""


def _json_array_blocks(chunks: Chunks, at: int = 0) -> Iterator[LineBlock]:
    """Line blocks holding the elements of one top-level JSON array, one per line. Each block
    ends just after an element: a split resumed at byte `at` > 0 starts there."""
    text = _Text(chunks, at)
    decode = json.JSONDecoder(parse_constant=_reject_constant).raw_decode
    if at:
        char = _after_element(text)
    else:
        char = _next_char(text)
        if char == "\ufeff" and text.offset() == 0:  # a byte order mark
            text.pos += 1
            char = _next_char(text)
        if char != "[":
            found = repr(char) if char else "nothing"
            raise _json_error(text, text.pos, f"expected '[' (a top-level array), found {found}")
        text.pos += 1
        char = _next_char(text)
    lines: list[str] = []
    flushed = at      # input bytes already accounted for in yielded blocks
    fills = text.fills
    while char != "]":
        if not char:
            raise _json_error(text, text.pos, "the input ends before the array's closing ']'")
        start, end = _decode_value(text, decode)
        lines.append(_one_line(text.buf[start:end]))
        # The careful path above reads input as needed; the rest of the buffer goes fast.
        text.pos = _decode_run(text.buf, end, decode, lines)
        if text.fills != fills:  # about one block per chunk keeps memory bounded
            fills = text.fills
            lines.append("")
            now = text.offset()
            yield "\n".join(lines).encode("utf-8"), now - flushed
            lines, flushed = [], now
        char = _after_element(text)
    text.pos += 1
    char = _next_char(text)
    if char:
        raise _json_error(text, text.pos, f"unexpected {char!r} after the array's closing ']'")
    lines.append("")
    yield ("\n".join(lines).encode("utf-8") if len(lines) > 1 else b""), text.total - flushed


def _after_element(text: _Text) -> str:
    """Past the ',' after an element: the first character of the next one, or "]" (not consumed)
    at the array's end, or "" at the end of input."""
    char = _next_char(text)
    if char == ",":
        text.pos += 1
        char = _next_char(text)
        if char == "]":
            raise _json_error(text, text.pos, "a ',' before ']' (trailing commas are "
                                              "not allowed in JSON)")
    elif char and char != "]":
        raise _json_error(text, text.pos, f"expected ',' or ']' after an element, found {char!r}")
    return char


def _one_line(element: str) -> str:
    """The element on one line: JSON strings cannot hold raw line breaks, so the ones
    present sit between tokens and removing them never changes the value."""
    if "\n" in element or "\r" in element:
        return element.replace("\r", "").replace("\n", "")
    return element


_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
_SAFETY = 8  # a value ending this close to the buffer's end may continue past it


def _decode_run(buf: str, pos: int, decode: Callable[[str, int], tuple[Any, int]],
                lines: list[str]) -> int:
    """Decode the comma-separated elements after `pos` that lie wholly inside `buf`,
    appending them to `lines`; return where the careful path must take over (anything
    unusual: the end of the array or buffer, or an error it will report)."""
    limit = len(buf) - _SAFETY
    while pos < limit:
        comma = _COMMA.match(buf, pos)
        if comma is None or comma.end() >= limit:
            return pos
        start = comma.end()
        try:
            _, end = decode(buf, start)
        except (json.JSONDecodeError, _BadConstant):
            return pos
        if end >= limit:
            return pos
        lines.append(_one_line(buf[start:end]))
        pos = end
    return pos


def _decode_value(text: _Text, decode: Callable[[str, int], tuple[Any, int]]) -> tuple[int, int]:
    """(start, end) in text.buf of the JSON value at text.pos, reading more input as needed."""
    while True:
        buf, pos = text.buf, text.pos
        try:
            _, end = decode(buf, pos)
        except json.JSONDecodeError as e:
            if text.eof or not _maybe_truncated(e, len(buf)):
                raise _json_error(text, e.pos, e.msg[:1].lower() + e.msg[1:]) from None
        except _BadConstant as e:
            raise _json_error(text, pos, f"{e} is not valid JSON (use null or a string)") from None
        else:
            # A value ending near the end of the buffer may be a number cut short ("1.5e").
            if text.eof or end < len(buf) - _SAFETY:
                return pos, end
        if len(buf) - pos > MAX_RECORD_BYTES:
            raise _oversized("an array element", text.offset(pos))
        # Read at least as much again as the value's start so far: retries stay linear.
        text.fill(len(buf) - pos + 1)


def _maybe_truncated(error: json.JSONDecodeError, size: int) -> bool:
    """Whether the error may only mean the value continues in input not yet read."""
    return error.pos >= size - _SAFETY or error.msg.startswith("Unterminated string")

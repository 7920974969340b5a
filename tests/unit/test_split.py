"""Streaming splitters: same shards however the input is chunked, bounded memory, the documented rules."""
from __future__ import annotations

import csv
import io
import json
import random
import tracemalloc
from collections.abc import Callable, Iterable, Iterator

import pytest

from shared import split
from shared.errors import JobFileError
from shared.split import (
    iter_item_shards,
    iter_shards,
    split_csv,
    split_into,
    split_items,
    split_items_into,
    split_json_array,
    split_jsonl,
    split_lines,
    strip_bom,
)

Splitter = Callable[[Iterable[bytes], int], Iterator[bytes]]


def chunkings(data: bytes, seed: int = 0) -> Iterator[list[bytes]]:
    """The same bytes whole, one byte at a time, in random sizes, and cut in two at every
    position (with an empty chunk at the cut)."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    for _ in range(4):
        pieces, at = [], 0
        while at < len(data):
            size = rng.randint(1, 9)
            pieces.append(data[at:at + size])
            at += size
        yield pieces
    for cut in range(1, len(data)):
        yield [data[:cut], b"", data[cut:]]


def same_for_every_chunking(splitter: Splitter, data: bytes, *args: object) -> list[bytes]:
    expected = list(splitter([data], *args))
    for chunks in chunkings(data):
        assert list(splitter(iter(chunks), *args)) == expected, chunks
    return expected


def error_for_every_chunking(splitter: Splitter, data: bytes, *args: object) -> str:
    """The splitter fails the same way however the input is chunked; returns the message."""
    messages = set()
    for chunks in chunkings(data):
        with pytest.raises(JobFileError) as info:
            list(splitter(iter(chunks), *args))
        assert info.value.field == "input.blob"
        messages.add(info.value.message)
    assert len(messages) == 1, messages
    return messages.pop()


def random_chunks(data: bytes, rng: random.Random, largest: int = 64) -> list[bytes]:
    pieces, at = [], 0
    while at < len(data):
        size = rng.randint(1, largest)
        pieces.append(data[at:at + size])
        at += size
    return pieces


def groups(records: list[bytes], per_task: int, header: bytes | None = None) -> list[bytes]:
    top = [header] if header is not None else []
    return [b"".join(r + b"\n" for r in top + records[i:i + per_task])
            for i in range(0, len(records), per_task)]


# ---------------------------------------------------------------- jsonl

JSONL = b'{"a": 1}\r\n\r\n  \n{"b": [1, 2]}\n\t\n{"c": "x y"}\n{"d": null}'


@pytest.mark.parametrize("per_task", [1, 2, 3, 10])
def test_jsonl_rules_hold_for_every_chunking(per_task):
    records = [b'{"a": 1}', b'{"b": [1, 2]}', b'{"c": "x y"}', b'{"d": null}']
    assert same_for_every_chunking(split_jsonl, JSONL, per_task) == groups(records, per_task)


def test_jsonl_keeps_record_bytes_and_leading_spaces():
    data = b'  {"a":1}  \n\xc3\xa9\n'
    assert list(split_jsonl([data], 5)) == [data]


def test_jsonl_drops_bom_even_split_across_chunks():
    data = b'\xef\xbb\xbf{"a":1}\n{"b":2}\n'
    assert same_for_every_chunking(split_jsonl, data, 1) == [b'{"a":1}\n', b'{"b":2}\n']


@pytest.mark.parametrize("data", [b"", b"\n\n", b"  \r\n \t \n", b"\xef\xbb\xbf"])
def test_jsonl_without_records_yields_no_shards(data):
    assert same_for_every_chunking(split_jsonl, data, 2) == []


def test_jsonl_matches_reference_on_random_inputs():
    rng = random.Random(7)
    for _ in range(60):
        lines = []
        for _ in range(rng.randint(0, 40)):
            kind = rng.random()
            if kind < 0.15:
                lines.append(rng.choice([b"", b" ", b"\t \r"]))
            else:  # very uneven lengths exercise the cut's jump-and-correct search
                lines.append(b"x" * rng.choice([1, 2, 5, 40, 300, 2000]))
        ending = rng.choice([b"\n", b"\r\n"])
        data = ending.join(lines) + rng.choice([b"", ending])
        per_task = rng.randint(1, 6)
        records = [line.removesuffix(b"\r") for line in data.replace(b"\r\n", b"\n").split(b"\n")]
        records = [r for r in records if r.strip()]
        got = list(split_jsonl(random_chunks(data, rng, 500), per_task))
        assert got == groups(records, per_task)


# ---------------------------------------------------------------- lines

def test_lines_keep_blank_lines_but_not_the_empty_end():
    data = b"a\r\n\nb\n  \nc\n"
    assert same_for_every_chunking(split_lines, data, 2) == [b"a\n\n", b"b\n  \n", b"c\n"]


def test_lines_add_missing_final_newline():
    assert same_for_every_chunking(split_lines, b"a\nb", 5) == [b"a\nb\n"]


def test_lines_keep_lone_carriage_returns():
    assert list(split_lines([b"a\rb\nc\n"], 1)) == [b"a\rb\n", b"c\n"]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"])
def test_lines_empty_input_yields_no_shards(data):
    assert list(split_lines([data], 1)) == []


# ---------------------------------------------------------------- csv

CSV = (b'id,text\r\n'
       b'1,"multi\r\nline"\r\n'
       b'2,"say ""hi"", ok"\r\n'
       b'\r\n'
       b'3,plain\r\n'
       b'4,"a,b\n\nc"')


def test_csv_repeats_header_keeps_records_byte_exact():
    assert same_for_every_chunking(split_csv, CSV, 2) == [
        b'id,text\r\n1,"multi\r\nline"\r\n2,"say ""hi"", ok"\r\n',
        b'id,text\r\n3,plain\r\n4,"a,b\n\nc"\r\n',  # missing final break gets the file's CRLF
    ]


def test_csv_lf_file_gets_lf_final_break():
    assert list(split_csv([b"h\n1\n2"], 1)) == [b"h\n1\n", b"h\n2\n"]


@pytest.mark.parametrize("data", [b"", b"\n\n", b"a,b\n", b"a,b", b"a,b\r\n\r\n"])
def test_csv_without_rows_yields_no_shards(data):
    assert same_for_every_chunking(split_csv, data, 1) == []


def test_csv_drops_bom():
    assert same_for_every_chunking(split_csv, b"\xef\xbb\xbfa,b\n1,2\n", 1) == [b"a,b\n1,2\n"]


def test_csv_quoted_header_with_line_break():
    data = b'"a\nb",c\n1,2\n'
    assert list(split_csv([data], 1)) == [data]


def test_csv_unclosed_quote_names_the_offset():
    message = error_for_every_chunking(split_csv, b'a,b\n1,2\n3,"oops\n4,5\n', 1)
    assert "never closed" in message and "byte offset 8" in message


def test_csv_shards_parse_like_the_whole_file():
    rng = random.Random(3)
    alphabet = ["a", "b", ",", '"', "\n", "\r\n", " ", "é"]
    for _ in range(40):
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator=rng.choice(["\n", "\r\n"]))
        rows = [["h1", "h2"]] + [["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
                                  for _ in range(2)] for _ in range(rng.randint(0, 25))]
        writer.writerows(rows)
        data = buffer.getvalue().encode()
        per_task = rng.randint(1, 5)
        shards = list(split_csv(random_chunks(data, rng, 16), per_task))
        parsed = [list(csv.reader(io.StringIO(s.decode(), newline=""))) for s in shards]
        assert all(p[0] == ["h1", "h2"] and 1 < len(p) <= per_task + 1 for p in parsed)
        assert [row for p in parsed for row in p[1:]] == rows[1:]
        # Byte exactness: without the repeated headers, the shards are the input.
        header_len = data.index(b"\n") + 1
        assert b"".join(s[header_len:] for s in shards) == data[header_len:]


# ---------------------------------------------------------------- json array

JSON_ARRAY = (b' [1, {"a": [1,2,"],[\\"]"]}, "x,]\\"" ,\n'
              b'  [[[]]], -1.5e-3 , true,null,{}, 12345678901234567890, "\xc3\xa9\\u00e9"] \n')


@pytest.mark.parametrize("per_task", [1, 3, 100])
def test_json_array_elements_one_per_line(per_task):
    elements = [b'1', b'{"a": [1,2,"],[\\"]"]}', b'"x,]\\""', b'[[[]]]', b'-1.5e-3', b'true',
                b'null', b'{}', b'12345678901234567890', b'"\xc3\xa9\\u00e9"']
    assert same_for_every_chunking(split_json_array, JSON_ARRAY, per_task) == groups(elements, per_task)


def test_json_pretty_printed_elements_become_single_lines():
    values = [{"a": [1, {"b": "c d"}], "e": 0.1}, [1, [2, "x\ny"]], "s"]
    data = json.dumps(values, indent=2).replace("\n", "\r\n").encode()
    shards = same_for_every_chunking(split_json_array, data, 2)
    lines = b"".join(shards).decode().splitlines()
    assert [json.loads(line) for line in lines] == values


def test_json_keeps_numbers_as_written():
    assert list(split_json_array([b"[1.0000000000000000001, 1E5, 1e400]"], 5)) == [
        b"1.0000000000000000001\n1E5\n1e400\n"]


@pytest.mark.parametrize("data", [b"[]", b" [ \n ] \n", b"\xef\xbb\xbf[]"])
def test_json_empty_array_yields_no_shards(data):
    assert same_for_every_chunking(split_json_array, data, 1) == []


@pytest.mark.parametrize("data, words", [
    (b"", "expected '['"),
    (b'{"a": 1}', "expected '['"),
    (b"[1, 2,]", "trailing comma"),
    (b"[1 2]", "expected ',' or ']'"),
    (b"[1, 2", "ends before"),
    (b"[1, ", "ends before"),
    (b"[", "ends before"),
    (b"[1] x", "after the array"),
    (b"[1][2]", "after the array"),
    (b"[1, NaN]", "NaN is not valid JSON"),
    (b'[{"a" 1}]', "delimiter"),
    (b'["abc', "unterminated string"),
    (b"[tru]", "expecting value"),
])
def test_json_malformed(data, words):
    assert words in error_for_every_chunking(split_json_array, data, 1)


def test_json_error_offset_counts_bytes_not_characters():
    message = error_for_every_chunking(split_json_array, b'["\xc3\xa9", x]', 1)
    assert "byte offset 7" in message


def test_json_invalid_utf8_names_the_offset():
    message = error_for_every_chunking(split_json_array, b'["a", "\xff"]', 1)
    assert "UTF-8" in message and "byte offset 7" in message


def test_json_error_is_reported_without_reading_the_rest():
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        yield b"[1, 2, }" + b" " * 100
        while True:
            pulled += 1
            assert pulled < 10, "read on past a syntax error"
            yield b" " * 100

    with pytest.raises(JobFileError, match="byte offset 7"):
        list(split_json_array(endless(), 1))


def test_json_big_elements_across_many_chunks():
    values = [{"k": "v" * 5000, "n": list(range(300))}, 3, ["z" * 7000]]
    data = json.dumps(values).encode()
    rng = random.Random(1)
    for largest in (1, 50, 4096):
        shards = list(split_json_array(random_chunks(data, rng, largest), 1))
        assert [json.loads(s) for s in shards] == values


# ---------------------------------------------------------------- record size limit

@pytest.mark.parametrize("splitter, data, what", [
    (split_lines, b"ok\n" + b"x" * 300 + b"\nok\n", "a line"),
    (split_jsonl, b"x" * 300, "a line"),
    (split_csv, b"h\n1\n\"" + b"x\n" * 150, "CSV record"),
    (split_json_array, b'[1, "' + b"x" * 300 + b'"]', "array element"),
])
def test_oversized_record_is_an_error(monkeypatch, splitter, data, what):
    monkeypatch.setattr(split, "MAX_RECORD_BYTES", 100)
    with pytest.raises(JobFileError) as info:
        list(splitter(random_chunks(data, random.Random(0), 16), 1))
    assert info.value.field == "input.blob"
    assert what in info.value.message and "format" in info.value.message


# ---------------------------------------------------------------- tasks: byte-balanced

def uniform_input(fmt: str, n: int) -> tuple[bytes, list[bytes]]:
    """An input of n equal records in `fmt`, and the shard lines each record becomes."""
    records = [b'{"id": "%04d", "pad": "xxxxxxxxxx"}' % i for i in range(n)]
    if fmt == "json":
        return b"[" + b",\n".join(records) + b"]\n", records
    if fmt == "csv":
        rows = [b'%04d,"a,b\nc"' % i for i in range(n)]  # quoted LF inside a CRLF file
        return b"id,text\r\n" + b"".join(r + b"\r\n" for r in rows), [r + b"\r" for r in rows]
    return b"".join(r + b"\n" for r in records), records


def shard_records(fmt: str, shard: bytes) -> list[bytes]:
    if fmt == "csv":
        body = shard.split(b"\r\n", 1)[1]
        return [r + b"\r" for r in body.split(b"\r\n") if r]
    return shard.split(b"\n")[:-1]


@pytest.mark.parametrize("fmt", ["jsonl", "lines", "csv", "json"])
@pytest.mark.parametrize("n, tasks", [(100, 7), (100, 100), (10, 3), (5, 9), (1, 4), (64, 1)])
def test_tasks_split_is_balanced_and_complete(fmt, n, tasks):
    data, records = uniform_input(fmt, n)
    rng = random.Random(n * tasks)
    shards = list(split_into(random_chunks(data, rng, 200), fmt, tasks, len(data)))
    assert len(shards) == min(n, tasks)
    assert all(shards)
    sizes = [len(shard_records(fmt, s)) for s in shards]
    assert max(sizes) - min(sizes) <= 1, sizes
    assert [r for s in shards for r in shard_records(fmt, s)] == records


@pytest.mark.parametrize("fmt", ["jsonl", "lines", "csv", "json"])
@pytest.mark.parametrize("total", [0, 1, 10, 10**9])
def test_tasks_split_survives_a_wrong_size(fmt, total):
    data, records = uniform_input(fmt, 30)
    shards = list(split_into([data], fmt, 4, total))
    assert 1 <= len(shards) <= 4 and all(shards)
    assert [r for s in shards for r in shard_records(fmt, s)] == records


def test_tasks_split_random_inputs_keep_invariants():
    rng = random.Random(11)
    for _ in range(80):
        records = [b"r" * rng.choice([1, 3, 20, 400]) for _ in range(rng.randint(1, 50))]
        data = b"".join(r + rng.choice([b"\n", b"\r\n", b"\n\n"]) for r in records)
        tasks = rng.randint(1, 12)
        shards = list(split_into(random_chunks(data, rng, 100), "jsonl", tasks, len(data)))
        assert 1 <= len(shards) <= tasks and all(shards)
        assert b"".join(shards) == b"".join(r + b"\n" for r in records)


def test_tasks_split_cuts_near_equal_bytes():
    rng = random.Random(5)
    records = [b"x" * rng.randint(10, 200) for _ in range(2000)]
    data = b"".join(r + b"\n" for r in records)
    shards = list(split_into(random_chunks(data, rng, 4096), "lines", 10, len(data)))
    assert len(shards) == 10
    assert all(abs(len(s) - len(data) / 10) <= 201 for s in shards[:-1])


# ---------------------------------------------------------------- inline items

ITEMS = [1, "two", None, {"a": [1, "é"]}, [True], 2.5, "\ud800"]


def test_split_items_per_task():
    shards = list(split_items(ITEMS, 3))
    assert [len(s.splitlines()) for s in shards] == [3, 3, 1]
    assert shards[1] == b'{"a":[1,"\xc3\xa9"]}\n[true]\n2.5\n'
    assert [json.loads(line) for s in shards for line in s.splitlines()] == ITEMS


@pytest.mark.parametrize("n, tasks, sizes", [
    (10, 3, [4, 3, 3]), (9, 3, [3, 3, 3]), (2, 5, [1, 1]), (7, 1, [7]), (7, 7, [1] * 7),
])
def test_split_items_into_sizes_differ_by_at_most_one(n, tasks, sizes):
    shards = list(split_items_into(list(range(n)), tasks))
    assert [len(s.splitlines()) for s in shards] == sizes
    assert b"".join(shards) == b"".join(b"%d\n" % i for i in range(n))


def test_iter_item_shards_dispatch():
    assert list(iter_item_shards([1, 2, 3])) == [b"1\n", b"2\n", b"3\n"]
    assert list(iter_item_shards([1, 2, 3], items_per_task=2)) == [b"1\n2\n", b"3\n"]
    assert list(iter_item_shards([1, 2, 3], tasks=2)) == [b"1\n2\n", b"3\n"]
    with pytest.raises(ValueError):
        iter_item_shards([1], items_per_task=1, tasks=1)


# ---------------------------------------------------------------- entry point

@pytest.mark.parametrize("fmt, data, shards", [
    ("jsonl", b"a\n\nb\n", [b"a\n", b"b\n"]),
    ("lines", b"a\n\nb\n", [b"a\n", b"\n", b"b\n"]),
    ("csv", b"h\na\nb\n", [b"h\na\n", b"h\nb\n"]),
    ("json", b"[1,2]", [b"1\n", b"2\n"]),
])
def test_iter_shards_dispatches_on_format(fmt, data, shards):
    assert list(iter_shards(fmt, [data], items_per_task=None, tasks=None, total_bytes=None)) == shards
    assert list(iter_shards(fmt, [data], tasks=1, total_bytes=len(data))) == [b"".join(
        shards) if fmt != "csv" else b"h\na\nb\n"]


@pytest.mark.parametrize("kwargs", [
    {"items_per_task": 1, "tasks": 2, "total_bytes": 1},
    {"tasks": 2},
    {"items_per_task": 0},
    {"tasks": 0, "total_bytes": 5},
])
def test_iter_shards_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        list(iter_shards("jsonl", [b"a\n"], **kwargs))


def test_iter_shards_rejects_unknown_format():
    with pytest.raises(ValueError):
        iter_shards("xml", [b""])


def test_strip_bom():
    assert list(strip_bom([b"\xef", b"", b"\xbb", b"\xbfab", b"c"])) == [b"ab", b"c"]
    assert list(strip_bom([b"\xef\xbb"])) == [b"\xef\xbb"]
    assert list(strip_bom([b"x\xef\xbb\xbf"])) == [b"x\xef\xbb\xbf"]
    assert list(strip_bom([])) == []


# ---------------------------------------------------------------- streaming and memory

def test_splitting_streams_rather_than_reading_everything_first():
    pulled = 0

    def chunks() -> Iterator[bytes]:
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield b"%d\n" % i

    shards = split_jsonl(chunks(), 2)
    assert next(shards) == b"0\n1\n"
    assert pulled <= 3


def lazy_input(fmt: str, total: int) -> Iterator[bytes]:
    """`total` bytes of `fmt` input, produced 64 KiB at a time and never held whole."""
    if fmt == "json":
        element = b'{"id": 1, "text": "' + b"x" * 70 + b'", "list": [1, 2, 3]},\n'
        block = element * (65536 // len(element))
        yield b"["
        for _ in range(total // len(block)):
            yield block
        yield b"0]"
        return
    if fmt == "csv":
        line = b'1,"quoted, with ""quotes""\nand a break",' + b"x" * 40 + b"\n"
        yield b"id,text,pad\n"
    else:
        line = b'{"id": 12345, "text": "' + b"x" * 70 + b'"}\n'
    block = line * (65536 // len(line))
    for _ in range(total // len(block)):
        yield block


@pytest.mark.parametrize("fmt, total, per_task, tasks", [
    ("jsonl", 50 << 20, 100, None),
    ("jsonl", 50 << 20, None, 500),
    ("lines", 20 << 20, 1000, None),
    ("csv", 6 << 20, 100, None),   # smaller: tracemalloc slows per-record work
    ("json", 3 << 20, 100, None),
])
def test_memory_stays_bounded(fmt, total, per_task, tasks):
    # 64 KiB chunks and shards of about 10 KiB: the bound is a few chunks, whatever the size.
    limit = min(4 << 20, total // 4)
    tracemalloc.start()
    try:
        count = size = 0
        for shard in iter_shards(fmt, lazy_input(fmt, total), items_per_task=per_task, tasks=tasks,
                                 total_bytes=total):
            count += 1
            size += len(shard)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count > 100 and size >= total * 0.9
    assert peak < limit, f"peak {peak / 2**20:.2f} MiB for {total / 2**20:.0f} MiB of input"

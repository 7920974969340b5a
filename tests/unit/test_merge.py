"""Streaming mergers: newline repair, csv header once, concat byte-exact, bounded memory."""
from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator

import pytest

from shared.merge import STREAMED_KINDS, merge_stream
from shared.split import split_csv, split_jsonl


def merged(kind: str, sources: list[list[bytes]]) -> bytes:
    return b"".join(merge_stream(kind, [iter(s) for s in sources]))


def rechunk(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, at = [], 0
    while at < len(data):
        size = rng.randint(0, 5)  # empty chunks too
        pieces.append(data[at:at + size])
        at += size
    return pieces


def every_chunking(kind: str, sources: list[bytes]) -> bytes:
    """The merge of `sources`, asserted identical whether chunked whole, per byte or randomly."""
    expected = merged(kind, [[s] for s in sources])
    assert merged(kind, [[s[i:i + 1] for i in range(len(s))] for s in sources]) == expected
    rng = random.Random(len(expected))
    for _ in range(20):
        assert merged(kind, [rechunk(s, rng) for s in sources]) == expected
    return expected


@pytest.mark.parametrize("kind", ["jsonl", "lines"])
def test_line_merges_repair_missing_newlines(kind):
    sources = [b'{"a":1}\n', b'{"b":2}', b"", b'{"c":3}\n{"d":4}', b"\n"]
    assert every_chunking(kind, sources) == b'{"a":1}\n{"b":2}\n{"c":3}\n{"d":4}\n\n'


@pytest.mark.parametrize("kind", ["jsonl", "lines"])
def test_line_merges_drop_each_sources_bom(kind):
    assert every_chunking(kind, [b"\xef\xbb\xbfa\n", b"\xef\xbb\xbfb"]) == b"a\nb\n"


@pytest.mark.parametrize("kind", STREAMED_KINDS)
def test_no_sources_or_only_empty_ones_give_nothing(kind):
    assert merged(kind, []) == b""
    assert merged(kind, [[], [b""], [b"", b""]]) == b""


def test_line_merge_keeps_bytes_otherwise():
    sources = [b"a\r\n\r\n", b"  b \n", b"\xff\xfe"]
    assert every_chunking("lines", sources) == b"a\r\n\r\n  b \n\xff\xfe\n"


def test_csv_keeps_the_first_header_once():
    sources = [b"id,v\n1,a\n", b"id,v\n2,b", b"id,v\n", b"id,v", b"id,v\n3,c\n4,d\n"]
    assert every_chunking("csv", sources) == b"id,v\n1,a\n2,b\n3,c\n4,d\n"


def test_csv_first_non_empty_source_gives_the_header():
    assert every_chunking("csv", [b"", b"h\n1\n", b"h\n2\n"]) == b"h\n1\n2\n"


def test_csv_header_only_output_still_has_its_header():
    assert every_chunking("csv", [b"h1,h2", b"h1,h2\n"]) == b"h1,h2\n"


def test_csv_repairs_with_the_headers_line_ending():
    sources = [b"h,i\r\n1,2", b"h,i\r\n3,4\r\n", b"\xef\xbb\xbfh,i\r\n5,6"]
    assert every_chunking("csv", sources) == b"h,i\r\n1,2\r\n3,4\r\n5,6\r\n"


def test_csv_keeps_quoted_line_breaks_in_rows():
    sources = [b'h\n"a\nb"\n', b'h\n"c\r\nd"\n']
    assert every_chunking("csv", sources) == b'h\n"a\nb"\n"c\r\nd"\n'


def test_concat_is_byte_exact():
    sources = [b"\xef\xbb\xbfab", b"", b"c\r", b"\n\x00d"]
    assert every_chunking("concat", sources) == b"\xef\xbb\xbfabc\r\n\x00d"


@pytest.mark.parametrize("kind", ["none", "command", "zip"])
def test_non_streamed_kinds_are_refused(kind):
    with pytest.raises(ValueError):
        merge_stream(kind, [])


def test_split_then_merge_round_trips():
    data = b"".join(b'{"n": %d}\n' % i for i in range(50))
    assert b"".join(merge_stream("jsonl", ([s] for s in split_jsonl([data], 7)))) == data
    table = b"id,text\r\n" + b"".join(b'%d,"x\r\ny"\r\n' % i for i in range(50))
    assert b"".join(merge_stream("csv", ([s] for s in split_csv([table], 6)))) == table


def test_merge_streams_source_by_source():
    opened: list[int] = []

    def source(i: int) -> Iterator[bytes]:
        opened.append(i)
        yield b"%d\n" % i

    def sources() -> Iterator[Iterator[bytes]]:
        for i in range(100):
            yield source(i)

    out = merge_stream("jsonl", sources())
    assert next(out) == b"0\n"
    assert opened == [0]


def lazy_source(size: int, header: bytes = b"") -> Iterator[bytes]:
    line = b'{"id": 1, "text": "' + b"x" * 60 + b'"}\n'
    block = line * (65536 // len(line))
    yield header
    for _ in range(size // len(block)):
        yield block


@pytest.mark.parametrize("kind", STREAMED_KINDS)
def test_memory_stays_bounded(kind):
    header = b"id,text\n" if kind == "csv" else b""
    tracemalloc.start()
    try:
        total = 0
        for chunk in merge_stream(kind, (lazy_source(5 << 20, header) for _ in range(8))):
            total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total >= 8 * (4 << 20)
    assert peak < 1 << 20, f"peak {peak / 2**20:.2f} MiB"

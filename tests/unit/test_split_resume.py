"""Resuming a split (shared.split.resume_shards): from any point its Marks noted, it yields exactly
the shards the whole split yields from there on, reading the input only from that point's offset."""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

import pytest

from shared import split
from shared.split import Marks, Resume, iter_shards, resume_shards
from tests.unit.test_split import random_chunks as pieces


@pytest.fixture
def small_grid(monkeypatch):
    """A grid of a few dozen bytes, so that small inputs span many of its cells."""
    monkeypatch.setattr(split, "GRID", 37)


def random_input(fmt: str, rng: random.Random, records: int) -> bytes:
    """Inputs with what makes offsets and records part ways: CRLF, blank lines, a BOM, quoted
    line breaks in csv, whitespace and multi-byte characters in json."""
    bom = b"\xef\xbb\xbf" if rng.random() < 0.3 else b""
    crlf = b"\r\n" if rng.random() < 0.5 else b"\n"
    if fmt == "json":
        elements = []
        for i in range(records):
            value = {"i": i, "s": "é" * rng.randint(0, 3), "l": list(range(rng.randint(0, 3)))}
            text = json.dumps(value, ensure_ascii=False, indent=rng.choice([None, 1]))
            elements.append(text + " " * rng.randint(0, 2))
        return bom + ("[" + ",\n ".join(elements) + "]\n").encode()
    lines = []
    if fmt == "csv":
        lines.append(b"id,text")
    for i in range(records):
        if rng.random() < 0.15:
            lines.append(b"" if fmt != "lines" or rng.random() < 0.5 else b"  ")
        if fmt == "csv" and rng.random() < 0.3:
            lines.append(b'%d,"two%slines ""q"""' % (i, crlf))
        else:
            lines.append(b"%d,%s" % (i, b"x" * rng.randint(0, 12)))
    body = crlf.join(lines)
    return bom + (body + crlf if rng.random() < 0.7 else body)


def shards_with_marks(fmt: str, chunks: list[bytes], sizing: dict) -> tuple[list[bytes], list[Resume]]:
    """Every shard, and after each the latest Resume the split noted (what a chunk of tasks ending
    there records)."""
    marks = Marks()
    shards, noted = [], []
    for shard in iter_shards(fmt, iter(chunks), marks=marks, **sizing):
        shards.append(shard)
        noted.append(marks.latest)
    return shards, noted


def reader(data: bytes, rng: random.Random, reads: list[int]) -> Callable[[int], Iterator[bytes]]:
    def read_from(offset: int) -> Iterator[bytes]:
        reads.append(offset)
        return iter(pieces(data[offset:], rng, 50))
    return read_from


SIZINGS = [{"items_per_task": 1}, {"items_per_task": 3}, {"items_per_task": 40}, {"tasks": 7}, {"tasks": 60}]


@pytest.mark.parametrize("fmt", ["jsonl", "lines", "csv", "json"])
@pytest.mark.parametrize("sizing", SIZINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_a_split_resumed_at_any_noted_point_gives_the_same_shards_from_there(fmt, sizing, small_grid):
    rng = random.Random(f"{fmt}{sizing}")
    resumed_past_the_start = 0
    for _ in range(12):
        data = random_input(fmt, rng, rng.randint(0, 120))
        if "tasks" in sizing:
            sizing = {**sizing, "total_bytes": len(data)}
        whole, noted = shards_with_marks(fmt, pieces(data, rng, rng.choice([16, 64, 400])), sizing)
        assert whole == list(iter_shards(fmt, [data], **sizing))  # noting marks changes nothing
        for cursor in range(1, len(whole)):
            at = noted[cursor - 1]
            assert at.first_whole <= cursor
            reads: list[int] = []
            resumed = resume_shards(fmt, reader(data, rng, reads), at, **sizing)
            assert list(resumed)[cursor - at.first_whole:] == whole[cursor:], (cursor, at)
            assert reads[-1] == at.offset  # the input is read from the noted offset (csv: its header too)
            resumed_past_the_start += at.offset > 0
    if fmt == "json" and "tasks" in sizing:
        assert resumed_past_the_start == 0  # its blocks depend on its refills: it starts over (split._shards)
    else:
        assert resumed_past_the_start > 0  # the marks do move on: resuming is not re-splitting from 0


def test_a_json_split_into_tasks_starts_over_and_loses_nothing():
    """Its blocks end at the first element after a refill, and a resumed split refills differently:
    resumed at its second shard's mark, this one once lost its last shard."""
    data = b"[22 , 22 , 22]"
    whole, noted = shards_with_marks("json", [data], {"tasks": 3, "total_bytes": len(data)})
    assert len(whole) == 3 and all(at == Resume() for at in noted)
    for cursor in range(1, 3):
        resumed = list(resume_shards("json", lambda o: iter([data[o:]]), noted[cursor - 1], tasks=3,
                                     total_bytes=len(data)))
        assert resumed[cursor:] == whole[cursor:]


@pytest.mark.parametrize("fmt", ["jsonl", "lines", "csv", "json"])
def test_a_split_resumed_notes_marks_a_later_one_can_resume_from(fmt, small_grid):
    """A continuation resumes from the mark before its cursor and notes marks for the next one."""
    rng = random.Random(fmt)
    data = random_input(fmt, rng, 300)
    sizing = {"items_per_task": 2}
    whole, noted = shards_with_marks(fmt, pieces(data, rng, 64), sizing)
    first = noted[len(whole) // 3]
    marks = Marks()
    again, later = [], []
    for shard in resume_shards(fmt, reader(data, rng, []), first, marks=marks, **sizing):
        again.append(shard)
        later.append(marks.latest)
    assert again == whole[first.first_whole:]
    second = later[len(again) // 2]
    assert second.offset > first.offset
    assert list(resume_shards(fmt, reader(data, rng, []), second, **sizing)) == whole[second.first_whole:]


def test_resume_reads_only_from_the_offset_on_a_large_input():
    """The point of it: a continuation late in a big input reads the rest, not the whole."""
    data = b"".join(b'{"i": %d}\n' % i for i in range(200_000))
    whole, noted = shards_with_marks("jsonl", [data[i:i + 65536] for i in range(0, len(data), 65536)],
                                     {"items_per_task": 10})
    at = noted[15_000]
    read = 0

    def read_from(offset: int) -> Iterator[bytes]:
        nonlocal read
        for i in range(offset, len(data), 65536):
            read += len(data[i:i + 65536])
            yield data[i:i + 65536]

    resumed = list(resume_shards("jsonl", read_from, at, items_per_task=10))
    assert resumed[15_001 - at.first_whole:] == whole[15_001:]
    assert read <= len(data) // 4 + 65536  # the last quarter, give or take a chunk


@pytest.mark.parametrize("doc", [None, [], "x", {"offset": -1}, {"offset": 1.5}, {"shard": True},
                                 {"offset": "3"}])
def test_a_resume_that_is_not_one_is_none(doc):
    assert Resume.of(doc) is None


def test_a_resume_round_trips_through_json():
    at = Resume(offset=1234, shard=56, have=7, counted=1200)
    assert Resume.of(json.loads(json.dumps(at.to_json()))) == at
    assert at.first_whole == 57 and Resume(10, 3).first_whole == 3


@pytest.mark.parametrize("fmt", ["jsonl", "lines"])
def test_a_byte_balanced_split_cuts_the_same_however_the_input_is_chunked(fmt, small_grid):
    """Its cuts map target offsets onto records block by block; blocks begin on a grid of the
    input's offsets (not where a download's chunks happen to end), so a resumed split can agree."""
    rng = random.Random(fmt)
    for _ in range(20):
        data = random_input(fmt, rng, rng.randint(1, 150))
        sizing = {"tasks": rng.randint(2, 40), "total_bytes": len(data)}
        expected = list(iter_shards(fmt, [data], **sizing))
        for largest in (1, 7, 64, 1000):
            assert list(iter_shards(fmt, iter(pieces(data, rng, largest)), **sizing)) == expected


def test_a_run_begun_before_the_grid_goes_on_cutting_where_its_chunks_end(small_grid):
    """A run submitting since before the grid (no resume point in its record) must keep its cuts:
    `grid=False` cuts where the download's chunks end, and resumes from the start."""
    data = random_input("jsonl", random.Random(1), 200)  # CRLF and blank lines
    chunks = pieces(data, random.Random(101), 300)
    sizing = {"tasks": 17, "total_bytes": len(data)}
    old = list(iter_shards("jsonl", iter(chunks), grid=False, **sizing))
    assert old != list(iter_shards("jsonl", iter(chunks), **sizing))  # the grid moves cuts of this input
    again = resume_shards("jsonl", lambda offset: iter(chunks) if offset == 0 else iter(()), Resume(),
                          grid=False, **sizing)
    assert list(again) == old

"""Streaming mergers: the task outputs of a run in, its merged output out.

Sources are the present task outputs in task order, each an iterable of byte chunks
(a blob download); the merged output is an iterator of byte chunks. Memory stays
bounded by one chunk: no source is ever held whole. The merged file's extension is
decided in one place, `shared.jobfile.output_extension`.
"""
from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass

from shared.split import strip_bom

STREAMED_KINDS = ("jsonl", "lines", "csv", "concat")  # the merge kinds done here; jobfile adds "none" and "command"

Source = Iterable[bytes]


@dataclass
class Carry:
    """What a merge in parts carries from one part to the next: the csv header's line ending once
    the header is out (None before: the next non-empty source's header is the one kept)."""

    csv_newline: bytes | None = None


def merge_stream(kind: str, sources: Iterable[Source], carry: Carry | None = None) -> Iterator[bytes]:
    """The merged output of `sources`, in order, for a streamable merge kind:

    - jsonl, lines: every source's bytes, with a line break added after a source that
      does not end with one (so the last line of one task never runs into the first of
      the next); empty sources add nothing; a leading UTF-8 byte order mark is dropped
      from each source (mid-file it would corrupt a line).
    - csv: as lines, but the header (the first line of the first non-empty source) is
      kept once and the first line of every later source is dropped. The header ends at
      its first line break, so a header with a quoted line break is not supported. A
      missing final line break is repaired with the header's own ending (LF or CRLF).
    - concat: the bytes of every source in order, unchanged.

    A merge in parts passes the same `carry` to each part, so the parts' outputs concatenated are
    the merge of all the sources. Raises ValueError for "none" and "command", which are not
    streamed merges.
    """
    if kind == "concat":
        return _concat(sources)
    if kind in ("jsonl", "lines"):
        return _lines(sources)
    if kind == "csv":
        return _csv(sources, carry or Carry())
    raise ValueError(f"no streaming merge for kind {kind!r}; expected one of {STREAMED_KINDS}")


def _concat(sources: Iterable[Source]) -> Iterator[bytes]:
    for source in sources:
        for chunk in source:
            if chunk:
                yield chunk


def _lines(sources: Iterable[Source]) -> Iterator[bytes]:
    for source in sources:
        last = b""
        for chunk in strip_bom(source):
            yield chunk
            last = chunk
        if last and not last.endswith(b"\n"):
            yield b"\n"


def _csv(sources: Iterable[Source], carry: Carry) -> Iterator[bytes]:
    for source in sources:
        chunks = strip_bom(source)
        if carry.csv_newline is None:
            carry.csv_newline = yield from _csv_first(chunks)
        else:
            yield from _csv_later(chunks, carry.csv_newline)


def _csv_first(chunks: Iterator[bytes]) -> Generator[bytes, None, bytes | None]:
    """Copy the first non-empty source whole; return its header's line ending, or None
    when the source was empty (so the next one counts as first)."""
    newline: bytes | None = None
    last = b""
    for chunk in chunks:
        if newline is None:
            at = chunk.find(b"\n")
            if at >= 0:
                before = chunk[at - 1:at] if at else last[-1:]
                newline = b"\r\n" if before == b"\r" else b"\n"
        yield chunk
        last = chunk
    if not last:
        return None
    newline = newline or b"\n"
    if not last.endswith(b"\n"):
        yield newline
    return newline


def _csv_later(chunks: Iterator[bytes], newline: bytes) -> Iterator[bytes]:
    """Copy a later source without its first line (its header)."""
    in_header = True
    last = b""
    for chunk in chunks:
        if in_header:
            at = chunk.find(b"\n")
            if at < 0:
                continue
            in_header = False
            chunk = chunk[at + 1:]
            if not chunk:
                continue
        yield chunk
        last = chunk
    if last and not last.endswith(b"\n"):
        yield newline

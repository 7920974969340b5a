"""The output manifest (shared/manifest.py): parsing, checking a listing, verifying a stream."""
from __future__ import annotations

import hashlib

import pytest

from shared.errors import BatchdropError
from shared.manifest import (
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestEntry,
    ManifestError,
    Missing,
    OutputMismatch,
    SizeDiffers,
    check_listing,
    parse,
    verify_stream,
)

DATA = b'{"a": 1}\n' * 1000
SHA = hashlib.sha256(DATA).hexdigest()
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def manifest(*lines: str) -> bytes:
    return "".join(f"{line}\n" for line in ("batchdrop-manifest 1", *lines)).encode()


def chunks(data: bytes, size: int = 777) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# ---------------------------------------------------------------- parse


def test_parses_entries_with_spaces_nesting_and_a_missing_hash():
    m = parse(manifest(f"0 {EMPTY_SHA} a/b c/empty", f"{len(DATA)} {SHA} output.jsonl", "12 - with space .txt"))
    assert m.entries == (ManifestEntry("a/b c/empty", 0, EMPTY_SHA), ManifestEntry("output.jsonl", len(DATA), SHA),
                         ManifestEntry("with space .txt", 12, None))
    assert m.get("output.jsonl") == ManifestEntry("output.jsonl", len(DATA), SHA)
    assert m.get("nope") is None and "with space .txt" in m and len(m) == 3


def test_a_task_that_wrote_nothing_has_a_header_only():
    assert parse(b"batchdrop-manifest 1\n") == Manifest(())


def test_a_carriage_return_is_part_of_a_name_not_a_line_break():
    assert parse(manifest("1 - a\rb")).entries == (ManifestEntry("a\rb", 1, None),)


@pytest.mark.parametrize("data, says", [
    (b"", "line break"),
    (b"batchdrop-manifest 1", "line break"),
    (manifest("1 - a")[:-1], "line break"),  # cut short
    (b"batchdrop-manifest 2\n", "does not start"),
    (b"\xef\xbb\xbfbatchdrop-manifest 1\n", "does not start"),
    (manifest("x - a"), "bad size"),
    (manifest("-1 - a"), "bad size"),
    (manifest("+1 - a"), "bad size"),
    (manifest("01 - a"), "bad size"),
    (manifest("1" * 20 + " - a"), "bad size"),
    (manifest(" 1 - a"), "bad size"),
    (manifest("1 " + SHA.upper() + " a"), "bad SHA-256"),
    (manifest("1 " + SHA[:-1] + " a"), "bad SHA-256"),
    (manifest("1 md5:abc a"), "bad SHA-256"),
    (manifest("1 -"), "is empty"),
    (manifest("1 - "), "is empty"),
    (manifest("1"), "bad SHA-256"),
    (manifest("1 - /etc/passwd"), "absolute"),
    (manifest("1 - ../x"), "segment"),
    (manifest("1 - a/../../x"), "segment"),
    (manifest("1 - a/./b"), "segment"),
    (manifest("1 - a//b"), "segment"),
    (manifest("1 - a/"), "segment"),
    (manifest("1 - a\0b"), "NUL"),
    (manifest("1 - " + "a" * 1025), "over 1024"),
    (manifest("1 - a", "2 - a"), "listed twice"),
    (manifest("1 - b", "2 - a"), "out of order"),
    (manifest("1 - a", ""), "bad size"),  # a blank line
    (b"batchdrop-manifest 1\n1 - \xff\n", "not UTF-8"),
])
def test_anything_malformed_is_a_manifest_error(data, says):
    with pytest.raises(ManifestError, match=says):
        parse(data)


def test_an_oversized_manifest_is_refused_before_it_is_read():
    with pytest.raises(ManifestError, match="over the limit"):
        parse(b"batchdrop-manifest 1\n" + b"0 - x\n" * (MAX_MANIFEST_BYTES // 6 + 1))
    assert issubclass(ManifestError, BatchdropError)


def test_order_is_byte_order_as_sort_gives_it_in_the_c_locale():
    # " " < "." < "/" < "A" < "_" < "a" < "é" (0xc3 0xa9 in UTF-8)
    names = ["a b", "a.b", "a/b", "aA", "a_", "aa", "aé"]
    assert [e.path for e in parse(manifest(*(f"1 - {n}" for n in names))).entries] == names
    assert sorted(n.encode() for n in names) == [n.encode() for n in names]


# ---------------------------------------------------------------- check_listing


def test_listing_problems_name_missing_and_resized_files():
    m = parse(manifest(f"10 {SHA} a", "0 - empty", "5 - gone", "7 - short"))
    listed = {"a": 10, "empty": 0, "short": 6, "unrelated": 3}
    assert check_listing(m, listed) == [Missing("gone", 5), SizeDiffers("short", expected=7, found=6)]
    assert str(Missing("gone", 5)) == "'gone' (5 bytes) was written but is not in storage"
    assert str(SizeDiffers("short", 7, 6)) == "'short' is 6 bytes in storage, 7 were written"
    assert check_listing(m, {"a": 10, "empty": 0, "gone": 5, "short": 7}) == []
    assert check_listing(parse(manifest()), {"stray": 1}) == []


# ---------------------------------------------------------------- verify_stream


def test_a_matching_stream_passes_through_unchanged():
    entry = ManifestEntry("output.jsonl", len(DATA), SHA)
    assert b"".join(verify_stream(chunks(DATA), entry, "t000001")) == DATA
    assert b"".join(verify_stream([], ManifestEntry("e", 0, EMPTY_SHA), "t000001")) == b""


def test_one_changed_byte_is_a_mismatch_at_the_end():
    changed = DATA[:500] + b"X" + DATA[501:]
    entry = ManifestEntry("output.jsonl", len(DATA), SHA)
    out = []
    with pytest.raises(OutputMismatch) as caught:
        for chunk in verify_stream(chunks(changed), entry, "t000001"):
            out.append(chunk)
    assert b"".join(out) == changed  # everything passed through: the error comes after the last chunk
    e = caught.value
    assert (e.task, e.path, e.expected, e.found) == ("t000001", "output.jsonl", entry,
                                                     ManifestEntry("output.jsonl", len(DATA),
                                                                   hashlib.sha256(changed).hexdigest()))
    assert str(e).startswith("task t000001: output 'output.jsonl' has SHA-256 ")
    assert isinstance(e, BatchdropError)


def test_a_truncated_or_longer_stream_is_a_mismatch():
    entry = ManifestEntry("o", len(DATA), SHA)
    with pytest.raises(OutputMismatch, match=f"'o' is {len(DATA) - 1} bytes, its task wrote {len(DATA)}") as caught:
        b"".join(verify_stream(chunks(DATA[:-1]), entry, "t000002"))
    assert caught.value.found.size == len(DATA) - 1
    with pytest.raises(OutputMismatch, match="is 0 bytes"):
        b"".join(verify_stream([], entry, "t000002"))
    with pytest.raises(OutputMismatch, match=f"is {len(DATA) + 1} bytes"):
        b"".join(verify_stream(chunks(DATA + b"\n"), entry, "t000002"))


def test_without_a_hash_only_the_size_is_checked():
    entry = parse(manifest(f"{len(DATA)} - o")).entries[0]
    assert entry.sha256 is None
    changed = DATA[:10] + b"Y" + DATA[11:]
    assert b"".join(verify_stream(chunks(changed), entry, "t")) == changed  # same size: nothing to tell
    with pytest.raises(OutputMismatch) as caught:
        b"".join(verify_stream(chunks(DATA[:100]), entry, "t"))
    assert caught.value.found == ManifestEntry("o", 100, None)


def test_a_listing_and_streams_together_catch_a_missing_entry():
    """What a merge does: the listing first (cheap), then every stream it reads."""
    m = parse(manifest("3 - extra.txt", f"{len(DATA)} {SHA} output.jsonl"))
    assert check_listing(m, {"output.jsonl": len(DATA)}) == [Missing("extra.txt", 3)]
    entry = m.get("output.jsonl")
    assert entry is not None
    assert b"".join(verify_stream(chunks(DATA, 4096), entry, "t000000")) == DATA

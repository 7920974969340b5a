"""A failed task's captured stdout/stderr in results are capped at their last MiB, say what was cut, and
are scrubbed of secrets; the report's stderr tail stays as it was."""
from __future__ import annotations

import json
import re

from shared import storage
from shared.accept import accept
from shared.finalize import LOG_COPY_BYTES, STDERR_TAIL_BYTES
from tests.pipeline.helpers import drop, results_blob, run_to_end

MIB = 1024 * 1024
SAS = "https://acct.blob.core.windows.net/c/input.jsonl?sv=2024-08-04&sr=b&sp=r&sig=TOPSECRETsignature0123456789"
CUT = re.compile(rb"\[batchdrop: the first ([\d,]+) bytes of ([\d,]+) were cut; this is the last ([\d,]+)\]\n")

# 3 MiB of 100-byte lines on each stream, then a last line; the SAS sits in the part that is kept
NOISY = (f'yes {"o" * 99} | head -c {3 * MIB}; echo "fetched {SAS}"; '
         f'yes {"e" * 99} | head -c {3 * MIB} >&2; echo "reading {SAS}" >&2; echo "final error: it broke" >&2; '
         "exit 1")


def number(raw: bytes) -> int:
    return int(raw.replace(b",", b""))


def test_failed_task_logs_are_capped_scrubbed_and_say_what_was_cut(ctx):
    d = drop(ctx, "noisy.json", {"command": NOISY, "input": {"items": [1]}, "retries": 0})
    accept(ctx, d.container, d.name)
    final = run_to_end(ctx, d.run_id, deadline_s=120)
    assert final["state"] == "failed", final

    last_lines = {"stdout.txt": f"fetched {SAS}\n".encode(),
                  "stderr.txt": f"reading {SAS}\nfinal error: it broke\n".encode()}
    for name, ending in last_lines.items():
        copied = results_blob(ctx, f"{d.run_id}/tasks/t000000/{name}")
        header = CUT.match(copied)
        assert header, copied[:200]
        first, total, last = (number(g) for g in header.groups())
        assert total == 3 * MIB + len(ending) and last == LOG_COPY_BYTES and first == total - last
        body = copied[header.end():]
        assert b"TOPSECRET" not in body
        assert body.endswith(storage.scrub_bytes(ending))
        assert len(body) == last - len(b"TOPSECRETsignature0123456789") + len(b"<redacted>")

    report = json.loads(results_blob(ctx, f"{d.run_id}/report.json"))
    tail = report["entries"][0]["stderr_tail"]
    assert tail.endswith("sig=<redacted>\nfinal error: it broke\n")
    assert len(tail) <= STDERR_TAIL_BYTES and "TOPSECRET" not in tail


def test_small_logs_are_copied_whole_without_a_cut_line(ctx):
    d = drop(ctx, "small.json", {"command": f'echo "out {SAS}"; echo oops >&2; exit 3', "input": {"items": [1]},
                                 "retries": 0})
    accept(ctx, d.container, d.name)
    assert run_to_end(ctx, d.run_id)["state"] == "failed"
    assert results_blob(ctx, f"{d.run_id}/tasks/t000000/stderr.txt") == b"oops\n"
    assert results_blob(ctx, f"{d.run_id}/tasks/t000000/stdout.txt") == storage.scrub(f"out {SAS}\n").encode()


def test_a_secret_cut_in_half_by_the_tail_is_left_out_whole():
    text = b"x" * 100 + b" https://a/b?sv=1&sig=ABCDEFGHIJKLMNOP&se=2 " + b"y" * 100
    cut = text.index(b"IJKL")  # the tail would start with the signature's second half
    data, start = storage.scrub_tail(text, cut)
    assert b"IJKL" not in data and b"MNOP" not in data
    assert data == b"&se=2 " + b"y" * 100 and start == text.index(b"&se=2")
    cut_in_prefix = text.index(b"ig=")  # no "sig=" left for scrub to recognise
    assert b"MNOP" not in storage.scrub_tail(text, cut_in_prefix)[0]
    assert storage.scrub_tail(text, text.index(b"yyy")) == (b"y" * 100, text.index(b"yyy"))
    assert storage.scrub_tail(b"key SharedKey acct:SIGNATURE rest", 15)[0] == b" rest"

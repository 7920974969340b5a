"""One measured step of benchmarks.split_merge_bench, run in its own interpreter.

    python -m benchmarks.split_merge_steps STEP CONN BATCH_URL BATCH_ACCOUNT BATCH_KEY [ARG]

Prints one JSON line: seconds, pieces, peak_rss_mib (this process's own peak).
"""
from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

from shared import merge, naming, split, storage
from shared.context import Context
from shared.settings import Settings

CONCURRENCY = 16


def context(conn: str, url: str, account: str, key: str) -> Context:
    env = {"AzureWebJobsStorage": conn, "BATCH_ACCOUNT_URL": url, "BATCH_ACCOUNT_NAME": account,
           "BATCH_ACCOUNT_KEY": key, "UPLOAD_CONCURRENCY": str(CONCURRENCY)}
    return Context.build(Settings.from_mapping(env), env)


def copy_split(ctx: Context, shard_bytes: int) -> int:
    """Baseline: download the blob and upload it again as same-sized pieces, in parallel."""
    container = ctx.blobs.get_container_client("copies")
    buffer = bytearray()
    count = 0
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = []
        for chunk in storage.read_chunks(ctx.blobs, "data", "big.jsonl"):
            buffer += chunk
            while len(buffer) >= shard_bytes:
                piece = bytes(buffer[:shard_bytes])
                del buffer[:shard_bytes]
                futures.append(pool.submit(container.upload_blob, f"piece/{count:06d}", piece, overwrite=True))
                count += 1
            if len(futures) > CONCURRENCY * 2:
                futures.pop(0).result()
        if buffer:
            futures.append(pool.submit(container.upload_blob, f"piece/{count:06d}", bytes(buffer), overwrite=True))
            count += 1
        for f in futures:
            f.result()
    return count


def do_split(ctx: Context, items_per_task: int) -> int:
    """The pipeline's own path: streaming splitter + bounded parallel upload (shared.submit's chunks)."""
    chunks = storage.read_chunks(ctx.blobs, "data", "big.jsonl")
    shards = split.iter_shards("jsonl", chunks, items_per_task=items_per_task)
    named = ((naming.shard_name(i, "input.jsonl"), data) for i, data in enumerate(shards))
    return storage.upload_many(ctx.blobs, "shards", named, CONCURRENCY)


def download(ctx: Context) -> int:
    """Baseline of the re-split: read the blob through, nothing else."""
    return sum(1 for _ in storage.read_chunks(ctx.blobs, "data", "big.jsonl"))


def resplit(ctx: Context, items_per_task: int) -> int:
    """What a continuation of intake does up to its cursor: read and split the input, upload nothing."""
    chunks = storage.read_chunks(ctx.blobs, "data", "big.jsonl")
    return sum(1 for _ in split.iter_shards("jsonl", chunks, items_per_task=items_per_task))


LATE = 0.9  # a late continuation: its cursor is at this share of the input's shards


def late_cursor(ctx: Context, items_per_task: int) -> tuple[int, split.Resume]:
    """The cursor of a late continuation and the resume point a chunk ending there records (found by a
    whole split: not part of what is timed)."""
    marks = split.Marks()
    noted = [marks.latest for _ in split.iter_shards("jsonl", storage.read_chunks(ctx.blobs, "data", "big.jsonl"),
                                                     items_per_task=items_per_task, marks=marks)]
    cursor = int(len(noted) * LATE)
    return cursor, noted[cursor - 1]


def resume(ctx: Context, items_per_task: int, cursor: int, at: split.Resume) -> int:
    """What a continuation does to reach its cursor now: split from the resume point its record holds
    (reading the input from that offset on) up to the cursor's shard."""
    def read_from(offset: int) -> Iterator[bytes]:
        return storage.read_chunks(ctx.blobs, "data", "big.jsonl", offset=offset)
    shards = split.resume_shards("jsonl", read_from, at, items_per_task=items_per_task)
    return sum(1 for _ in islice(shards, cursor - at.first_whole + 1))


def resplit_to(ctx: Context, items_per_task: int, cursor: int) -> int:
    """What a continuation did to reach its cursor before: split from the start up to the cursor's shard."""
    chunks = storage.read_chunks(ctx.blobs, "data", "big.jsonl")
    return sum(1 for _ in islice(split.iter_shards("jsonl", chunks, items_per_task=items_per_task), cursor + 1))


def shard_ids(ctx: Context) -> list[str]:
    return sorted(b.name for b in ctx.blobs.get_container_client("shards").list_blobs())


def copy_merge(ctx: Context) -> int:
    """Baseline: download every piece in order and upload the bytes as one committed blob."""
    names = shard_ids(ctx)
    chunks = (c for n in names for c in storage.read_chunks(ctx.blobs, "shards", n))
    storage.commit_stream(ctx.blobs, "results", "copy.jsonl", chunks)
    return len(names)


def do_merge(ctx: Context) -> int:
    """The pipeline's own path: finalize's ordered sources + merge_stream + one commit."""
    names = shard_ids(ctx)
    # shard blobs stand in for task outputs: same bytes, same count (finalize's reads: shared.merge_parts)
    sources = storage.stream_blobs(ctx.blobs, "shards", names)
    storage.commit_stream(ctx.blobs, "results", "output.jsonl", merge.merge_stream("jsonl", sources))
    return len(names)


def main() -> None:
    step, conn, url, account, key, *rest = sys.argv[1:]
    ctx = context(conn, url, account, key)
    start = time.perf_counter()
    if step == "copy-split":
        pieces = copy_split(ctx, int(rest[0]))
    elif step == "split":
        pieces = do_split(ctx, int(rest[0]))
    elif step == "download":
        pieces = download(ctx)
    elif step == "resplit":
        pieces = resplit(ctx, int(rest[0]))
    elif step in ("late-resplit", "late-resume"):
        cursor, at = late_cursor(ctx, int(rest[0]))
        start = time.perf_counter()  # the whole split that found the resume point is not timed
        pieces = (resplit_to(ctx, int(rest[0]), cursor) if step == "late-resplit"
                  else resume(ctx, int(rest[0]), cursor, at))
    elif step == "copy-merge":
        pieces = copy_merge(ctx)
    elif step == "merge":
        pieces = do_merge(ctx)
    else:
        sys.exit(f"unknown step {step}")
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": round(seconds, 3), "pieces": pieces,
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()

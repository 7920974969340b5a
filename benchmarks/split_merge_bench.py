"""Split of a 1 GiB JSONL blob and merge of 1 GiB of task outputs: peak memory and throughput
against a plain download-and-upload of the same bytes, measured in the same run.

    .venv/bin/python -m benchmarks.split_merge_bench [--size-mib 1024] [--items-per-task 5000]

Each step runs in a fresh interpreter (benchmarks.split_merge_steps) so that its peak RSS is
its own. Goals: peak memory under 256 MiB for split and for merge; each within 1.5x of the plain
copy of the same bytes. Also measured: the re-split a continuation of intake did up to its cursor
(read and split, nothing uploaded) against a plain download of the same blob, and for a cursor at
90% of the input, what a continuation does now to reach it (resume at the offset its record holds)
against that re-split from the start.
"""
from __future__ import annotations

import argparse
import base64
import json
import uuid

from benchmarks.common import run_child, services, table

RECORD = 200  # bytes per JSONL record, newline included


def make_blob(service, container: str, name: str, size: int) -> int:
    """Upload `size` bytes of JSONL generated on the fly (staged blocks, never all in memory)."""
    client = service.get_blob_client(container, name)
    block_ids, written, n = [], 0, 0
    while written < size:
        lines = []
        for _ in range(40_000):
            body = json.dumps({"id": n, "text": ""})
            lines.append(body[:-2] + '"' + "x" * (RECORD - len(body) - 1) + '"}')
            n += 1
        block = ("\n".join(lines) + "\n").encode()
        block_id = base64.b64encode(uuid.uuid4().bytes).decode()
        client.stage_block(block_id, block)
        block_ids.append(block_id)
        written += len(block)
    client.commit_block_list(block_ids)
    return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--items-per-task", type=int, default=5000)
    args = parser.parse_args()
    with services(azurite_in_memory=False) as (azurite, emulator):
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        for name in ("data", "shards", "copies", "results"):
            service.create_container(name)
        size = make_blob(service, "data", "big.jsonl", args.size_mib * 1024 * 1024)
        conn = azurite.connection_string
        common = [conn, emulator.url, emulator.account, emulator.key]
        shard_bytes = args.items_per_task * RECORD
        steps = {
            "split: plain copy (baseline)": run_child("benchmarks.split_merge_steps", "copy-split", *common,
                                                      str(shard_bytes)),
            "split: iter_shards + upload": run_child("benchmarks.split_merge_steps", "split", *common,
                                                     str(args.items_per_task)),
            "re-split: plain download (baseline)": run_child("benchmarks.split_merge_steps", "download", *common),
            "re-split: iter_shards, no upload": run_child("benchmarks.split_merge_steps", "resplit", *common,
                                                          str(args.items_per_task)),
            "late cursor: plain re-split from the start (before)": run_child(
                "benchmarks.split_merge_steps", "late-resplit", *common, str(args.items_per_task)),
            "late cursor: resume at the recorded offset": run_child("benchmarks.split_merge_steps", "late-resume",
                                                                    *common, str(args.items_per_task)),
            "merge: plain copy (baseline)": run_child("benchmarks.split_merge_steps", "copy-merge", *common),
            "merge: merge_stream + commit": run_child("benchmarks.split_merge_steps", "merge", *common),
        }
    mib = size / 2**20
    rows = []
    names = list(steps)
    for name in names:
        r = steps[name]
        base = next(steps[n] for n in names if n.startswith(name.split(":")[0] + ": plain"))
        rows.append((name, f"{r['seconds']:.1f}", f"{mib / r['seconds']:.0f}", f"{r['seconds'] / base['seconds']:.2f}",
                     f"{r['peak_rss_mib']:.0f}", r.get("pieces", "")))
    print(f"input: {mib:.0f} MiB of JSONL, {size // RECORD} records, {args.items_per_task} per shard")
    print(table(rows, ("step", "seconds", "MiB/s", "ratio", "peak RSS MiB", "blobs")))
    print(json.dumps({"benchmark": "split_merge", "mib": round(mib), **{
        k.replace(": ", "_").replace(" ", "_").replace("(", "").replace(")", "").replace("+", "and"): v
        for k, v in steps.items()}}))


if __name__ == "__main__":
    main()

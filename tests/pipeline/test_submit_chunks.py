"""Submission in chunks (issue 12): every input form resumes from the cursor in status.json, a
crash between or inside chunks replays safely, a cancel stops a submission, the monitor never
finalizes a run still submitting and re-drives a stalled one.

INTAKE_BUDGET_SECONDS=0 makes each invocation submit one chunk, SUBMIT_CHUNK_TASKS=7 makes chunks
small: a run of a few dozen tasks goes through many continuations, each delivered here by hand as the
queue trigger would."""
from __future__ import annotations

import csv
import io
import json
import time
from datetime import timedelta

import pytest

from shared import batch as batch_module
from shared import submit
from shared.accept import accept, continue_submission
from shared.runs import utc_now
from shared.watch import REDRIVE_AFTER, watch
from tests.pipeline.helpers import (
    COPY,
    build_context,
    drop,
    put_data,
    results_blob,
    run_to_end,
    status,
    wait_for,
    work_containers_left,
)

CHUNK = 7


@pytest.fixture
def chunked(env):
    return build_context({**env, "INTAKE_BUDGET_SECONDS": "0", "SUBMIT_CHUNK_TASKS": str(CHUNK)})


def continuations(ctx) -> list[dict]:
    """Take the waiting continuation messages off the queue."""
    found = []
    for msg in ctx.submit_queue.receive_messages(messages_per_page=32, visibility_timeout=30):
        found.append(json.loads(msg.content))
        ctx.submit_queue.delete_message(msg)
    return found


def submit_all(ctx, run_id: str) -> list[int]:
    """Deliver continuations until the run is all in; the cursor after each invocation."""
    cursors = [status(ctx, run_id)["submitted"]]
    for _ in range(1000):
        waiting = continuations(ctx)
        if not waiting:
            return cursors
        assert [m["run_id"] for m in waiting] == [run_id]
        assert waiting[0]["next_task"] == cursors[-1]
        continue_submission(ctx, submit.run_id_of_continuation(json.dumps(waiting[0])))
        cursors.append(status(ctx, run_id)["submitted"])
    raise AssertionError("the submission never ended")


def task_ids(batch, run_id: str) -> list[str]:
    return sorted(t.id for t in batch.list_tasks(run_id))


def jsonl(data: bytes) -> list:
    return [json.loads(x) for x in data.splitlines()]


RECORDS = [{"n": i, "text": f"record {i}"} for i in range(45)]


def inputs(ctx) -> dict[str, tuple[dict, int, object]]:
    """Input form -> (job file fields, tasks, what the merged output must hold)."""
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["n", "text"])
    writer.writerows([r["n"], r["text"]] for r in RECORDS)
    for i in range(23):
        put_data(ctx, f"parts/p{i:03d}.txt", f"part {i}\n".encode())
    return {
        "items": ({"input": {"items": RECORDS}, "items_per_task": 2}, 23, RECORDS),
        "jsonl": ({"input": {"blob": put_data(ctx, "in.jsonl", lines)}, "items_per_task": 3}, 15, RECORDS),
        "json": ({"input": {"blob": put_data(ctx, "in.json", json.dumps(RECORDS).encode())}}, 45, RECORDS),
        "csv": ({"input": {"blob": put_data(ctx, "in.csv", table.getvalue().encode())}, "items_per_task": 4}, 12,
                table.getvalue()),
        "lines": ({"input": {"blob": put_data(ctx, "in.txt", b"".join(f"line {i}\n".encode() for i in range(40)))},
                   "tasks": 20}, 20, "".join(f"line {i}\n" for i in range(40))),
        "prefix": ({"input": {"prefix": f"{ctx.settings.data_container}/parts/"}}, 23,
                   "".join(f"part {i}\n" for i in range(23))),
    }


@pytest.mark.parametrize("form", ["items", "jsonl", "json", "csv", "lines", "prefix"])
def test_each_input_form_goes_in_chunk_by_chunk_and_merges_as_one_run(chunked, batch, form):
    ctx = chunked
    fields, total, expected = inputs(ctx)[form]
    d = drop(ctx, f"{form}.json", {"command": COPY, **fields})
    accept(ctx, d.container, d.name)
    first = status(ctx, d.run_id)
    assert (first["state"], first["tasks"]["total"], first["submitted"]) == ("running", total, CHUNK)
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(CHUNK)]  # tasks start before the rest is split
    cursors = submit_all(ctx, d.run_id)
    assert cursors == [min(total, n) for n in range(CHUNK, total + CHUNK, CHUNK)]
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(total)]
    job_env = {e.name: e.value for e in batch.get_job(d.run_id).common_environment_settings or []}
    assert job_env["TASK_COUNT"] == str(total)  # counted before the job was created
    final = run_to_end(ctx, d.run_id, deadline_s=120)
    assert final["state"] == "succeeded" and final["submitted"] == total
    merged = results_blob(ctx, final["output"].split("/", 1)[1])
    assert (jsonl(merged) if isinstance(expected, list) else merged.decode()) == expected
    assert ctx.runs.kept_job_file(d.run_id) is not None
    assert watch(ctx)[d.run_id] == "forgotten"
    assert ctx.runs.kept_job_file(d.run_id) is None  # the copy goes when the monitor retires the run


def test_the_budget_decides_how_much_one_invocation_submits(env, batch):
    """A generous budget submits everything in one invocation (chunks grow from FIRST_CHUNK on)."""
    ctx = build_context({**env, "INTAKE_BUDGET_SECONDS": "60", "SUBMIT_CHUNK_TASKS": "50"})
    d = drop(ctx, "budget.json", {"command": COPY, "input": {"items": list(range(230))}})
    accept(ctx, d.container, d.name)
    assert status(ctx, d.run_id)["submitted"] == 230 and continuations(ctx) == []
    assert run_to_end(ctx, d.run_id, deadline_s=120)["state"] == "succeeded"


def test_a_chunk_that_slows_down_stops_at_the_budget_and_the_rest_goes_on_later(env, batch, monkeypatch):
    """A chunk is sized from the rate measured so far; when storage slows down mid-chunk it stops taking
    shards at the budget's end (after at least one), so the invocation overruns by in-flight work only."""
    from shared import storage

    real_upload = storage.upload_many

    def slow(service, container, blobs, concurrency):  # storage answering 20 times slower
        def paced():
            for blob in blobs:
                time.sleep(0.05)
                yield blob
        return real_upload(service, container, paced(), concurrency)

    ctx = build_context({**env, "INTAKE_BUDGET_SECONDS": "1", "SUBMIT_CHUNK_TASKS": "1000"})
    d = drop(ctx, "slowdown.json", {"command": COPY, "input": {"items": list(range(60))}})
    monkeypatch.setattr(storage, "upload_many", slow)
    began = time.monotonic()
    accept(ctx, d.container, d.name)
    took = time.monotonic() - began
    monkeypatch.setattr(storage, "upload_many", real_upload)

    first = status(ctx, d.run_id)["submitted"]
    assert 1 <= first < 60  # the first chunk (60 tasks, 3 s at this pace) was cut at the budget
    assert took < 2.5, took  # the budget (1 s) plus what was in flight, not the whole chunk
    assert submit_all(ctx, d.run_id)[-1] == 60
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(60)]
    assert run_to_end(ctx, d.run_id, deadline_s=120)["state"] == "succeeded"


def test_a_crash_inside_a_chunk_replays_it_and_every_task_is_there_once(chunked, batch, monkeypatch):
    ctx = chunked
    d = drop(ctx, "crash.json", {"command": COPY, "input": {"items": list(range(30))}})
    accept(ctx, d.container, d.name)
    real_add = batch_module.add_tasks
    monkeypatch.setattr(batch_module, "add_tasks", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("died")))
    [message] = continuations(ctx)
    with pytest.raises(ConnectionError):
        continue_submission(ctx, message["run_id"])  # its shards went up, its tasks did not
    assert status(ctx, d.run_id)["submitted"] == CHUNK
    monkeypatch.setattr(batch_module, "add_tasks", real_add)
    continue_submission(ctx, d.run_id)  # the queue's redelivery: the same chunk again
    assert status(ctx, d.run_id)["submitted"] == 2 * CHUNK
    submit_all(ctx, d.run_id)
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(30)]
    final = run_to_end(ctx, d.run_id, deadline_s=120)
    assert final["state"] == "succeeded"
    assert jsonl(results_blob(ctx, f"{d.run_id}/output.jsonl")) == list(range(30))


def test_a_chunk_in_batch_but_not_recorded_is_found_there_on_replay(chunked, batch, monkeypatch):
    """The host dies after adding a chunk's tasks, before status.json says so: the replay adds the
    same tasks again, which Batch answers TaskExists and counts as added."""
    ctx = chunked
    d = drop(ctx, "unrecorded.json", {"command": COPY, "input": {"items": list(range(20))}})
    accept(ctx, d.container, d.name)
    monkeypatch.setattr(ctx.runs, "note_submitted", lambda *a: (_ for _ in ()).throw(ConnectionError("died")))
    with pytest.raises(ConnectionError):
        continue_submission(ctx, continuations(ctx)[0]["run_id"])
    assert len(task_ids(batch, d.run_id)) == 2 * CHUNK and status(ctx, d.run_id)["submitted"] == CHUNK
    monkeypatch.undo()
    continue_submission(ctx, d.run_id)
    assert status(ctx, d.run_id)["submitted"] == 2 * CHUNK
    submit_all(ctx, d.run_id)
    assert run_to_end(ctx, d.run_id, deadline_s=120)["state"] == "succeeded"
    assert jsonl(results_blob(ctx, f"{d.run_id}/output.jsonl")) == list(range(20))


def test_the_trigger_retry_of_an_intake_that_died_between_chunks_goes_on(chunked, batch):
    ctx = chunked
    d = drop(ctx, "retry.json", {"command": COPY, "input": {"items": list(range(16))}})
    accept(ctx, d.container, d.name)
    continuations(ctx)  # lost with a dead host
    accept(ctx, d.container, d.name)  # the blob trigger delivers the job file again
    assert status(ctx, d.run_id)["submitted"] == 2 * CHUNK
    submit_all(ctx, d.run_id)
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(16)]


def test_the_monitor_never_finalizes_a_run_still_submitting_and_redrives_a_stalled_one(chunked, env, batch):
    ctx = chunked
    d = drop(ctx, "stall.json", {"command": COPY, "input": {"items": list(range(10))}})
    accept(ctx, d.container, d.name)
    assert continuations(ctx)  # lost: nobody goes on with the submission
    wait_for(lambda: batch.get_job_task_counts(d.run_id).task_counts.completed == CHUNK, what="first chunk done")
    assert watch(ctx)[d.run_id] in ("updated", "no change")
    assert status(ctx, d.run_id)["state"] == "running"  # all its tasks in Batch are done, but not all are in
    later = build_context({**env, "INTAKE_BUDGET_SECONDS": "0", "SUBMIT_CHUNK_TASKS": str(CHUNK)},
                          clock=lambda: utc_now() + REDRIVE_AFTER + timedelta(seconds=5))
    assert watch(later)[d.run_id] == "submission re-requested"
    run = ctx.runs.read(d.run_id)
    assert run.redrives == {"submit": 1} and "no submission was at work" in run.last_redrive["why"]
    submit_all(ctx, d.run_id)
    final = run_to_end(ctx, d.run_id, deadline_s=120)
    assert final["state"] == "succeeded" and final["redrives"] == {"submit": 1}
    assert jsonl(results_blob(ctx, f"{d.run_id}/output.jsonl")) == list(range(10))


def test_cancel_of_a_run_still_submitting_stops_the_submission_and_leaves_nothing(chunked, batch):
    ctx = chunked
    d = drop(ctx, "cancelme.json", {"command": "sleep 5", "input": {"items": list(range(30))}})
    accept(ctx, d.container, d.name)
    stop = drop(ctx, "stop.json", {"cancel": d.run_id})
    accept(ctx, stop.container, stop.name)
    assert status(ctx, d.run_id)["state"] == "cancelled"
    for message in continuations(ctx):
        continue_submission(ctx, message["run_id"])  # a continuation already in the queue does nothing
    assert status(ctx, d.run_id)["submitted"] == CHUNK
    run_to_end(ctx, d.run_id)
    assert work_containers_left(ctx) == []
    wait_for(lambda: d.run_id not in [j.id for j in batch.list_jobs() if j.state != "deleting"], what="job gone")


def prefix_run(ctx, folder: str, count: int):
    """Blobs p000.. under `folder`/ ("part i" each), a job file of one task per blob, accepted: its
    first chunk is in."""
    for i in range(count):
        put_data(ctx, f"{folder}/p{i:03d}.txt", f"part {i}\n".encode())
    d = drop(ctx, f"{folder}.json", {"command": COPY, "input": {"prefix": f"{ctx.settings.data_container}/{folder}/"}})
    accept(ctx, d.container, d.name)
    return d


def test_a_prefix_that_changes_while_submitting_fails_the_run_saying_why(chunked, batch):
    ctx = chunked
    d = prefix_run(ctx, "moving", 10)
    put_data(ctx, "moving/p999.txt", b"late\n")
    continue_submission(ctx, continuations(ctx)[0]["run_id"])
    final = status(ctx, d.run_id)
    assert final["state"] == "failed" and "changed while the run was being submitted" in final["error"]
    assert work_containers_left(ctx) == []



@pytest.mark.parametrize("form", ["jsonl", "csv-tasks"])
def test_a_continuation_reads_a_blob_input_from_where_the_split_stood_not_from_its_start(env, batch, monkeypatch,
                                                                                            form):
    """The cursor of a blob input carries a byte offset (status.json `submit_resume`): a continuation
    downloads the input from there on, and its shards are exactly those of a whole split. The input
    spans several download chunks (4 MiB), where the split notes the points it can resume from."""
    from shared import split, storage
    from shared.cleanup import work_containers
    from shared.naming import shard_name

    rows = [b"%d,%s" % (i, b"x" * (40 + i % 97)) for i in range(140_000)]
    if form == "jsonl":  # CRLF and blank lines: offsets and records part ways
        data = b"".join(b'{"n": %d, "pad": "%s"}\r\n' % (i, b"x" * (i % 97)) + (b"\r\n" if i % 50 == 0 else b"")
                        for i in range(140_000))
        fields, fmt, sizing = {"items_per_task": 500}, "jsonl", {"items_per_task": 500}
    else:
        data = b"n,pad\n" + b"\n".join(rows) + b"\n"
        fields, fmt, sizing = {"tasks": 280}, "csv", {"tasks": 280, "total_bytes": len(data)}
    assert len(data) > 2 * storage.BLOCK_SIZE
    path = put_data(ctx := build_context({**env, "INTAKE_BUDGET_SECONDS": "0", "SUBMIT_CHUNK_TASKS": "60"}),
                    f"big.{fmt}", data)
    whole = list(split.iter_shards(fmt, [data], **sizing))

    reads: list[list[int]] = []  # per download of the input: [offset, bytes read]
    real_read = storage.read_chunks_pinned

    def recording(service, container, name, etag, offset=0):
        reads.append([offset, 0])
        for chunk in real_read(service, container, name, etag, offset=offset):
            reads[-1][1] += len(chunk)
            yield chunk

    monkeypatch.setattr(storage, "read_chunks_pinned", recording)
    d = drop(ctx, f"resume-{form}.json", {"command": "true", "input": {"blob": path, "format": fmt}, **fields})
    accept(ctx, d.container, d.name)
    reads.clear()  # the count and the first chunk read from the start, as they must
    resumes = []
    for _ in range(100):
        waiting = continuations(ctx)
        if not waiting:
            break
        resumes.append(split.Resume.of(status(ctx, d.run_id)["submit_resume"]))
        continue_submission(ctx, d.run_id)
    assert status(ctx, d.run_id)["submitted"] == len(whole)
    assert len(resumes) >= 3 and resumes[-1].offset > len(data) / 2
    # each continuation read the input from its resume point on (csv: its header from the start, first)
    assert [offset for offset, _ in reads] == [o for r in resumes for o in ([0, r.offset] if fmt == "csv" and
                                                                           r.offset else [r.offset])]
    headers = [read for (offset, read), (after, _) in zip(reads, reads[1:]) if fmt == "csv" and offset == 0 < after]
    assert all(read <= storage.BLOCK_SIZE for read in headers)  # a header read stops after its first chunk
    in_container = work_containers(ctx, d.run_id)[0]
    uploaded = [ctx.blobs.get_blob_client(in_container, shard_name(i, f"input.{fmt}")).download_blob().readall()
                for i in range(len(whole))]
    assert uploaded == whole
    stop = drop(ctx, f"stop-{form}.json", {"cancel": d.run_id})  # the tasks themselves are of no interest
    accept(ctx, stop.container, stop.name)
    run_to_end(ctx, d.run_id)


def test_a_continuation_lists_a_prefix_from_the_page_of_its_cursor(chunked, batch, monkeypatch):
    """A prefix input's cursor carries the listing's marker of the page holding the last blob submitted
    (status.json `submit_resume`): a continuation lists from there, not the whole prefix again."""
    from shared import blob_rest

    ctx = chunked
    monkeypatch.setattr(blob_rest, "PAGE", 5)  # 23 blobs on 5 pages
    markers: list[str] = []  # where each listing of the prefix began
    real_pages = blob_rest.pages

    def recording(client, prefix="", page=blob_rest.PAGE, marker=""):
        if prefix.endswith("paged/"):
            markers.append(marker)
        return real_pages(client, prefix, page, marker)

    monkeypatch.setattr(blob_rest, "pages", recording)
    d = prefix_run(ctx, "paged", 23)
    assert markers == [""]  # the whole prefix, to count it
    resume = status(ctx, d.run_id)["submit_resume"]
    assert (resume["after"], resume["next"]) == (f"paged/p{CHUNK - 1:03d}.txt", CHUNK)
    assert submit_all(ctx, d.run_id) == [7, 14, 21, 23]
    # each continuation listed from the page of blob 6, 13 and 20 (pages of 5: the 2nd, 3rd and 5th)
    assert len(markers) == 4 and all(markers[1:]) and len(set(markers[1:])) == 3
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(23)]
    final = run_to_end(ctx, d.run_id, deadline_s=120)
    assert final["state"] == "succeeded"
    assert results_blob(ctx, final["output"].split("/", 1)[1]).decode() == "".join(f"part {i}\n" for i in range(23))


def test_a_prefix_whose_last_submitted_blob_went_fails_the_run_saying_so(chunked, batch):
    ctx = chunked
    d = prefix_run(ctx, "going", 12)
    ctx.blobs.get_blob_client(ctx.settings.data_container, f"going/p{CHUNK - 1:03d}.txt").delete_blob()
    continue_submission(ctx, continuations(ctx)[0]["run_id"])
    final = status(ctx, d.run_id)
    assert final["state"] == "failed" and "changed while the run was being submitted" in final["error"]
    assert f"going/p{CHUNK - 1:03d}.txt" in final["error"] and "is gone" in final["error"]
    assert work_containers_left(ctx) == []


def test_a_prefix_run_whose_record_has_no_resume_point_goes_on_from_the_first_page(chunked, batch):
    """A run submitting since before the cursor kept a resume point (or whose point is unreadable)
    lists the whole prefix again and goes on from its cursor."""
    ctx = chunked
    d = prefix_run(ctx, "older", 16)
    run = ctx.runs.read(d.run_id)
    ctx.runs.commit(run, run._with(submit_resume=None))
    assert submit_all(ctx, d.run_id) == [7, 14, 16]
    assert task_ids(batch, d.run_id) == [f"t{i:06d}" for i in range(16)]
    final = run_to_end(ctx, d.run_id, deadline_s=120)
    assert final["state"] == "succeeded"
    assert results_blob(ctx, final["output"].split("/", 1)[1]).decode() == "".join(f"part {i}\n" for i in range(16))

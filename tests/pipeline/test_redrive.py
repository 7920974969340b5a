"""A crashed step resumes within two minutes (issue 16): short renewed claims, and the monitor
re-drives steps nobody is at work on. The monitor whose clock is 90 s ahead stands for the
monitor a minute and a half later (longer than a claim's lease, see shared.watch.REDRIVE_AFTER)."""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta

import pytest
from azure.storage.blob import BlobLeaseClient

from shared import accept as accept_module
from shared import claims, naming
from shared.accept import accept
from shared.claims import Claims
from shared.finalize import finalize
from shared.runs import utc_now
from shared.watch import MAX_FINALIZE_ATTEMPTS, REDRIVE_AFTER, redrive_after, watch
from tests.pipeline.helpers import COPY, build_context, drop, results_blob, run_to_end, wait_for, work_containers_left


def later(env, by: timedelta = REDRIVE_AFTER + timedelta(seconds=15)):
    """The same deployment, seen by a monitor `by` later."""
    return build_context(env, clock=lambda: utc_now() + by)


def messages(queue) -> list[str]:
    found = [m.content for m in queue.receive_messages(messages_per_page=32, visibility_timeout=1)]
    return found


def to_merging(ctx, name: str) -> str:
    d = drop(ctx, name, {"command": COPY, "input": {"items": [1, 2, 3]}})
    accept(ctx, d.container, d.name)
    wait_for(lambda: watch(ctx).get(d.run_id) == "finalize requested" or ctx.runs.read(d.run_id).state == "merging",
             timeout=60, what="merging")
    return d.run_id


# ----------------------------------------------------------------------------- claims


def test_a_claim_is_renewed_while_held_and_a_dead_claimants_expires(ctx):
    short = Claims(ctx.blobs, ctx.settings.control_container, lease_seconds=15, heartbeat_seconds=4)
    with short.hold("live-0000000000000001", claims.FINALIZE) as live:
        assert live is not None
        with short.hold("live-0000000000000001", claims.FINALIZE) as second:
            assert second is None  # one claimant at a time
        # a claimant that died: its lease is never renewed (nor released)
        dead = ctx.blobs.get_blob_client(ctx.settings.control_container,
                                         naming.claim_blob("dead-0000000000000002", claims.FINALIZE))
        dead.upload_blob(b"")
        BlobLeaseClient(dead).acquire(lease_duration=15)
        assert short.held("dead-0000000000000002", claims.FINALIZE)
        time.sleep(17)
        assert short.held("live-0000000000000001", claims.FINALIZE)  # renewed past its 15 s
        assert not short.held("dead-0000000000000002", claims.FINALIZE)  # expired: known within the lease
        with short.hold("dead-0000000000000002", claims.FINALIZE) as taken_over:
            assert taken_over is not None
    assert not short.held("live-0000000000000001", claims.FINALIZE)  # released on exit


# ----------------------------------------------------------------------------- finalize


def test_a_finalize_request_lost_with_its_host_is_redriven(ctx, env):
    """The host dequeued the finalize message and died before claiming the run: the message is in
    that host's queue lease (ten minutes). The monitor asks again a minute later."""
    run_id = to_merging(ctx, "lost-request.json")
    assert messages(ctx.finalize_queue) == [run_id]
    ctx.finalize_queue.clear_messages()  # the dead host's message: invisible for ten minutes
    assert watch(ctx)[run_id] == "merging"  # asked for just now: not yet
    assert watch(later(env))[run_id] == "finalize re-requested"
    status = ctx.runs.read(run_id)
    assert status.redrives == {"finalize": 1} and status.last_redrive["step"] == "finalize"
    assert "no finalize was at work" in status.last_redrive["why"]
    assert messages(ctx.finalize_queue) == [run_id]
    assert finalize(ctx, run_id) == "succeeded"
    report = json.loads(results_blob(ctx, f"{run_id}/report.json"))
    assert report["redrives"] == {"finalize": 1}


def test_each_further_redrive_of_a_request_waiting_in_a_backlog_waits_twice_as_long(ctx, env):
    """A finalize request still waiting behind a backlog of other runs' is not lost: asking for it
    again every 85 s only lengthens the backlog (1,000 runs at once: 7 requests for one run)."""
    run_id = to_merging(ctx, "backlog.json")
    first = REDRIVE_AFTER + timedelta(seconds=15)
    assert watch(later(env, first))[run_id] == "finalize re-requested"
    assert watch(later(env, first + REDRIVE_AFTER + timedelta(seconds=15)))[run_id] == "merging"  # 100 s < 170 s
    second = first + redrive_after(1) + timedelta(seconds=5)
    assert watch(later(env, second))[run_id] == "finalize re-requested"
    assert watch(later(env, second + redrive_after(1) + timedelta(seconds=5)))[run_id] == "merging"  # < 340 s
    assert ctx.runs.read(run_id).redrives == {"finalize": 2}
    assert messages(ctx.finalize_queue) == [run_id] * 3
    assert finalize(ctx, run_id) == "succeeded"


def test_the_wait_before_a_redrive_doubles_up_to_eight_times_the_first():
    assert [redrive_after(n) / REDRIVE_AFTER for n in range(6)] == [1, 2, 4, 8, 8, 8]


def test_a_finalize_that_died_holding_its_claim_is_redriven_once_the_claim_expires(ctx, env):
    run_id = to_merging(ctx, "dead-claim.json")
    ctx.finalize_queue.clear_messages()
    blob = ctx.blobs.get_blob_client(ctx.settings.control_container, naming.claim_blob(run_id, claims.FINALIZE))
    blob.upload_blob(b"", overwrite=True)
    BlobLeaseClient(blob).acquire(lease_duration=15)  # a finalize that was killed while it held the run
    monitor = later(env)
    assert watch(monitor)[run_id] == "merging"  # a live claim: nobody else steps in
    assert finalize(ctx, run_id) == "busy"
    wait_for(lambda: not ctx.claims.held(run_id, claims.FINALIZE), timeout=20, what="the dead claim to expire")
    assert watch(monitor)[run_id] == "finalize re-requested"
    assert finalize(ctx, run_id) == "succeeded"
    assert work_containers_left(ctx) == []


def test_duplicate_finalize_requests_finish_the_run_once(ctx, env):
    run_id = to_merging(ctx, "dupes.json")
    watch(later(env))  # a re-drive on top of the first request
    bodies = messages(ctx.finalize_queue)
    assert bodies == [run_id, run_id]
    results = []
    threads = [threading.Thread(target=lambda: results.append(finalize(ctx, run_id))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "succeeded" in results and set(results) <= {"succeeded", "busy"}
    assert finalize(ctx, run_id) == "succeeded"
    assert len([e for e in ctx.events.events if e[0] == "succeeded" and e[1] == run_id]) == 1


def test_a_finalize_that_keeps_dying_is_given_up_on_with_a_reason(ctx, env, monkeypatch):
    run_id = to_merging(ctx, "poison.json")
    from shared import finalize as finalize_module

    def killed(*_):
        raise RuntimeError("killed mid-merge")

    monkeypatch.setattr(finalize_module, "_report", killed)
    for _ in range(MAX_FINALIZE_ATTEMPTS):
        with pytest.raises(RuntimeError):
            finalize(ctx, run_id)
    assert watch(later(env))[run_id] == "failed: finalize stuck"
    final = ctx.runs.read(run_id)
    assert final.state == "failed" and "finalize was started 6 times" in final.error
    assert work_containers_left(ctx) == []


# ----------------------------------------------------------------------------- intake


class Killed(BaseException):
    """Stands for the host process dying: nothing after it runs (not even `except Exception`)."""


def accept_killed_in(ctx, monkeypatch, step: str, d) -> None:
    """Intake's host dies when it reaches `step` (a function of shared.accept)."""

    def die(*_):
        raise Killed()

    monkeypatch.setattr(accept_module, step, die)
    with pytest.raises(Killed):
        accept(ctx, d.container, d.name)
    monkeypatch.undo()


def test_an_intake_that_died_before_creating_the_run_is_redriven_from_its_marker(ctx, env, monkeypatch):
    d = drop(ctx, "early.json", {"command": COPY, "input": {"items": [1, 2]}})
    accept_killed_in(ctx, monkeypatch, "_prepare", d)
    assert ctx.runs.try_read(d.run_id) is None and d.run_id in ctx.runs.active_run_ids()
    assert watch(ctx)[d.run_id] == "not created yet"
    assert watch(later(env))[d.run_id] == "intake re-requested"
    [body] = messages(ctx.intake_queue)
    request = naming.intake_request_of_message(body)
    assert (request.container, request.name) == (d.container, d.name)
    assert accept(ctx, request.container, request.name, etag=request.etag) == d.run_id  # the queue trigger
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"


def test_an_intake_that_died_after_accepting_is_redriven_and_submits_once(ctx, env, batch, monkeypatch):
    d = drop(ctx, "mid.json", {"command": COPY, "input": {"items": [1, 2, 3]}})
    accept_killed_in(ctx, monkeypatch, "_submit_or_end", d)
    assert ctx.runs.read(d.run_id).state == "accepted"
    assert watch(ctx)[d.run_id] == "intake in progress"
    assert watch(later(env))[d.run_id] == "intake re-requested"
    status = ctx.runs.read(d.run_id)
    assert status.redrives == {"intake": 1} and "no intake was at work" in status.last_redrive["why"]
    [body] = messages(ctx.intake_queue)
    request = naming.intake_request_of_message(body)
    for _ in range(2):  # a duplicate request is harmless
        assert accept(ctx, request.container, request.name, etag=request.etag) == d.run_id
    assert sorted(t.id for t in batch.list_tasks(d.run_id)) == ["t000000", "t000001", "t000002"]
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded"
    assert json.loads(results_blob(ctx, f"{d.run_id}/report.json"))["redrives"] == {"intake": 1}


def test_a_redriven_intake_of_a_replaced_job_file_does_nothing(ctx):
    d = drop(ctx, "replaced.json", {"command": COPY, "input": {"items": [1]}})
    drop(ctx, "replaced.json", {"command": COPY, "input": {"items": [1, 2]}})  # a newer version, its own event
    assert accept(ctx, d.container, d.name, etag=d.etag) is None
    assert ctx.runs.try_read(d.run_id) is None


def test_an_intake_at_work_is_not_redriven(ctx, env):
    d = drop(ctx, "busy.json", {"command": COPY, "input": {"items": [1]}})
    ctx.runs.mark_active(d.run_id, accept_module.JobFileVersion(d.container, d.name, d.etag))
    with ctx.claims.hold(d.run_id, claims.INTAKE) as held:
        assert held is not None
        assert watch(later(env))[d.run_id] == "not created yet"
        assert accept(ctx, d.container, d.name) == d.run_id  # a second delivery leaves it to the first
        assert ctx.runs.try_read(d.run_id) is None
    assert messages(ctx.intake_queue) == []


def test_a_tick_out_of_time_resumes_where_it_stopped_so_no_run_starves(ctx):
    from datetime import timedelta as td

    runs = [drop(ctx, f"turn-{i}.json", {"command": COPY, "input": {"items": [i]}}) for i in range(5)]
    for d in runs:
        ctx.runs.mark_active(d.run_id, accept_module.JobFileVersion(d.container, d.name, d.etag))
    ids = sorted(d.run_id for d in runs)
    first = watch(ctx, budget=td(0), parallel=2)  # out of time after its first chunk
    assert sorted(first) == ids[:2] and ctx.runs.tick_cursor() == ids[1]
    second = watch(ctx, budget=td(0), parallel=2)
    assert sorted(second) == ids[2:4] and ctx.runs.tick_cursor() == ids[3]
    third = watch(ctx, budget=td(0), parallel=2)
    assert sorted(third) == sorted([ids[4], ids[0]])  # wraps around
    assert len(watch(ctx)) == 5 and ctx.runs.tick_cursor() is None  # time for all: no cursor left


def test_a_tick_over_its_budget_says_where_its_time_went(ctx, monkeypatch, caplog):
    """The budget bounds when a run is looked at, not admission or the hourly sweep after: a tick that
    overruns logs each phase's seconds, so that a long tick can be told apart."""
    import shared.watch as watch_module

    monkeypatch.setattr(watch_module, "sweep_if_due", lambda ctx: time.sleep(0.3))
    with caplog.at_level(logging.WARNING, logger="shared.watch"):
        watch(ctx, budget=timedelta(seconds=0.2))
    [line] = [r.getMessage() for r in caplog.records if "over its budget" in r.getMessage()]
    sweep_s = float(line.split("sweep_s=")[1])
    assert sweep_s >= 0.3 and "runs_s=" in line and "admission_s=" in line
    caplog.clear()
    monkeypatch.setattr(watch_module, "sweep_if_due", lambda ctx: None)
    with caplog.at_level(logging.WARNING, logger="shared.watch"):
        watch(ctx, budget=timedelta(seconds=30))
    assert not [r for r in caplog.records if "over its budget" in r.getMessage()]


def test_a_finished_runs_claims_are_removed_even_while_a_dead_claimants_lease_runs(ctx):
    blob = ctx.blobs.get_blob_client(ctx.settings.control_container,
                                     naming.claim_blob("gone-0000000000000003", claims.FINALIZE))
    blob.upload_blob(b"")
    BlobLeaseClient(blob).acquire(lease_duration=60)  # its holder was killed a moment ago
    ctx.claims.forget("gone-0000000000000003")
    assert not blob.exists()


def test_removing_a_claim_whose_holder_lets_go_meanwhile_is_not_an_error(ctx):
    """The holder (a finishing invocation) releases its lease between our delete (412: leased) and our
    break: the break answers 409, which means the way is free. Seen once in scale_runs_bench as a
    monitor error."""
    from azure.storage.blob import BlobClient

    from shared.claims import Claims as ClaimsOwner

    blob = ctx.blobs.get_blob_client(ctx.settings.control_container, naming.claim_blob("late-0000000000000004",
                                                                                       claims.INTAKE))
    blob.upload_blob(b"")
    lease = BlobLeaseClient(blob)
    lease.acquire(lease_duration=60)

    class HolderLetsGo(BlobClient):
        def delete_blob(self, *args, **kwargs):
            try:
                return super().delete_blob(*args, **kwargs)
            except Exception:
                lease.release()  # the holder, in between our two calls
                raise

    racing = HolderLetsGo.from_blob_url(blob.url, credential=blob.credential)
    ClaimsOwner._delete_claim(racing)
    assert not blob.exists()

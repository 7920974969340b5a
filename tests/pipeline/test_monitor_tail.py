"""MONITOR_TAIL_SECONDS: a monitor tick that finds a run in its last wave (no more tasks waiting than running) goes on
watching it, and asks for finalize as soon as its last task ends (real Azurite and emulator)."""
from __future__ import annotations

import time

from shared import watch as watch_module
from shared.accept import accept
from shared.watch import watch
from tests.pipeline.helpers import build_context, drop, run_to_end, status, wait_for


def _all_running(ctx, run_id: str, tasks: int) -> None:
    def running() -> bool:
        counts = ctx.batch.get_job_task_counts(run_id).task_counts
        return counts.running == tasks and counts.active == 0
    wait_for(running, timeout=60, interval=0.05, what="every task running")


def _count_looks(monkeypatch) -> list[str]:
    """The run ids of the monitor's task-counts calls from now on (the calls still go to the emulator)."""
    looks: list[str] = []
    real_counts = watch_module.batch.task_counts
    monkeypatch.setattr(watch_module.batch, "task_counts", lambda c, job: looks.append(job) or real_counts(c, job))
    return looks


def _finalize_messages(ctx) -> int:
    return len(ctx.finalize_queue.peek_messages(max_messages=32))


def test_a_tick_in_a_runs_tail_requests_finalize_as_its_last_task_ends(env):
    ctx = build_context({**env, "MONITOR_TAIL_SECONDS": "8"})
    d = drop(ctx, "tail.json", {"command": 'sleep 2; echo 1 > "$OUTPUT_PATH"', "input": {"items": [1, 2]},
                                "merge": "none"})
    accept(ctx, d.container, d.name)
    _all_running(ctx, d.run_id, 2)
    began = time.monotonic()
    outcome = watch(ctx)  # the tasks end within 2 s: this same tick sees it
    took = time.monotonic() - began
    assert outcome[d.run_id] == "finalize requested", outcome
    assert took < 6, took  # it stopped watching when the run ended, not at the tail's end (8 s)
    assert status(ctx, d.run_id)["state"] == "merging" and _finalize_messages(ctx) == 1
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"


def test_without_a_tail_the_tick_returns_at_once_and_the_next_one_requests_finalize(env):
    ctx = build_context(env)  # MONITOR_TAIL_SECONDS unset: 0
    d = drop(ctx, "notail.json", {"command": 'sleep 2; echo 1 > "$OUTPUT_PATH"', "input": {"items": [1, 2]},
                                  "merge": "none"})
    accept(ctx, d.container, d.name)
    _all_running(ctx, d.run_id, 2)
    began = time.monotonic()
    assert watch(ctx)[d.run_id] in ("updated", "no change")
    assert time.monotonic() - began < 1.5 and _finalize_messages(ctx) == 0
    wait_for(lambda: watch(ctx)[d.run_id] == "finalize requested", timeout=60, interval=0.2, what="finalize requested")


def test_the_tail_is_watched_no_longer_than_set(env, monkeypatch):
    ctx = build_context({**env, "MONITOR_TAIL_SECONDS": "1.5"})
    looks = _count_looks(monkeypatch)
    long = drop(ctx, "long.json", {"command": "sleep 30", "input": {"items": [1, 2]}, "merge": "none"})
    accept(ctx, long.container, long.name)
    _all_running(ctx, long.run_id, 2)
    looks.clear()
    began = time.monotonic()
    assert watch(ctx)[long.run_id] in ("updated", "no change")
    took = time.monotonic() - began
    assert 1.2 <= took < 4, took  # watched for the 1.5 s set, then the tick ended
    assert 5 <= looks.count(long.run_id) <= 1 + watch_module.TAIL_LOOKS, looks  # the tick's own look + the tail's

    ctx.batch.begin_terminate_job(long.run_id, options={"terminateReason": "test over"}).result()  # the sleeps end


def test_a_run_with_tasks_waiting_for_a_slot_is_not_waited_for(env, monkeypatch):
    # 2 slots (the default pool has 10 nodes, which on a machine of many cores would all run)
    ctx = build_context({**env, "MONITOR_TAIL_SECONDS": "5", "POOL_MAX_NODES": "2", "POOL_SLOTS_PER_NODE": "1"})
    looks = _count_looks(monkeypatch)
    crowd = drop(ctx, "crowd.json", {"command": "sleep 30", "input": {"items": list(range(12))}, "merge": "none"})
    accept(ctx, crowd.container, crowd.name)
    wait_for(lambda: ctx.batch.get_job_task_counts(crowd.run_id).task_counts.running > 0, timeout=60,
             interval=0.05, what="a task running")
    assert ctx.batch.get_job_task_counts(crowd.run_id).task_counts.active > 0
    looks.clear()
    began = time.monotonic()
    assert watch(ctx)[crowd.run_id] in ("updated", "no change")
    assert time.monotonic() - began < 1.0 and looks == [crowd.run_id]  # the tick's own look only
    ctx.batch.begin_terminate_job(crowd.run_id, options={"terminateReason": "test over"}).result()


def test_the_last_wave_counts_as_the_tail_when_a_task_still_waits_for_a_slot(env):
    ctx = build_context({**env, "MONITOR_TAIL_SECONDS": "8", "POOL_MAX_NODES": "2", "POOL_SLOTS_PER_NODE": "1"})
    d = drop(ctx, "wave.json", {"command": 'sleep 1; echo 1 > "$OUTPUT_PATH"', "input": {"items": [1, 2, 3]},
                                "merge": "none"})
    accept(ctx, d.container, d.name)

    def two_running_one_waiting() -> bool:
        counts = ctx.batch.get_job_task_counts(d.run_id).task_counts
        return counts.running == 2 and counts.active == 1
    wait_for(two_running_one_waiting, timeout=60, interval=0.05, what="two tasks running, one waiting")
    assert watch(ctx)[d.run_id] == "finalize requested"  # the third ran meanwhile, within the same tick
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"


def test_in_tail() -> None:
    assert watch_module.in_tail(active=0, running=1) and watch_module.in_tail(active=2, running=2)
    assert not watch_module.in_tail(active=3, running=2) and not watch_module.in_tail(active=0, running=0)


def test_a_run_stays_watched_between_one_tasks_end_and_the_next_ones_start(env, monkeypatch):
    """Batch's counts can show a waiting task and none running for a moment (the next one not yet
    started): the run stays in the tail; once more tasks wait than ran at once, it is left to the next
    tick. Scripted counts (no emulator shows that moment on purpose)."""
    from types import SimpleNamespace

    ctx = build_context({**env, "MONITOR_TAIL_SECONDS": "3"})
    script = {"a": [(1, 0), (0, 1), (0, 0)], "b": [(3, 0)]}  # (active, running) per look
    monkeypatch.setattr(watch_module.batch, "task_counts", lambda client, run_id: SimpleNamespace(
        active=script[run_id][0][0], running=script[run_id].pop(0)[1]))
    ticked: list[str] = []
    monkeypatch.setattr(watch_module, "_tick", lambda ctx, run_id, nodes: ticked.append(run_id) or "finalize requested")
    outcome = watch_module._watch_tails(ctx, {"a": 1, "b": 2}, watch_module.NodeCounts(ctx), 3.0)
    assert outcome == {"a": "finalize requested"} and ticked == ["a"]
    assert script == {"a": [], "b": []}  # a looked at three times, b once (3 waiting > 2 running at once)

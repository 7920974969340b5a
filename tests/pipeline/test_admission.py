"""Quota-aware admission (issue 12): runs Batch has no room for wait in line (state queued) and are
admitted in arrival order as room frees, instead of failing. A dedicated emulator with account quotas
(changed per test through /_emulator/quotas)."""
from __future__ import annotations

import json
import time
import urllib.request
from datetime import timedelta

import pytest

from shared.accept import accept
from shared.context import Context
from shared.events import RecordingPublisher
from shared.naming import intake_request_of_message
from shared.runs import TERMINAL, utc_now
from shared.secrets import StaticSecrets
from shared.settings import Settings
from shared.watch import watch
from tests.pipeline.helpers import batch_client, drain_finalize, drop, settings_env, work_containers_left

SLOW_COPY = 'sleep 1; cat "$INPUT_PATH" > "$OUTPUT_PATH"'


@pytest.fixture(scope="module")
def quota_emulator(tmp_path_factory):
    from batchemu.process import EmulatorProcess

    emulator = EmulatorProcess(data_dir=tmp_path_factory.mktemp("emu-quota"), max_concurrency=4, quota_active_jobs=2)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def set_quotas(emulator, **quotas) -> dict:
    request = urllib.request.Request(f"{emulator.url}/_emulator/quotas", data=json.dumps(quotas).encode(),
                                     method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def usage(emulator) -> dict:
    with urllib.request.urlopen(f"{emulator.url}/_emulator/quotas", timeout=10) as response:
        return json.loads(response.read())["usage"]


def context(env: dict, clock=None) -> tuple[Context, RecordingPublisher]:
    publisher = RecordingPublisher()
    kwargs = {} if clock is None else {"clock": clock}
    ctx = Context.build(Settings.from_mapping(env), env, publisher=publisher, secret_source=StaticSecrets({}),
                        **kwargs)
    ctx.ensure_containers()
    return ctx, publisher


@pytest.fixture
def quota_env(azurite, quota_emulator):
    return settings_env(azurite, quota_emulator)


def drain_intake(ctx: Context) -> int:
    """What the intake queue trigger does with each waiting request (the monitor's admissions)."""
    handled = 0
    for msg in ctx.intake_queue.receive_messages(messages_per_page=16, visibility_timeout=60):
        request = intake_request_of_message(msg.content)
        accept(ctx, request.container, request.name, request.etag)
        ctx.intake_queue.delete_message(msg)
        handled += 1
    return handled


def drive(ctx: Context, emulator, run_ids: list[str], deadline_s: float = 240.0) -> tuple[dict[str, dict], int]:
    """Monitor, intake requests and finalize until every run is over; the most Batch jobs seen
    active at once (sampled between every step)."""
    most = 0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for step in (watch, drain_intake, drain_finalize):
            step(ctx)
            most = max(most, usage(emulator)["activeJobs"])
        runs = {r: ctx.runs.read(r) for r in run_ids}
        if all(run.state in TERMINAL for run in runs.values()):
            return {r: run.to_json() for r, run in runs.items()}, most
        time.sleep(0.2)
    raise TimeoutError({r: ctx.runs.read(r).state for r in run_ids})


def drop_runs(ctx: Context, emulator, count: int, prefix: str) -> tuple[list[str], int]:
    """Drop `count` job files, one after the other, each handled by intake as it arrives."""
    run_ids, most = [], 0
    for i in range(count):
        d = drop(ctx, f"{prefix}-{i}.json", {"command": SLOW_COPY, "input": {"items": [i, i + 1]}})
        accept(ctx, d.container, d.name)
        most = max(most, usage(emulator)["activeJobs"])
        run_ids.append(d.run_id)
    return run_ids, most


def started_order(publisher: RecordingPublisher) -> list[str]:
    return [run_id for kind, run_id, _ in publisher.events if kind == "running"]


def test_six_runs_against_an_active_job_quota_of_two_all_succeed_in_arrival_order(quota_env, quota_emulator):
    set_quotas(quota_emulator, activeJobs=2)
    ctx, publisher = context(quota_env)
    run_ids, most = drop_runs(ctx, quota_emulator, 6, "quota")
    first = {r: ctx.runs.read(r) for r in run_ids}
    assert [first[r].state for r in run_ids] == ["running"] * 2 + ["queued"] * 4
    assert "ActiveJobAndScheduleQuotaReached" in (first[run_ids[2]].queued_reason or "")
    assert all(first[r].queued_reason for r in run_ids[3:])
    watch(ctx)  # numbers the line (and may admit its head for one try)
    positions = [ctx.runs.read(r).to_json().get("queue_position") for r in run_ids[3:]]
    assert positions in ([1, 2, 3], [2, 3, 4])
    finals, during = drive(ctx, quota_emulator, run_ids)
    assert {r: doc["state"] for r, doc in finals.items()} == dict.fromkeys(run_ids, "succeeded")
    assert max(most, during) <= 2
    assert started_order(publisher) == run_ids  # admitted in arrival order
    assert not [kind for kind, _, _ in publisher.events if kind == "failed"]
    assert work_containers_left(ctx) == []
    assert ctx.runs.queued_run_ids() == []


def test_six_runs_with_max_active_runs_two_and_no_quota(quota_env, quota_emulator):
    set_quotas(quota_emulator)  # unlimited
    env = {**quota_env, "MAX_ACTIVE_RUNS": "2"}
    ctx, publisher = context(env)
    run_ids, most = drop_runs(ctx, quota_emulator, 6, "capped")
    states = [ctx.runs.read(r).state for r in run_ids]
    assert states == ["running"] * 2 + ["queued"] * 4
    assert "MAX_ACTIVE_RUNS" in (ctx.runs.read(run_ids[2]).queued_reason or "")
    finals, during = drive(ctx, quota_emulator, run_ids)
    assert {r: doc["state"] for r, doc in finals.items()} == dict.fromkeys(run_ids, "succeeded")
    assert max(most, during) <= 2
    assert started_order(publisher) == run_ids


def test_an_auto_pool_refused_for_quota_queues_the_run_instead_of_failing(quota_env, quota_emulator):
    set_quotas(quota_emulator, pools=1)
    ctx, publisher = context(quota_env)
    run_ids, _ = drop_runs(ctx, quota_emulator, 2, "pool")
    second = ctx.runs.read(run_ids[1])
    assert ctx.runs.read(run_ids[0]).state == "running"
    assert second.state == "queued" and "AutoPoolCreationFailedWithQuotaReached" in (second.queued_reason or "")
    batch = batch_client(quota_emulator)
    assert [j.id for j in batch.list_jobs() if j.id == run_ids[1] and j.state != "deleting"] == []  # holds no quota
    finals, _ = drive(ctx, quota_emulator, run_ids)
    assert {r: doc["state"] for r, doc in finals.items()} == dict.fromkeys(run_ids, "succeeded")
    assert started_order(publisher) == run_ids
    assert finals[run_ids[1]]["admissions"] >= 1


def test_a_queued_run_can_be_cancelled(quota_env, quota_emulator):
    set_quotas(quota_emulator, activeJobs=1)
    ctx, publisher = context(quota_env)
    run_ids, _ = drop_runs(ctx, quota_emulator, 2, "cancel")
    assert ctx.runs.read(run_ids[1]).state == "queued"
    cancel = drop(ctx, "cancel-it.json", {"cancel": run_ids[1]})
    accept(ctx, cancel.container, cancel.name)
    cancelled = ctx.runs.read(run_ids[1])
    assert cancelled.state == "cancelled" and "cancelled by" in (cancelled.error or "")
    finals, _ = drive(ctx, quota_emulator, run_ids)
    assert finals[run_ids[0]]["state"] == "succeeded" and finals[run_ids[1]]["state"] == "cancelled"
    assert run_ids[1] not in started_order(publisher)
    assert ctx.runs.queued_run_ids() == [] and work_containers_left(ctx) == []


def test_a_run_queued_longer_than_max_queued_hours_fails(quota_env, quota_emulator):
    set_quotas(quota_emulator, activeJobs=1)
    ctx, _ = context(quota_env)
    run_ids, _ = drop_runs(ctx, quota_emulator, 2, "expire")
    assert ctx.runs.read(run_ids[1]).state == "queued"
    assert watch(ctx)[run_ids[1]] == "admitted"  # within its time: one try of the head of the line
    drain_intake(ctx)
    refused = ctx.runs.read(run_ids[1])
    assert refused.state == "queued" and refused.admissions == 1  # refused again: back in line
    later, _ = context(quota_env, clock=lambda: utc_now() + timedelta(hours=24, minutes=1))
    assert watch(later)[run_ids[1]] == "failed: queued too long"
    failed = ctx.runs.read(run_ids[1])
    assert failed.state == "failed" and "MAX_QUEUED_HOURS" in (failed.error or "")
    finals, _ = drive(ctx, quota_emulator, run_ids[:1])
    assert finals[run_ids[0]]["state"] == "succeeded"
    watch(ctx)
    assert ctx.runs.queued_run_ids() == [] and work_containers_left(ctx) == []


def test_runs_waiting_behind_the_line_are_admitted_one_at_a_time(quota_env, quota_emulator):
    """The line's head leaves (cancelled), the rest waited only behind it: Batch alone knows whether
    they fit, so the monitor tries them one at a time; admitting both at once let the later one's
    intake take the single free job slot first (seen with concurrent intakes in scale_quota_bench)."""
    set_quotas(quota_emulator, activeJobs=1)
    ctx, publisher = context(quota_env)
    run_ids, _ = drop_runs(ctx, quota_emulator, 4, "behind")
    assert [ctx.runs.read(r).state for r in run_ids] == ["running"] + ["queued"] * 3
    cancel = drop(ctx, "cancel-head.json", {"cancel": run_ids[1]})
    accept(ctx, cancel.container, cancel.name)
    set_quotas(quota_emulator, activeJobs=2)  # room for exactly one more
    outcome = watch(ctx)
    assert outcome[run_ids[2]] == "admitted" and outcome[run_ids[3]] == "queued #1"
    # the admitted intakes in the worst order: the later run's first
    requests = list(ctx.intake_queue.receive_messages(messages_per_page=16, visibility_timeout=60))
    for msg in reversed(requests):
        request = intake_request_of_message(msg.content)
        accept(ctx, request.container, request.name, request.etag)
        ctx.intake_queue.delete_message(msg)
    assert ctx.runs.read(run_ids[2]).state == "running" and ctx.runs.read(run_ids[3]).state == "queued"
    finals, during = drive(ctx, quota_emulator, run_ids)
    assert [finals[r]["state"] for r in run_ids] == ["succeeded", "cancelled", "succeeded", "succeeded"]
    assert during <= 2
    assert started_order(publisher) == [run_ids[0], run_ids[2], run_ids[3]]

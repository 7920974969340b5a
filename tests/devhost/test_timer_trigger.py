"""Timer trigger: fires on schedule, never overlaps, run_on_startup, the schedule monitor and past_due."""
from __future__ import annotations

import datetime as dt
import json

import azure.functions as func
import pytest

from devhost.blob_trigger import HOSTS_CONTAINER

from .helpers import devhost_threads, wait_until


@pytest.fixture
def timers_app(load_app):
    app, mod = load_app("timers")
    mod.reset()
    return app, mod


def test_fire_timer_gives_a_timerrequest(timers_app, make_host, uid):
    app, mod = timers_app
    host = make_host(app, "timers", {"TICK_SCHEDULE": "0 0 * * * *"}, host_id=f"h-{uid}")
    result = host.fire_timer("tick")
    assert result.succeeded and result.reason.startswith("Timer fired at ")
    (run,) = mod.RUNS
    assert run["type"] is func.timer.TimerRequest and run["past_due"] is False
    assert run["schedule_status"] == {}  # useMonitor false: the host sends no status


def test_cron_schedule_fires_on_the_second(timers_app, make_host, uid):
    app, mod = timers_app
    host = make_host(app, "timers", {"TICK_SCHEDULE": "* * * * * *",
                                     "AzureWebJobs.daily.Disabled": "1"}, host_id=f"h-{uid}")
    host.start()
    try:
        host.wait_for(lambda inv: len(inv) >= 2, timeout=5)
    finally:
        host.stop()
    starts = [r["start"] for r in mod.RUNS]
    assert len(starts) >= 2 and starts[1] - starts[0] >= 0.5  # one per second, not a burst
    assert all(not r["past_due"] for r in mod.RUNS)


def test_a_run_longer_than_the_period_delays_the_next_one_without_overlap(timers_app, make_host, uid):
    app, mod = timers_app
    mod.reset(run_seconds=0.5)
    host = make_host(app, "timers", {"TICK_SCHEDULE": "00:00:00.2",
                                     "AzureWebJobs.daily.Disabled": "true"}, host_id=f"h-{uid}")
    host.start()
    try:
        host.wait_for(lambda inv: len(inv) >= 3, timeout=10)
        # a manual fire waits for the running one too
        host.fire_timer("tick")
    finally:
        host.stop()
    assert mod.max_concurrency() == 1
    runs = sorted(mod.RUNS, key=lambda r: r["start"])
    for prev, nxt in zip(runs, runs[1:]):
        assert nxt["start"] >= prev["end"] - 1e-3
    # the next run starts right after an overlong one (it was due during it): no extra wait
    gaps = [b["start"] - a["end"] for a, b in zip(runs, runs[1:])]
    assert min(gaps) < 0.15
    # as in the host, a late start is not "past due" (only a missed occurrence found by the monitor is)
    assert all(r["past_due"] is False for r in runs)
    wait_until(lambda: not devhost_threads(), timeout=5, message="devhost threads gone")


def test_run_on_startup_fires_once_at_start(load_app, make_host, uid):
    app, mod = load_app("startup")
    mod.RUNS.clear()
    host = make_host(app, "startup", {}, host_id=f"h-{uid}")
    host.start()
    try:
        host.wait_for(lambda inv: len(inv) == 1, timeout=5)
    finally:
        host.stop()
    assert mod.RUNS == [False]


def test_the_schedule_monitor_catches_up_a_missed_occurrence_as_past_due(timers_app, make_host, blob_service, uid):
    app, mod = timers_app
    host_id = f"h-{uid}"
    status = blob_service.get_blob_client(HOSTS_CONTAINER, f"timers/{host_id}/Host.Functions.daily/status")
    try:
        blob_service.create_container(HOSTS_CONTAINER)
    except Exception:
        pass
    # the last run was two days ago at 09:30, so yesterday's 09:30 was missed
    last = (dt.datetime.now() - dt.timedelta(days=2)).replace(hour=9, minute=30, second=0, microsecond=0)
    nxt = last + dt.timedelta(days=1)
    status.upload_blob(json.dumps({"Last": last.astimezone().isoformat(), "Next": nxt.astimezone().isoformat(),
                                   "LastUpdated": last.astimezone().isoformat()}), overwrite=True)
    host = make_host(app, "timers", {"TICK_SCHEDULE": "0 0 0 1 1 *"}, host_id=host_id)
    host.start()
    try:
        host.wait_for(lambda inv: any(r.function_name == "daily" for r in inv), timeout=5)
    finally:
        host.stop()
    (run,) = [r for r in mod.RUNS if r["fn"] == "daily"]
    assert run["past_due"] is True
    assert run["schedule_status"]["Next"].startswith(nxt.strftime("%Y-%m-%dT09:30:00"))
    saved = json.loads(status.download_blob().readall())
    assert dt.datetime.fromisoformat(saved["Next"]).replace(tzinfo=None) > dt.datetime.now()


def test_a_fresh_monitor_records_the_schedule_without_firing(timers_app, make_host, blob_service, uid):
    app, mod = timers_app
    host = make_host(app, "timers", {"TICK_SCHEDULE": "0 0 0 1 1 *"}, host_id=f"h-{uid}")
    timer = host.timer("daily")
    timer.start()
    timer.stop()
    assert mod.RUNS == []
    saved = json.loads(blob_service.get_blob_client(
        HOSTS_CONTAINER, f"timers/h-{uid}/Host.Functions.daily/status").download_blob().readall())
    assert saved["Next"].split("T")[1].startswith("09:30:00")

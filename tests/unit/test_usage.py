"""Node time, busy time and efficiency, against numbers worked out by hand."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.usage import NodeSample, TaskRecord, node_seconds, usage

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task(task_id: str, start: float | None, end: float | None, **kw) -> TaskRecord:
    return TaskRecord(task_id, None if start is None else at(start), None if end is None else at(end), **kw)


# 0..60 s: no nodes; 60..180: 2 dedicated; 180..300: 2 dedicated + 1 spot; 300..360: none
SAMPLES = [NodeSample(at(0), 0, 0), NodeSample(at(60), 2, 0), NodeSample(at(180), 2, 1), NodeSample(at(300), 0, 0)]
TASKS = [task("t0", 90, 150, node_id="n1", slot=0),  # 60 s
         task("t1", 100, 200, node_id="n2", slot=1, tries=2),  # 100 s
         task("t2", 200, None, outcome="failed"),  # started, never ended: no busy time
         task("t3", None, None, outcome="failed")]  # never ran


def test_a_run_worked_out_by_hand():
    u = usage(TASKS, SAMPLES, dropped_at=T0, ended_at=at(360), slots_per_node=2)
    assert u.wall_s == 360
    assert u.queue_s == 90  # drop -> t0's start
    assert u.busy_slot_s == 160
    assert u.node_s_dedicated == 2 * 120 + 2 * 120  # 480
    assert u.node_s_spot == 1 * 120
    # allocated slot time: (480 + 120) node-s * 2 slots = 1200 slot-s
    assert u.efficiency == pytest.approx(160 / 1200)
    assert u.node_hours == pytest.approx(600 / 3600)
    assert u.as_report() == {"wall_s": 360, "queue_s": 90, "busy_slot_s": 160, "node_s_dedicated": 480,
                             "node_s_spot": 120, "efficiency": 0.1333}


def test_samples_in_any_order_give_the_same_node_time():
    assert node_seconds(list(reversed(SAMPLES)), T0, at(360)) == (480, 120)


def test_the_last_sample_holds_until_the_end():
    assert node_seconds([NodeSample(at(10), 3, 2)], T0, at(70)) == (180, 120)


def test_node_time_is_clipped_to_the_run():
    samples = [NodeSample(at(-30), 1, 0), NodeSample(at(30), 4, 0), NodeSample(at(100), 0, 0)]
    # from the drop: 1 node for 30 s, then 4 nodes for 70 s (the time after 'end' is not counted)
    assert node_seconds(samples, T0, at(90)) == (30 + 4 * 60, 0)


def test_before_the_first_sample_the_pool_is_empty():
    assert node_seconds([NodeSample(at(50), 2, 0)], T0, at(100)) == (100, 0)


def test_two_samples_at_one_time_the_later_one_holds():
    samples = [NodeSample(at(0), 5, 0), NodeSample(at(0), 1, 0)]
    assert node_seconds(samples, T0, at(10)) == (10, 0)


def test_without_samples_nothing_was_allocated_and_efficiency_is_unknown():
    u = usage(TASKS, [], dropped_at=T0, ended_at=at(360), slots_per_node=1)
    assert (u.node_s_dedicated, u.node_s_spot, u.efficiency) == (0, 0, None)
    assert u.as_report()["efficiency"] is None


def test_without_a_started_task_the_queue_time_is_unknown():
    u = usage([task("t0", None, None)], SAMPLES, dropped_at=T0, ended_at=at(360), slots_per_node=1)
    assert u.queue_s is None and u.busy_slot_s == 0 and u.efficiency == 0


def test_sparse_samples_can_show_efficiency_above_one_and_it_is_not_capped():
    # one sample saw a single node; two slots' worth of tasks ran on the whole time
    u = usage([task("a", 0, 100), task("b", 0, 100)], [NodeSample(T0, 1, 0)], dropped_at=T0, ended_at=at(100),
              slots_per_node=1)
    assert u.efficiency == 2.0


@pytest.mark.parametrize("kwargs", [dict(slots_per_node=0), dict(ended_at=at(-1))])
def test_impossible_arguments_are_refused(kwargs):
    args = dict(dropped_at=T0, ended_at=at(10), slots_per_node=1) | kwargs
    with pytest.raises(ValueError):
        usage([], [], **args)


def test_a_negative_node_count_is_refused():
    with pytest.raises(ValueError, match="negative"):
        node_seconds([NodeSample(T0, -1, 0)], T0, at(10))

"""The planner's arithmetic (shared.planner), checked against numbers worked out by hand."""
from __future__ import annotations

import json

import pytest

from shared import planner
from shared.planner import Overheads, Pool, Workload, default_items_per_task, monitor_wait, plan, predict, recommend
from shared.pricing import PriceTable

# round numbers, so each step below can be followed by hand
ROUND = Overheads(node_allocation_s=100, image_pull_s=20, task_overhead_s=4, monitor_tick_s=10, monitor_tail_s=0,
                  queue_poll_s=20,
                  autoscale_interval_s=300, intake_s=2, intake_per_task_s=0.5, finalize_s=3, finalize_per_task_s=1)
NONE = Overheads(**{name: 0.0 for name in Overheads.__dataclass_fields__})
PRICES = PriceTable.load(json.dumps({
    "currency": "USD", "region": "test", "date": "2026-12-01", "source": "made up for the test",
    "prices": {"Standard_X": {"dedicated": 3.6, "spot": 0.36}, "Standard_Y": {"dedicated": 1.0, "spot": None}}}))
POOL = Pool("standard_x")


def test_one_candidate_step_by_step():
    # 10 items of 6 s, 3 per task, at most 2 nodes of 1 slot, with an image
    p = predict(Workload(10, 6.0, has_image=True), 3, 2, POOL, ROUND, PRICES)
    assert (p.tasks, p.shard_items, p.last_shard_items) == (4, 3, 1)  # 3 + 3 + 3 + 1
    assert p.nodes == 2  # min(max_nodes 2, ceil(4 tasks / 1 slot))
    assert p.waves == 2  # ceil(4 / 2 slots)
    assert p.task_s == 22  # 3 x 6 + 4
    # intake 2 + 4 x 0.5 = 4; allocation 100 + pull 20; waves 22 + 22 (the last holds a full task);
    # tail: tick 10 / 2 + poll 20 / 2 + finalize 3 + 4 x 1 = 22
    assert p.wall_s == pytest.approx(4 + 120 + 44 + 22) == 190
    # both nodes from allocation to the end: 2 x (120 + 22 + 22 + 22)
    assert p.node_s == pytest.approx(2 * 186) == 372
    assert p.busy_slot_s == pytest.approx(3 * 22 + 10)  # three full tasks and the short one (6 + 4)
    assert p.efficiency == pytest.approx(76 / 372)
    assert p.cost is not None and p.cost.amount == pytest.approx(0.372)  # 372 s x 3.6 / 3600
    assert p.cost.currency == "USD" and p.cost_omitted is None
    assert p.feasible and p.flags == ()


def test_without_an_image_there_is_no_pull():
    with_image = predict(Workload(10, 6.0, has_image=True), 3, 2, POOL, ROUND)
    without = predict(Workload(10, 6.0), 3, 2, POOL, ROUND)
    assert with_image.wall_s - without.wall_s == pytest.approx(20)


def test_a_short_last_shard_alone_in_the_last_wave_shortens_it():
    # 7 items of 10 s, 3 per task: 3 + 3 + 1 on 2 nodes; the 1-item task runs alone in wave 2
    p = predict(Workload(7, 10.0), 3, 2, POOL, NONE)
    assert (p.tasks, p.nodes, p.waves) == (3, 2, 2)
    assert p.wall_s == pytest.approx(30 + 10)


def test_slots_per_node_pack_tasks_onto_fewer_nodes():
    # 8 tasks, 4 slots a node: the formula asks for ceil(8 / 4) = 2 nodes, capped by max_nodes
    assert predict(Workload(8, 1.0), 1, 10, Pool("standard_x", slots_per_node=4), NONE).nodes == 2
    capped = predict(Workload(8, 1.0), 1, 1, Pool("standard_x", slots_per_node=4), NONE)
    assert (capped.nodes, capped.waves) == (1, 2)


def test_nodes_idle_in_the_last_wave_leave_at_the_next_autoscale_evaluation():
    # 5 one-item tasks of 600 s on 4 nodes: wave 2 has one task; 3 nodes are idle for its 600 s but
    # held only half an evaluation interval (150 s) on average
    o = Overheads(**{**NONE.as_dict(), "autoscale_interval_s": 300.0})
    p = predict(Workload(5, 600.0), 1, 4, POOL, o)
    assert (p.nodes, p.waves, p.wall_s) == (4, 2, 1200)
    assert p.node_s == pytest.approx(4 * 600 + 1 * 600 + 3 * 150)
    # a run ending sooner than that releases them at its end
    short = predict(Workload(5, 60.0), 1, 4, POOL, o)
    assert short.node_s == pytest.approx(4 * 60 + 1 * 60 + 3 * 60)


def test_spot_time_is_priced_at_the_spot_price():
    p = predict(Workload(10, 6.0, has_image=True), 3, 2, Pool("Standard_X", spot=True), ROUND, PRICES)
    assert p.cost is not None and p.cost.amount == pytest.approx(0.0372)  # 372 s x 0.36 / 3600


@pytest.mark.parametrize("pool, prices, why", [
    (Pool("standard_unknown"), PRICES, "has no price for VM size 'standard_unknown'"),
    (Pool("standard_y", spot=True), PRICES, "has no spot price"),
    (Pool("?", existing="shared-pool"), PRICES, "shared with other work"),
    (POOL, None, "no price table"),
    (POOL, "PRICE_TABLE_BLOB 'x/y.json' does not exist", "PRICE_TABLE_BLOB 'x/y.json' does not exist"),
])
def test_cost_is_omitted_with_the_reason_when_the_price_is_unknown(pool, prices, why):
    p = predict(Workload(10, 6.0), 3, 2, pool, ROUND, prices)
    assert p.cost is None and p.amount is None and why in p.cost_omitted
    doc = p.as_json()
    assert "cost" not in doc and why in doc["cost_omitted"]


def test_an_existing_pool_has_its_size_and_no_allocation():
    p = predict(Workload(10, 6.0), 3, 3, Pool("?", existing="mine"), ROUND)
    assert p.nodes == 3  # the pool's size, not what the tasks would ask for
    # 4 tasks on 3 slots: wave 1 three full tasks (22 s), wave 2 the short one alone (10 s); no allocation
    assert p.wall_s == pytest.approx(4 + 22 + 10 + 22)
    assert p.cost is None and "shared with other work" in p.cost_omitted


def test_limits_make_a_candidate_infeasible():
    w = Workload(1000, 1.0, task_timeout_s=60, max_tasks=500)
    too_many = predict(w, 1, 10, POOL, NONE)
    assert not too_many.feasible and "too-many-tasks" in too_many.flags
    too_long = predict(w, 100, 10, POOL, NONE)  # 100 s per task, the timeout is 60 s
    assert not too_long.feasible and too_long.flags == ("over-timeout",)
    fine = predict(w, 20, 10, POOL, NONE)
    assert fine.feasible and fine.flags == ()
    short = predict(w, 5, 10, POOL, NONE)  # 5 s of work: under Batch's advised 10 s, still feasible
    assert short.feasible and short.flags == ("short-tasks",)


def candidates(deadline_s):
    # 100 items of 30 s on up to 10 nodes, with the Azure defaults
    return plan(Workload(100, 30.0), [1, 10, 50, 100], [10], POOL, Overheads(), PRICES, deadline_s)


def test_the_cheapest_that_meets_the_deadline_is_recommended():
    by_size = {c.items_per_task: c for c in candidates(None).candidates}
    # Azure defaults: allocation 240, per task 5, the monitor's wait (30 - 15)^2 / (2 x 30) = 3.75 (a tick
    # every 30 s watching a last wave for 15 s), poll 2 / 2 (host.json), intake 5 + 2.5 ms a task, finalize
    # 5 + 10 ms a task. 1 item a task: 100 tasks, 10 nodes, 10 waves of 35 s:
    #   5.25 + 240 + 350 + (3.75 + 1 + 5 + 1) = 606 s; nodes 10 x (240 + 9 x 35) + 10 x (35 + 10.75) = 6007.5
    # 10 a task: 10 tasks, 1 wave of 305 s: 5.025 + 240 + 305 + 9.85 = 559.875; 10 x 240 + 10 x 314.85 = 5548.5
    # 50 a task: 2 tasks on 2 nodes: 5.005 + 240 + 1505 + 9.77 = 1759.775; 2 x 240 + 2 x 1514.77 = 3509.54
    # 100 a task: 1 task: 5.0025 + 240 + 3005 + 9.76 = 3259.7625; 240 + 3014.76 = 3254.76
    assert {k: round(c.wall_s, 4) for k, c in by_size.items()} == {1: 606.0, 10: 559.875, 50: 1759.775,
                                                                   100: 3259.7625}
    assert {k: round(c.node_s, 4) for k, c in by_size.items()} == {1: 6007.5, 10: 5548.5, 50: 3509.54,
                                                                   100: 3254.76}
    assert by_size[50].cost is not None and by_size[50].cost.amount == pytest.approx(3509.54 / 3600 * 3.6, abs=1e-4)
    rec = candidates(35 * 60).recommendation  # 1, 10 and 50 finish within 35 minutes; 50 is the cheapest
    assert rec.choice is not None and rec.choice.items_per_task == 50 and rec.meets_deadline is True
    assert "within the deadline" in rec.reason
    tight = candidates(11 * 60).recommendation  # only 1 and 10 make 11 minutes: 10 uses less node time
    assert tight.choice is not None and tight.choice.items_per_task == 10 and tight.meets_deadline


def test_when_none_meets_the_deadline_the_fastest_is_recommended_and_it_says_so():
    rec = candidates(5 * 60).recommendation
    assert rec.choice is not None and rec.choice.items_per_task == 10 and rec.meets_deadline is False
    assert "none finishes within the deadline" in rec.reason


def test_without_a_deadline_the_cheapest_is_recommended():
    rec = candidates(None).recommendation
    assert rec.choice is not None and rec.choice.items_per_task == 100 and rec.meets_deadline is None


def test_infeasible_candidates_are_never_recommended():
    w = Workload(100, 30.0, task_timeout_s=600)  # 50 and 100 items a task take over 10 minutes
    rec = plan(w, [1, 10, 50, 100], [10], POOL, Overheads(), PRICES).recommendation
    assert rec.choice is not None and rec.choice.items_per_task == 10
    nothing = recommend([predict(w, 100, 10, POOL)], None)
    assert nothing.choice is None and "no candidate can run" in nothing.reason


def test_the_order_of_candidates_is_kept_and_the_plan_is_deterministic():
    a = plan(Workload(100, 3.0), [10, 1, 10], [5, 2], POOL, Overheads(), PRICES, 3600)
    assert [(c.items_per_task, c.max_nodes) for c in a.candidates] == [(10, 5), (1, 5), (10, 2), (1, 2)]
    assert a == plan(Workload(100, 3.0), [10, 1], [5, 2], POOL, Overheads(), PRICES, 3600)


def test_default_items_per_task():
    assert default_items_per_task(1000) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    assert default_items_per_task(7) == (1, 2, 5, 7)
    assert default_items_per_task(1) == (1,)
    assert default_items_per_task(1000, max_tasks=100) == (10, 20, 50, 100, 200, 500, 1000)
    assert default_items_per_task(1000, also=(37,)) == (1, 2, 5, 10, 20, 37, 50, 100, 200, 500, 1000)
    assert default_items_per_task(1000, max_tasks=100, also=(3,)) == (10, 20, 50, 100, 200, 500, 1000)


def test_the_monitors_wait_after_the_last_task():
    assert monitor_wait(30, 0) == 15  # half a tick
    assert monitor_wait(30, 15) == 3.75  # ends in the first half are seen at once, the rest wait 7.5 s
    assert monitor_wait(30, 30) == monitor_wait(30, 45) == monitor_wait(0, 0) == 0


def test_the_defaults_are_the_documented_constants():
    o = Overheads()
    assert (o.node_allocation_s, o.image_pull_s, o.task_overhead_s, o.monitor_tick_s, o.monitor_tail_s,
            o.queue_poll_s) == (planner.NODE_ALLOCATION_S, planner.IMAGE_PULL_S, planner.TASK_OVERHEAD_S,
                                planner.MONITOR_TICK_S, planner.MONITOR_TAIL_S, planner.QUEUE_POLL_S)


@pytest.mark.parametrize("make", [
    lambda: Overheads(task_overhead_s=-1),
    lambda: Overheads(node_allocation_s=float("nan")),
    lambda: Workload(0, 1.0),
    lambda: Workload(10, -1.0),
    lambda: Pool("x", slots_per_node=0),
    lambda: predict(Workload(10, 1.0), 0, 1, POOL),
    lambda: plan(Workload(10, 1.0), [], [1], POOL),
])
def test_nonsense_is_refused(make):
    with pytest.raises(ValueError):
        make()

"""How finalize sizes its parts (shared.merge_parts.PartSizer) and groups a listing by task
(shared.task_outputs.by_task): pure, no services."""
from __future__ import annotations

from shared.merge_parts import FIRST_PART, PART_SHARE, PartSizer
from shared.task_outputs import by_task


def test_a_first_small_part_then_what_the_rate_merges_in_a_share_of_the_budget():
    sizer = PartSizer(budget=20.0, largest=2000)
    assert sizer.next_size() == FIRST_PART
    sizer.record(100, 1.25)  # 80 tasks a second
    assert sizer.next_size() == int(80 * 20.0 * PART_SHARE)  # 80: one second's worth


def test_parts_stay_within_the_setting_and_above_the_block_floor():
    fast = PartSizer(budget=240.0, largest=2000)
    fast.record(1000, 0.1)
    assert fast.next_size() == 2000
    slow = PartSizer(budget=1.0, largest=2000, smallest=30)
    slow.record(10, 10.0)
    assert slow.next_size() == 30
    assert PartSizer(budget=5.0, largest=50, smallest=7).next_size() == 50  # FIRST_PART capped, floor kept


def test_a_budget_of_zero_gives_every_part_the_settings_size():
    sizer = PartSizer(budget=0.0, largest=4)
    assert sizer.next_size() == 4
    sizer.record(4, 100.0)
    assert sizer.next_size() == 4


def test_a_listing_is_grouped_by_task_in_one_pass():
    listing = {"tasks/t000001/output.jsonl": 10, "tasks/t000001/extra/a.bin": 3, "tasks/t000002-r1/output.jsonl": 4,
               "tasks/loose": 1}
    assert by_task(listing) == {"t000001": {"output.jsonl": 10, "extra/a.bin": 3}, "t000002-r1": {"output.jsonl": 4}}

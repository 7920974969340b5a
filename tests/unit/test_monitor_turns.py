"""The monitor's tick order: runs a tick had no time for come first next tick (pure)."""
from shared.watch import in_turn


def test_without_a_cursor_runs_are_taken_in_name_order():
    assert in_turn(["c", "a", "b"], None) == ["a", "b", "c"]


def test_a_tick_starts_after_the_run_where_the_last_one_stopped_and_wraps_around():
    assert in_turn(["a", "b", "c", "d"], "b") == ["c", "d", "a", "b"]
    assert in_turn(["a", "b", "c"], "c") == ["a", "b", "c"]
    assert in_turn(["a", "c"], "b") == ["c", "a"]  # the cursor's run has finished meanwhile

"""The monitor's tick order: runs a tick had no time for come first next tick (pure)."""
from shared.watch import in_turn


def test_without_a_cursor_runs_are_taken_in_name_order():
    assert in_turn(["c", "a", "b"], None) == ["a", "b", "c"]


def test_a_tick_starts_after_the_run_where_the_last_one_stopped_and_wraps_around():
    assert in_turn(["a", "b", "c", "d"], "b") == ["c", "d", "a", "b"]
    assert in_turn(["a", "b", "c"], "c") == ["a", "b", "c"]
    assert in_turn(["a", "c"], "b") == ["c", "a"]  # the cursor's run has finished meanwhile


def test_a_slow_run_holds_one_thread_while_the_others_go_on():
    import threading
    import time

    from shared.watch import _covered

    others_done = threading.Event()
    seen: list[str] = []

    def look(run_id: str) -> str:
        if run_id == "a":  # slow: until the four others were looked at on the other thread
            return "waited" if others_done.wait(5) else "alone"
        seen.append(run_id)
        if len(seen) == 4:
            others_done.set()
        return "looked"

    began = time.monotonic()
    assert _covered(["a", "b", "c", "d", "e"], look, parallel=2, deadline=began + 60) == ["waited"] + ["looked"] * 4
    assert time.monotonic() - began < 4


def test_past_the_deadline_only_the_first_runs_are_started():
    import time

    from shared.watch import _covered

    assert _covered(["a", "b", "c", "d"], lambda r: r.upper(), parallel=2, deadline=time.monotonic() - 1) == ["A", "B"]

"""Run states and the monitor's decision, without services."""
import pytest

from shared.runs import can_transition
from shared.watch import decide


@pytest.mark.parametrize("a, b, ok", [
    ("accepted", "running", True), ("accepted", "rejected", True), ("running", "merging", True),
    ("merging", "succeeded", True), ("merging", "failed", True), ("running", "cancelled", True),
    ("succeeded", "running", False), ("rejected", "accepted", False), ("running", "succeeded", False),
    ("merging", "running", False), ("failed", "failed", True),
])
def test_transitions(a, b, ok):
    assert can_transition(a, b) is ok


def counts(total, succeeded=0, failed=0, running=0):
    return {"total": total, "active": total - succeeded - failed - running, "running": running,
            "succeeded": succeeded, "failed": failed}


def test_done_only_when_every_task_finished():
    assert not decide(counts(3, succeeded=2, running=1), "fail").done
    assert decide(counts(3, succeeded=3), "fail").done
    assert not decide(counts(0), "fail").done


def test_fail_policy_stops_at_the_first_failure_partial_waits():
    early = decide(counts(4, succeeded=1, failed=1, running=2), "fail")
    assert early.done and early.failed_fast
    assert not decide(counts(4, succeeded=1, failed=1, running=2), "partial").done
    assert decide(counts(4, succeeded=3, failed=1), "partial").done

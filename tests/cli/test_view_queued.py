"""The CLI shows a queued run like the other states: its colour, its place in line and why it waits."""
from __future__ import annotations

import io

from rich.console import Console

from batchdrop_cli.client import RunStatus
from batchdrop_cli.view import STATE_STYLE, RunView, queued_text


def test_a_queued_run_shows_its_place_and_reason():
    status = RunStatus({"run_id": "r-1", "state": "queued", "queue_position": 2,
                        "queued_reason": "2 runs are admitted already (setting MAX_ACTIVE_RUNS)",
                        "tasks": {"total": 0}})
    assert "queued" in STATE_STYLE and not status.terminal
    assert queued_text(status) == "#2 in line: 2 runs are admitted already (setting MAX_ACTIVE_RUNS)"
    buffer = io.StringIO()
    with RunView(Console(file=buffer, width=200), "r-1", live=False) as view:
        view.show(status)
    assert "queued    #2 in line: 2 runs are admitted" in buffer.getvalue()


def test_a_run_still_submitting_shows_how_many_tasks_are_in():
    doc = {"run_id": "r-2", "state": "running", "submitted": 3000, "tasks": {"total": 100000, "succeeded": 12,
                                                                              "running": 8}}
    buffer = io.StringIO()
    with RunView(Console(file=buffer, width=200), "r-2", live=False) as view:
        view.show(RunStatus(doc))
        view.show(RunStatus({**doc, "submitted": 100000}))
    _, first, second = buffer.getvalue().splitlines()  # after "watching run r-2"
    assert "12/100000 tasks done, 8 running, 0 failed (3,000/100,000 submitted)" in first
    assert "submitted" not in second  # all in: nothing more to say

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

"""`batchdrop watch` in a real pseudo-terminal (the live progress bar, Ctrl-C), and what can be
done with a run that is still going: live logs from Batch, and cancel."""
from __future__ import annotations

import json
import os
import re

import pytest

from tests.cli.conftest import BATCHDROP
from tests.cli.terminal import PtyRun, run_in_pty
from tests.services import wait_for

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def submit(cli_stack, tmp_path, name: str, doc: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    result = cli_stack.call("submit", str(path))
    assert result.returncode == 0, result
    return result.stdout.splitlines()[0]


def test_watch_draws_a_live_bar_in_a_terminal(cli_stack, tmp_path):
    """The bar renders, updates as tasks finish, and the watch ends with the run's exit code."""
    run_id = submit(cli_stack, tmp_path, "bar.json", {
        "name": "cli-bar", "command": 'sleep 1; cp "$INPUT_PATH" "$OUTPUT_PATH"',
        "input": {"items": [1, 2, 3, 4, 5, 6]}, "items_per_task": 1})
    # watched at once: the job file may not have been picked up yet (the view waits for it)
    run = run_in_pty([str(BATCHDROP), "watch", run_id, "--interval", "0.3"], cli_stack.env(), cwd=str(tmp_path),
                     rows=30, cols=140, timeout=90)
    text = run.text
    assert run.code == 0, (text[-3000:], cli_stack.devhost_log())
    plain = ANSI.sub("", text)
    assert "━" in plain  # the bar itself
    assert "\x1b[" in text and ("\x1b[2K" in text or "\x1b[1A" in text or "\r" in text)  # redrawn in place
    counts = set(re.findall(r"(\d)/6", plain))
    assert "6" in counts and len(counts) >= 2, counts  # it moved, and got to the end
    assert re.search(r"running\s+━", plain) and "tasks/s" in plain and "elapsed 0:00:0" in plain
    assert f"run {run_id} succeeded: 6/6 tasks" in plain


def test_running_run_ctrl_c_live_logs_and_cancel(cli_stack, tmp_path):
    run_id = submit(cli_stack, tmp_path, "long.json", {
        "name": "cli-long", "command": "echo live-marker; echo live-err >&2; sleep 30",
        "input": {"items": [1]}, "retries": 0})
    wait_for(lambda: ((cli_stack.status(run_id) or {}).get("tasks") or {}).get("running") == 1, timeout=60,
             what=f"{run_id}'s task to run")

    # Ctrl-C in the terminal stops watching, never the run
    def interrupt_when_drawn(run: PtyRun, master: int) -> None:
        if "━" in run.text and not run.events:
            run.events.append("sent ^C")
            os.write(master, b"\x03")
    watched = run_in_pty([str(BATCHDROP), "watch", run_id, "--interval", "0.3"], cli_stack.env(),
                         cwd=str(tmp_path), timeout=60, on_output=interrupt_when_drawn)
    assert watched.events == ["sent ^C"]
    assert watched.code == 130, watched.text[-2000:]
    assert "the run goes on" in watched.text and "Traceback" not in watched.text
    assert cli_stack.status(run_id)["state"] == "running"

    # a running task's live output comes from Batch
    live = cli_stack.call("logs", run_id, "t000000")
    assert live.returncode == 0, live
    assert live.stdout == "--- stdout (live) ---\nlive-marker\n--- stderr (live) ---\nlive-err\n"
    assert "task t000000 is running (live from Batch)" in live.stderr
    overview = cli_stack.call("logs", run_id)
    assert overview.returncode == 0 and "1 running task(s) (t000000)" in overview.stderr
    # ... only when Batch is configured
    no_batch = tmp_path / "no-batch.settings.json"
    values = {k: v for k, v in cli_stack.values.items() if not k.startswith("BATCH_")}
    no_batch.write_text(json.dumps({"Values": values}))
    without = cli_stack.call("logs", run_id, "t000000", settings=no_batch)
    assert without.returncode == 4 and "BATCH_ACCOUNT_URL" in without.stderr

    cancelled = cli_stack.call("cancel", run_id, "--wait", "--interval", "0.3")
    assert cancelled.returncode == 0, (cancelled, cli_stack.devhost_log())
    assert f"cancel requested: dropped {cli_stack.settings.intake_container}/" in cancelled.stdout
    assert f"run {run_id} cancelled" in cancelled.stdout
    assert cli_stack.status(run_id)["state"] == "cancelled"

    ended = cli_stack.call("watch", run_id)
    assert ended.returncode == 3
    assert re.search(rf"run {run_id} cancelled .*: cancelled by {cli_stack.settings.intake_container}/\S+/"
                     rf"cancel-{run_id}\.json", ended.stdout)
    again = cli_stack.call("cancel", run_id)
    assert again.returncode == 0 and "already cancelled; nothing to cancel" in again.stdout

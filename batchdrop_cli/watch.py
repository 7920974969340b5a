"""Follow a run until it ends, and say how it ended (the exit code of watch, submit --wait, results)."""
from __future__ import annotations

import time
from collections.abc import Callable

import click

from batchdrop_cli.client import Contract, RunStatus
from batchdrop_cli.errors import INTERRUPTED, OK, RUN_FAILED, RUN_STOPPED, TIMED_OUT, UNREACHABLE, CliError
from batchdrop_cli.view import RunView, console, duration, is_live, size

Locate = Callable[[], tuple[str, RunStatus | None]]

EXIT_BY_STATE = {"succeeded": OK, "failed": RUN_FAILED, "cancelled": RUN_STOPPED, "rejected": RUN_STOPPED}


def follow(contract: Contract, locate: Locate, *, interval_s: float, timeout_s: float | None,
           plain: bool = False) -> tuple[int, RunStatus | None]:
    """Show the run until it reaches a final state; returns the exit code and the last status.

    Ctrl-C stops watching (INTERRUPTED), never the run; so does `timeout_s` running out (TIMED_OUT)."""
    out = console()
    run_id, status = locate()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    view = RunView(out, run_id, live=is_live(out) and not plain)
    try:
        with view:
            next_poll = time.monotonic() + interval_s
            lost = False
            while True:
                view.show(status)
                if status is not None and status.terminal:
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    view.close()
                    click.echo(f"stopped watching run {run_id} after {duration(timeout_s)}: it is still "
                               f"{status.state if status else 'waiting for intake'} and goes on", err=True)
                    return TIMED_OUT, status
                if now >= next_poll:
                    next_poll = now + interval_s
                    try:
                        run_id, status = locate()
                    except CliError as e:  # a network blip does not end the watch; the deadline still holds
                        if e.code != UNREACHABLE:
                            raise
                        if not lost:
                            click.echo(f"lost contact with storage ({e.message}); still trying", err=True)
                        lost = True
                    else:
                        lost = False
                    continue
                time.sleep(min(0.25, max(0.01, next_poll - now)))
    except KeyboardInterrupt:
        view.close()
        click.echo(f"\nstopped watching run {run_id}; the run goes on. Resume with `batchdrop watch {run_id}`, "
                   f"stop it with `batchdrop cancel {run_id}`", err=True)
        return INTERRUPTED, status
    return report_end(contract, status), status


def report_end(contract: Contract, status: RunStatus) -> int:
    """Say how a finished run ended (output, or why not) and return its exit code."""
    run, state = status.run_id, status.state
    tasks = f"{status.done}/{status.total} tasks"
    took = duration(status.duration_s())
    if state == "succeeded":
        report = contract.read_json(f"{run}/report.json") or {}
        output = status.doc.get("output") or report.get("output")
        nbytes = report.get("output_bytes")
        click.echo(f"run {run} succeeded: {tasks} in {took}")
        if output:
            click.echo(f"output:   {output}" + (f" ({size(nbytes)})" if isinstance(nbytes, int) else ""))
        click.echo(f"report:   {contract.results}/{run}/report.json")
        for warning in report.get("warnings") or []:
            click.echo(f"warning:  {warning}")
        click.echo(f"download: batchdrop results {run}")
        return OK
    message = error_message(contract, status)
    click.echo(f"run {run} {state} after {took} ({tasks}): {message}")
    if state == "failed":
        click.echo(f"failed tasks' output: batchdrop logs {run}")
    return EXIT_BY_STATE.get(state, RUN_FAILED)


def error_message(contract: Contract, status: RunStatus) -> str:
    """error.json's message, as the pipeline wrote it ("<field>: <message>" for a rejected job file)."""
    doc = contract.read_json(f"{status.run_id}/error.json") or {}
    return str(doc.get("error") or doc.get("message") or status.doc.get("error") or "no reason given")

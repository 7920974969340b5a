"""`batchdrop`: submit job files, watch runs, fetch their results. A client of the user contract
(the intake container and the results layout, docs/jobfile.md), so it works the same on the local
stack and against a deployment.

This module is the command line itself (commands, options, help, exit codes); what each command
does is `batchdrop_cli.commands`, imported only when a command runs (so --help is quick).
"""
from __future__ import annotations

import functools
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from batchdrop_cli import __version__
from batchdrop_cli.errors import EXIT_CODES, INTERRUPTED, UNEXPECTED, CliError

EPILOG = ("Where: the local stack by default (local.settings.json, else local.settings.sample.json); "
          "--account NAME / BATCHDROP_STORAGE_ACCOUNT (az login), BATCHDROP_STORAGE_CONNECTION_STRING, "
          "--settings FILE / BATCHDROP_SETTINGS, or the outputs of an azd environment.\n\n"
          "Exit codes (each command's --help says which it uses):\n\n\b\n"
          + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES))


class Duration(click.ParamType):
    """90s, 15m, 24h, 7d, or a plain number in `unit` (seconds by default); converted to seconds."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def __init__(self, unit: str = "s") -> None:
        self.unit = unit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value) * self._UNITS[self.unit]
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not a duration such as 90s, 15m, 24h or 7d", param, ctx)
        return float(match.group(1)) * self._UNITS[match.group(2) or self.unit]


DURATION = Duration()
MINUTES = Duration("m")


class Counts(click.ParamType):
    """Whole numbers of 1 or more, comma-separated (the option may also be repeated): 10,50,100."""

    name = "n[,n...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        if not parts or not all(re.fullmatch(r"\d+", p) and int(p) >= 1 for p in parts):
            self.fail(f"{value!r} is not a list of whole numbers of 1 or more, such as 10,50,100", param, ctx)
        return tuple(int(p) for p in parts)


COUNTS = Counts()


def _flatten(_ctx: click.Context, _param: click.Parameter, value: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """A repeated COUNTS option as one tuple, in the order given, without repeats."""
    return tuple(dict.fromkeys(n for counts in value for n in counts))


class PositiveSeconds(click.ParamType):
    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"{value!r} is not a number of seconds, 0 or more", param, ctx)
        return seconds


def connection_options(fn: Callable) -> Callable:
    """--account, --settings and --debug on every command that talks to storage."""
    fn = click.option("--debug", is_flag=True, envvar="BATCHDROP_DEBUG",
                      help="Show tracebacks (also BATCHDROP_DEBUG=1).")(fn)
    fn = click.option("--settings", "settings_file", metavar="FILE",
                      help="A local.settings.json-style file to read (also BATCHDROP_SETTINGS).")(fn)
    fn = click.option("--account", metavar="NAME",
                      help="Storage account name or blob endpoint URL of a deployment, reached with "
                           "DefaultAzureCredential (also BATCHDROP_STORAGE_ACCOUNT).")(fn)
    return fn


def handled(fn: Callable[..., Any]) -> Callable[..., None]:
    """Run the command of this name in `batchdrop_cli.commands` and exit with its code; errors
    become a message and an exit code (a traceback only with --debug)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        debug = bool(kwargs.pop("debug", False))
        try:
            from batchdrop_cli import commands

            code = getattr(commands, fn.__name__)(*args, **kwargs)
        except CliError as e:
            if debug:
                traceback.print_exc()
            click.echo(f"batchdrop: {e.message}", err=True)
            if e.hint:
                click.echo(f"  {e.hint}", err=True)
            code = e.code
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            code = INTERRUPTED
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as e:  # noqa: BLE001 - the one place that turns any bug into a message
            if debug:
                traceback.print_exc()
            first = str(e).splitlines()[0][:300] if str(e) else ""
            click.echo(f"batchdrop: unexpected error: {type(e).__name__}: {first}", err=True)
            click.echo("  run again with --debug for the traceback", err=True)
            code = UNEXPECTED
        sys.exit(code)

    return run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=EPILOG)
@click.version_option(__version__, prog_name="batchdrop")
def cli() -> None:
    """Run a job file on Azure Batch through batchdrop, and follow it.

    \b
      batchdrop submit JOB.json --input data.jsonl --wait
      batchdrop results RUN -o out/
    """


@cli.command()
@click.argument("job_files", metavar="JOB_FILE...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print one {\"file\", \"valid\", \"field\", \"message\", \"error\"} line per file.")
@connection_options
@handled
def validate(job_files: tuple[Path, ...], as_json: bool, settings_file: str | None, account: str | None,
             debug: bool) -> None:
    """Check job files offline, with the intake's own validation (and the configured containers
    and limits).

    Exit 0 if all are valid; exit 2 if one is not, with the message its error.json would carry
    ("<field>: <message>", the field path included); 4 for a file that does not exist."""


@cli.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--input", "input_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Upload this local file to the data container (data/uploads/...) and run the job on it.")
@click.option("--name", help="Run name (the job file's \"name\").")
@click.option("--wait", is_flag=True, help="Then watch the run until it ends (exit code as watch).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between status reads.")
@click.option("--timeout", type=DURATION, help="With --wait: stop watching after this long (exit 7).")
@click.option("--plain", is_flag=True, help="With --wait: one line per change even on a terminal.")
@connection_options
@handled
def submit(job_file: Path, input_file: Path | None, name: str | None, wait: bool, interval: float,
           timeout: float | None, plain: bool, settings_file: str | None, account: str | None, debug: bool) -> None:
    """Validate a job file, upload its input, drop it into intake and print the run id.

    The run id is printed on stdout (first line) exactly as intake computes it; messages go to
    stderr. Exit 0 once dropped, 2 for an invalid job file (nothing is uploaded or dropped), 4 for
    a missing file; with --wait, as watch: 0 succeeded, 1 failed, 3 cancelled or rejected, 7 on
    --timeout, 130 on Ctrl-C (the run goes on)."""


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("blob", required=False)
@connection_options
@handled
def upload(path: Path, blob: str | None, settings_file: str | None, account: str | None, debug: bool) -> None:
    """Upload a local file (a folder: as a zip) for job files to read, with a progress bar.

    BLOB is "<container>/<path>" in a container job files may read (default: the data container,
    data/uploads/<time>/<name>); a folder is zipped, so BLOB must end in .zip (what "resources"
    with "unzip": true takes). Prints the blob reference to put in a job file. Exit 0; 2 for a
    BLOB job files may not read; 4 for a missing PATH."""


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between status reads.")
@click.option("--timeout", type=DURATION, help="Stop watching after this long (exit 7); the run goes on.")
@click.option("--plain", is_flag=True, help="One line per change even on a terminal.")
@connection_options
@handled
def watch(run_id: str, interval: float, timeout: float | None, plain: bool, settings_file: str | None,
          account: str | None, debug: bool) -> None:
    """Follow a run until it ends: state, progress bar of finished/total tasks, running and failed
    counts, task rate, elapsed time and ETA (one line per change when stdout is not a terminal).

    Exit 0 succeeded, 1 failed, 3 cancelled or rejected (error.json's message is printed),
    130 on Ctrl-C (the run goes on)."""


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print status.json as it is.")
@connection_options
@handled
def status(run_id: str, as_json: bool, settings_file: str | None, account: str | None, debug: bool) -> None:
    """Show a run's state, task counts, times, output and error (exit 0 whatever its state; 4 for
    an unknown run, listing the closest)."""


@cli.command()
@click.option("--state", "states", multiple=True, metavar="S",
              help="Only runs in this state (repeat, or comma-separate: running,merging).")
@click.option("--since", type=DURATION, help="Only runs started within this long (24h, 30m, 7d).")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many (newest first); 0: all.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs' status.json documents as a JSON list.")
@connection_options
@handled
def runs(states: tuple[str, ...], since: float | None, limit: int, as_json: bool, settings_file: str | None,
         account: str | None, debug: bool) -> None:
    """List runs, newest first: id, state, tasks done/total, started, duration (exit 0, also when
    none match)."""


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.argument("task", required=False)
@click.option("--stdout", "stream", flag_value="stdout", help="Only stdout.")
@click.option("--stderr", "stream", flag_value="stderr", help="Only stderr.")
@connection_options
@handled
def logs(run_id: str, task: str | None, stream: str | None, settings_file: str | None, account: str | None,
         debug: bool) -> None:
    """Captured output of a run's failed tasks (results/<run>/tasks/<task>/), or of one TASK.

    A running task's live stdout/stderr comes from Batch when a Batch account is configured
    (BATCH_ACCOUNT_URL). Exit 0, or 4 when there is no such run, task or output."""


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder to download into (default: ./RUN).")
@click.option("--force", is_flag=True, help="Overwrite files that are already there.")
@connection_options
@handled
def results(run_id: str, out_dir: Path | None, force: bool, settings_file: str | None, account: str | None,
            debug: bool) -> None:
    """Download a finished run's results: the merged output, report.json, status.json, error.json,
    and tasks/ (per-task outputs for merge "none", failed tasks' output), with a progress bar and
    each file's size checked.

    Exit as watch for the run's end (0 succeeded, 1 failed, 3 cancelled or rejected); 6 if a file
    would be overwritten (use --force) or the run has not finished."""


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--wait", is_flag=True, help="Wait until the run has ended.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between status reads.")
@click.option("--timeout", type=DURATION, help="With --wait: stop waiting after this long (exit 7).")
@connection_options
@handled
def cancel(run_id: str, wait: bool, interval: float, timeout: float | None, settings_file: str | None,
           account: str | None, debug: bool) -> None:
    """Stop a run: drops {"cancel": RUN} into intake (its job, pool and work containers are deleted).

    Exit 0 once the request is dropped (with --wait: once the run ended cancelled, or had succeeded
    first; 1 if it failed first); 0 too for a run that had already ended (nothing is dropped)."""


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--command", help="Run the tasks again with this command instead of the job file's.")
@click.option("--image", help="... in this container image instead.")
@click.option("--retries", type=click.IntRange(0, 100), help="... with this many retries per task instead.")
@click.option("--task-timeout-minutes", type=click.IntRange(1, 10080), help="... with this time limit per task.")
@click.option("--wait", is_flag=True, help="Wait until the new run has ended (as watch).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between status reads.")
@click.option("--timeout", type=DURATION, help="With --wait: stop waiting after this long (exit 7).")
@click.option("--plain", is_flag=True, help="With --wait: plain lines instead of a live view.")
@connection_options
@handled
def rerun(run_id: str, command: str | None, image: str | None, retries: int | None,
          task_timeout_minutes: int | None, wait: bool, interval: float, timeout: float | None, plain: bool,
          settings_file: str | None, account: str | None, debug: bool) -> None:
    """Run again the tasks of an ended run that did not succeed: drops {"rerun": RUN, ...} into intake.

    A new run (printed) reuses the outputs of RUN's tasks that succeeded and merges all in task
    order; the options replace the job file's fields of the same names. A run can be rerun for
    KEEP_TASK_OUTPUTS_HOURS after it ended (docs/jobfile.md, Rerunning a run). Exit 0 once the
    request is dropped (with --wait: as watch); 6 for a run that has not ended."""


@cli.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--input", "input_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Count the items of this local file (as `submit --input` would run the job on it).")
@click.option("--seconds-per-item", type=PositiveSeconds(), metavar="S", help="How long one item takes.")
@click.option("--sample", type=click.IntRange(min=1), metavar="N",
              help="Run the job's command here on the first N items (no container) and measure it instead.")
@click.option("--deadline", type=MINUTES, metavar="MINUTES",
              help="Recommend the cheapest choice finishing within this (minutes, or 90s, 2h, 1d).")
@click.option("--max-nodes", "max_nodes", type=COUNTS, multiple=True, metavar="N[,N...]", callback=_flatten,
              help="Pool sizes to compare (default: the job file's or the settings' max_nodes).")
@click.option("--items-per-task", "items_per_task", type=COUNTS, multiple=True, metavar="N[,N...]", callback=_flatten,
              help="Split sizes to compare (default: 1, 2, 5, 10, 20, 50, ... and the job file's own).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON document.")
@connection_options
@handled
def plan(job_file: Path, input_file: Path | None, seconds_per_item: float | None, sample: int | None,
         deadline: float | None, max_nodes: tuple[int, ...], items_per_task: tuple[int, ...], as_json: bool,
         settings_file: str | None, account: str | None, debug: bool) -> None:
    """Predict a job's wall time, node time and cost for several splits, and recommend one.

    Counts the job's items (inline, --input FILE, or the blob or prefix the job file names, read
    through the configured storage), then for each items_per_task and max_nodes prints the task
    count, waves, wall time, node-hours and cost (list prices), with stated constants for node
    allocation, image pull and per-task overhead (docs/planner.md). Give --seconds-per-item, or
    --sample N to time the command here. Exit 0; 2 for an invalid job file or arguments; 4 for a
    missing file or input; 5 when storage the input is in cannot be reached; 1 when the sample's
    command fails."""


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Folder to save report.html in (default: ./RUN).")
@click.option("--open", "open_it", is_flag=True, help="Then open it in a browser (says so when there is none).")
@connection_options
@handled
def report(run_id: str, out_dir: Path | None, open_it: bool, settings_file: str | None, account: str | None,
           debug: bool) -> None:
    """Download a finished run's report.html (timeline, durations, failures, usage and cost) and
    print where it is.

    Exit 0 (also when --open finds no browser); 4 for an unknown run or one with no report (a
    rejected run); 6 while the run has not finished."""


def main() -> None:
    cli(prog_name="batchdrop")


__all__ = ["cli", "main"]

"""What the commands print: consoles, transfer progress bars, the live view of a run, and the
one-line-per-change form of it for logs (stdout not a terminal)."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column

from batchdrop_cli.client import RunStatus

BAR_WIDTH, MIN_BAR_WIDTH = 30, 10
STATE_STYLE = {"accepted": "cyan", "queued": "bright_black", "running": "blue", "merging": "magenta",
               "succeeded": "green", "failed": "red", "cancelled": "yellow", "rejected": "red", "submitted": "dim"}


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr). Not a terminal: no colour, no wrapping of long lines."""
    stream = sys.stderr if stderr else sys.stdout
    if _live_capable(stream):
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, width=max(200, _columns()), no_color=True)


def _columns() -> int:
    try:
        return int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        return 0


def _live_capable(stream) -> bool:
    """Live drawing only on a real, capable terminal (or when TTY_INTERACTIVE=1 asks for it)."""
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


def is_live(out: Console) -> bool:
    return _live_capable(out.file)


# ---------------------------------------------------------------------- formatting


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value):,} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def local_time(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def styled_state(state: str, width: int = 0) -> str:
    style = STATE_STYLE.get(state)
    text = escape(f"{state:<{width}}")
    return f"[{style}]{text}[/]" if style else text


# ---------------------------------------------------------------------- transfers


@contextmanager
def transfer(out: Console, label: str, total: int | None) -> Iterator[Callable[[int, int | None], None]]:
    """A byte progress bar for one upload or download; yields the SDK's progress hook. Not a
    terminal: one line before and one after instead."""
    if not is_live(out):
        out.print(f"{label} ({size(total)})")
        yield lambda current, total_: None
        out.print(f"{label}: done")
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task(escape(label), total=total)

        def hook(current: int, total_: int | None) -> None:
            progress.update(task, completed=current, total=total_ or total)
        yield hook
        progress.update(task, completed=total or 0)


# ---------------------------------------------------------------------- the live view of a run


class RunView:
    """Progress of one run, live (a rich progress bar) or as a line per change."""

    def __init__(self, out: Console, run_id: str, live: bool) -> None:
        self.out = out
        self.run_id = run_id
        self.live = live
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._bar = BarColumn(bar_width=BAR_WIDTH)
        self._last_line: str | None = None

    def __enter__(self) -> RunView:
        if self.live:
            self.out.print(f"watching run [bold]{escape(self.run_id)}[/] (Ctrl-C stops watching; the run goes on)")
            self._bar = BarColumn(bar_width=BAR_WIDTH)
            self._progress = Progress(
                TextColumn("{task.fields[state]}", table_column=Column(no_wrap=True)),
                self._bar, MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[details]}", table_column=Column(no_wrap=True)),
                console=self.out, refresh_per_second=4, transient=False)
            self._progress.start()
            self._task = self._progress.add_task("run", total=None, state=styled_state("submitted", 9),
                                                 details="")
        else:
            self.out.print(f"watching run {self.run_id}")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def show(self, status: RunStatus | None) -> None:
        facts = Facts.of(status)
        if self._progress is not None and self._task is not None:
            total = facts.total or None
            if facts.state == "submitted":
                details = "waiting for intake to pick up the job file"
            elif status is not None and status.state == "queued":
                details = queued_text(status)
            else:
                details = (f"{submitting_text(status, ' · ')}{facts.running} running · {facts.failed} failed · "
                           f"eta {facts.eta_text} · elapsed {duration(facts.elapsed)} · {facts.rate_text}")
            # a narrow terminal narrows the bar, then cuts the details (least useful last)
            fixed = 9 + len(f"{facts.done}/{total or '?'}") + 4
            self._bar.bar_width = max(MIN_BAR_WIDTH, min(BAR_WIDTH, self.out.width - fixed - len(details)))
            room = self.out.width - fixed - self._bar.bar_width
            if len(details) > room:
                details = details[:max(0, room - 1)] + "…"
            self._progress.update(self._task, total=total, completed=facts.done, state=styled_state(facts.state, 9),
                                  details=details)
            return
        line = facts.line()
        if status is not None and status.state == "queued":
            line = f"queued    {queued_text(status)}"
        elif status is not None and submitting_text(status):
            line = f"{line} ({submitting_text(status)})"
        if line != self._last_line:  # only changes; elapsed time alone is not a change
            self._last_line = line
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            self.out.print(f"{stamp} {line}{facts.timing()}", markup=False)


def submitting_text(status: RunStatus | None, end: str = "") -> str:
    """A running run whose tasks still go into Batch in chunks: how many are in (status.json's
    `submitted` of `tasks.total`); "" once all are."""
    if status is None or status.state != "running":
        return ""
    submitted = status.doc.get("submitted")
    if not isinstance(submitted, int) or not status.total or submitted >= status.total:
        return ""
    return f"{submitted:,}/{status.total:,} submitted{end}"


def queued_text(status: RunStatus) -> str:
    """A queued run: its place in line and why it waits (status.json's queue_position, queued_reason)."""
    position = status.doc.get("queue_position")
    place = f"#{position} in line" if isinstance(position, int) else "in line"
    reason = status.doc.get("queued_reason")
    return f"{place}: {reason}" if reason else place


class Facts:
    """What the view shows of a status: counts, rate, elapsed time and ETA."""

    def __init__(self, state: str, total: int, done: int, running: int, failed: int, elapsed: float | None,
                 rate: float | None) -> None:
        self.state, self.total, self.done, self.running, self.failed = state, total, done, running, failed
        self.elapsed, self.rate = elapsed, rate

    @classmethod
    def of(cls, status: RunStatus | None, now: datetime | None = None) -> Facts:
        if status is None:
            return cls("submitted", 0, 0, 0, 0, None, None)
        now = now or datetime.now(UTC)
        elapsed = status.duration_s(now)
        since = status.time("submitted_at") or status.started
        rate = None
        if since is not None and status.done:
            end = status.ended or now
            span = (end - since).total_seconds()
            rate = status.done / span if span > 0 else None
        return cls(status.state, status.total, status.done, status.count("running"), status.count("failed"),
                   elapsed, rate)

    @property
    def rate_text(self) -> str:
        return "- tasks/s" if self.rate is None else f"{self.rate:.2f} tasks/s"

    @property
    def eta_s(self) -> float | None:
        if self.state != "running" or not self.rate or not self.total:
            return None
        return max(0, self.total - self.done) / self.rate

    @property
    def eta_text(self) -> str:
        return duration(self.eta_s) if self.eta_s is not None else "-"

    def line(self) -> str:
        if self.state == "submitted":
            return "submitted: waiting for intake to pick up the job file"
        total = str(self.total) if self.total else "?"
        return f"{self.state:<9} {self.done}/{total} tasks done, {self.running} running, {self.failed} failed"

    def timing(self) -> str:
        if self.state == "submitted":
            return ""
        return f", {self.rate_text}, elapsed {duration(self.elapsed)}, eta {self.eta_text}"


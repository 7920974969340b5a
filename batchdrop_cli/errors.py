"""Exit codes and the one error type the commands raise on purpose.

Every exit code the CLI can end with is listed here, with what it means; `batchdrop --help` and
the README print this table (`EXIT_CODES`).
"""
from __future__ import annotations

OK = 0  # the command did what was asked; for watch/submit --wait/results: the run succeeded
RUN_FAILED = 1  # the run failed (watch, submit --wait, results); plan --sample: the command failed
INVALID = 2  # bad arguments, or an invalid job file (validate, submit)
RUN_STOPPED = 3  # the run was cancelled or rejected (watch, submit --wait, results)
NOT_FOUND = 4  # no such run, task, file or log
UNREACHABLE = 5  # storage (or Batch) not configured, not reachable or not authorised; a transfer failed
REFUSED = 6  # results: the files exist (use --force) or the run has not finished yet; report: not finished
TIMED_OUT = 7  # watch --timeout ran out; the run goes on
INTERRUPTED = 130  # Ctrl-C; a watched run goes on
UNEXPECTED = 70  # a bug; run again with --debug for the traceback

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (OK, "success; for watch, submit --wait and results: the run succeeded"),
    (RUN_FAILED, "the run failed (watch, submit --wait, results); plan --sample: the command failed on the sample"),
    (INVALID, "bad arguments, or the job file is invalid (the message is the one error.json would carry)"),
    (RUN_STOPPED, "the run was cancelled or rejected (watch, submit --wait, results); error.json's message is printed"),
    (NOT_FOUND, "unknown run id (the closest runs are listed), task, file or log"),
    (UNREACHABLE, "storage or Batch not configured, not reachable or not authorised; or a download failed its "
                  "size check"),
    (REFUSED, "results: a file would be overwritten (use --force), or the run has not finished (results, report, "
              "rerun)"),
    (TIMED_OUT, "watch/submit --wait/cancel --wait --timeout ran out (the run goes on)"),
    (UNEXPECTED, "an unexpected error (run again with --debug for the traceback)"),
    (INTERRUPTED, "interrupted with Ctrl-C (a watched run goes on)"),
)


class CliError(Exception):
    """A failure the user can act on: `message` says what happened, `hint` what to do."""

    def __init__(self, message: str, code: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint

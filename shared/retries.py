"""Which task failures the infrastructure caused, and when such a task runs again (pure).

Azure Batch retries a task only for a non-zero exit code (maxTaskRetryCount). A task whose
resource files could not be downloaded, or whose outputs could not be uploaded, completes as
failed at once and is never retried; the Batch docs name "the storage account is no longer
available" as a cause of both (azure/batch/error-handling: pre-processing and file upload
errors). So a storage blip would fail whole runs. The monitor reactivates such tasks itself,
with a per-task budget (setting INFRA_RETRIES) and a backoff across its ticks; finalize does the
same for a succeeded task whose output turned out lost or corrupt (shared.finalize).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import naming

# Failure codes the Batch docs list for transfers that storage, not the job file, broke. A missing
# blob (BlobNotFound), a refused SAS (BlobAccessDenied), a disk the task filled (DiskFull) or a bad
# container image are the user's to fix and are never retried here.
INFRASTRUCTURE_CODES = frozenset({
    "BlobDownloadMiscError",  # resource file download failed (storage unreachable, 5xx)
    "BlobDownloadTimedOut",
    "FileUploadMiscError",  # output upload failed (storage unreachable, 5xx); our SAS always allows the write
    "FileUploadTimedOut",
})
# failureInfo.category: the service says the failure was on its side
SERVER_ERROR = "servererror"

BACKOFF_FIRST = timedelta(seconds=10)
BACKOFF_MAX = timedelta(minutes=2)


def is_infrastructure(failure: Mapping[str, object] | None, exit_code: int | None = None) -> bool:
    """Whether a task's failureInfo (category, code) is an infrastructure failure. A command that
    exited non-zero failed by itself, whatever happened to its uploads after (its logs' upload
    fails too when storage is down): that is the task's own retries' business."""
    if not failure or exit_code not in (None, 0):
        return False
    category = str(failure.get("category") or "").lower()
    return category == SERVER_ERROR or failure.get("code") in INFRASTRUCTURE_CODES


def backoff(used: int) -> timedelta:
    """The wait before a task's infrastructure retry number `used` + 1: 10 s, 20 s, 40 s ... 2 min."""
    return min(BACKOFF_FIRST * (2 ** max(0, used)), BACKOFF_MAX)


@dataclass(frozen=True)
class FailedTask:
    task_id: str  # the Batch task (a rerun has its own id, see naming.attempt_id)
    failure: Mapping[str, object] | None  # its failureInfo; None for a plain non-zero exit
    exit_code: int | None = None  # None when the command never ran (its input could not be downloaded)


@dataclass(frozen=True)
class RetryPlan:
    """What the monitor does with the failed tasks it listed."""

    reactivate: tuple[str, ...]  # Batch task ids to reactivate now
    waiting: Mapping[str, datetime]  # Batch task id -> when it is reactivated (after its backoff)
    used: Mapping[str, int]  # task id (naming.base_task_id) -> infrastructure retries spent, with these
    final: tuple[str, ...]  # failed for good: a user error, or the budget spent


def plan(failed: Sequence[FailedTask], used: Mapping[str, int], waiting: Mapping[str, datetime],
         now: datetime, budget: int) -> RetryPlan:
    """Each failed task either waits for its retry, is retried now (its wait is over), or has
    failed for good. A task is retried at most `budget` times in all (`used` counts them, also
    the reruns of lost outputs)."""
    spent, still_waiting = dict(used), {}
    reactivate, final = [], []
    for task in failed:
        base = naming.base_task_id(task.task_id)
        due = waiting.get(task.task_id)
        if due is not None:
            if due <= now:
                reactivate.append(task.task_id)
                spent[base] = spent.get(base, 0) + 1
            else:
                still_waiting[task.task_id] = due
        elif is_infrastructure(task.failure, task.exit_code) and spent.get(base, 0) < budget:
            still_waiting[task.task_id] = now + backoff(spent.get(base, 0))
        else:
            final.append(task.task_id)
    return RetryPlan(tuple(reactivate), still_waiting, spent, tuple(final))

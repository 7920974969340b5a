"""Live output of a run's tasks from Batch (optional: only when a Batch account is configured).

A run's Batch job has the run's id (docs/jobfile.md: a run id is a valid Batch job id); a task's
stdout.txt and stderr.txt are the task's files in Batch. Only the last `TAIL_BYTES` of each are read.
"""
from __future__ import annotations

from dataclasses import dataclass

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from batchdrop_cli.config import Target
from batchdrop_cli.errors import UNREACHABLE, CliError

TAIL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LiveTask:
    task_id: str
    state: str
    exit_code: int | None


def _state(value: object) -> str:
    """A task state as Batch names it ("running"), from the SDK's enum or a plain string."""
    return str(getattr(value, "value", value))


class LiveLogs:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.client = target.batch_client()

    @property
    def available(self) -> bool:
        return self.client is not None

    def _call(self, what: str, fn, *args, **kwargs):
        """Batch's answer; None for a job, task or file that does not exist (any more)."""
        url = self.target.settings.batch.account_url
        try:
            return fn(*args, **kwargs)
        except ResourceNotFoundError:
            return None
        except (ServiceRequestError, ServiceResponseError) as e:
            raise CliError(f"cannot reach Batch at {url} ({what}): {str(e).splitlines()[0][:200]}", UNREACHABLE,
                           hint="check BATCH_ACCOUNT_URL, or leave it unset (only live logs need Batch)") from None
        except ClientAuthenticationError as e:
            raise CliError(f"not allowed on Batch at {url} ({what}): {str(e).splitlines()[0][:200]}", UNREACHABLE,
                           hint="sign in with `az login` (a Batch reader role is enough for logs)") from None
        except HttpResponseError as e:
            if e.status_code == 404:
                return None
            raise CliError(f"Batch at {url} refused {what}: {e.status_code} {getattr(e, 'error_code', '')}",
                           UNREACHABLE) from None

    def tasks(self, run_id: str) -> list[LiveTask] | None:
        """The run's tasks as Batch sees them now; None when its job is gone (or there is no Batch)."""
        if self.client is None:
            return None
        found = self._call("listing tasks", lambda: list(self.client.list_tasks(  # type: ignore[union-attr]
            run_id, select=["id", "state", "executionInfo"])))
        if found is None:
            return None
        out = []
        for task in found:
            info = task.execution_info
            out.append(LiveTask(task.id, _state(task.state), info.exit_code if info else None))
        return out

    def task(self, run_id: str, task_id: str) -> LiveTask | None:
        if self.client is None:
            return None
        task = self._call(f"reading task {task_id}", self.client.get_task, run_id, task_id)
        if task is None:
            return None
        info = task.execution_info
        return LiveTask(task.id, _state(task.state), info.exit_code if info else None)

    def output(self, run_id: str, task_id: str, stream: str) -> bytes | None:
        """The last TAIL_BYTES of a task's stdout or stderr ("stdout"/"stderr"), None if it has none."""
        if self.client is None:
            return None
        name = f"{stream}.txt"
        props = self._call(f"reading {name} of {task_id}", self.client.get_task_file_properties, run_id, task_id, name)
        if props is None:
            return None
        size = int(props.content_length or 0)
        if size == 0:
            return b""
        start = max(0, size - TAIL_BYTES)
        chunks = self._call(f"downloading {name} of {task_id}", lambda: b"".join(self.client.download_task_file(  # type: ignore[union-attr]
            run_id, task_id, name, ocp_range=f"bytes={start}-{size - 1}")))
        return chunks

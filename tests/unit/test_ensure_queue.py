"""ensure_queue tells "the queue exists" (success) from "the queue is being deleted" (not yet): the SDK raises
ResourceExistsError for both. Azurite deletes at once, so a small stand-in queue client plays the service."""
from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError

from shared.storage import ensure_queue


def _exists_error(code: str) -> ResourceExistsError:
    error = ResourceExistsError(message=f"The specified queue ... ErrorCode:{code}")
    error.error_code = code
    return error


class ScriptedQueue:
    """Stands in for azure.storage.queue.QueueClient: `create_queue` answers from a script, in order
    (an exception to raise, or None for created)."""

    def __init__(self, *answers: BaseException | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    def create_queue(self) -> None:
        self.calls += 1
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer


def test_a_queue_that_exists_is_success():
    for code in ("QueueAlreadyExists", None):
        queue = ScriptedQueue(_exists_error(code) if code else ResourceExistsError("exists"))
        ensure_queue(queue, sleep=pytest.fail)
        assert queue.calls == 1


def test_a_queue_being_deleted_is_created_again_once_the_service_allows():
    queue = ScriptedQueue(_exists_error("QueueBeingDeleted"), _exists_error("QueueBeingDeleted"), None)
    pauses: list[float] = []
    ensure_queue(queue, sleep=pauses.append)
    assert queue.calls == 3 and pauses == [1.0, 2.0]


def test_a_queue_that_stays_deleted_past_the_wait_raises():
    queue = ScriptedQueue(*[_exists_error("QueueBeingDeleted")] * 10)
    with pytest.raises(ResourceExistsError):
        ensure_queue(queue, wait_s=0.5, sleep=lambda s: None)
    assert queue.calls == 1

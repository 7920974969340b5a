"""Domain errors. SDK exceptions are translated into these at the adapter boundary."""
from __future__ import annotations


class BatchdropError(Exception):
    """Base of every error the pipeline raises on purpose."""


class JobFileError(BatchdropError):
    """The job file cannot be run. `field` names the offending field (dotted path) or is None."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class InputNotFound(JobFileError):
    """A blob or prefix the job file points at does not exist (or is empty)."""


class RunNotFound(BatchdropError):
    """No run record for this run id."""


class Conflict(BatchdropError):
    """A conditional write lost a race: somebody else changed the record first."""


class BatchError(BatchdropError):
    """Azure Batch refused a request for another reason; `code` is the service's error code."""

    def __init__(self, message: str, code: str | None = None, transient: bool = False) -> None:
        self.code = code
        self.transient = transient  # a retry may succeed (server error, throttling)
        super().__init__(f"{code}: {message}" if code else message)


class BatchQuotaError(BatchError):
    """Azure Batch refused for lack of quota (active jobs, pools, cores): permanent for this run."""


class ConfigurationError(BatchdropError):
    """A required setting is missing or invalid."""

"""One parsed HTTP request, as the REST handlers see it."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BatchError


@dataclass
class Request:
    method: str
    path: str            # without the query string and trailing "/" ("/" for the root)
    raw_path: str        # as sent (what SharedKey signs)
    raw_query: str
    query: dict[str, str]             # first value of each parameter
    headers: dict[str, str]           # lower-case names
    raw_headers: list[tuple[str, str]]  # as sent (what SharedKey signs)
    base: str            # http://host:port as the client addressed us
    body: bytes = b""
    body_error: BatchError | None = field(default=None)  # a body that could not be read (answered after auth)

    def raise_body_error(self) -> None:
        if self.body_error is not None:
            raise self.body_error

"""Lifecycle events (run accepted, running, succeeded, failed) as CloudEvents on Event Grid.

Publishing is best effort: a run never fails because its event could not be sent.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from shared import identity
from shared.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import AzureKeyCredential, TokenCredential

log = logging.getLogger(__name__)
EVENT_SOURCE = "/batchdrop/runs"


class EventPublisher(Protocol):
    def publish(self, kind: str, run_id: str, data: dict) -> None: ...


class NullPublisher:
    """No topic configured: events are skipped."""

    def publish(self, kind: str, run_id: str, data: dict) -> None:
        return None


class RecordingPublisher:
    """Stand-in for Event Grid (which cannot run locally): keeps the events it is given, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def publish(self, kind: str, run_id: str, data: dict) -> None:
        self.events.append((kind, run_id, data))


class EventGridPublisher:
    """CloudEvents of type `batchdrop.run.<kind>` with subject `runs/<run_id>`."""

    def __init__(self, client) -> None:
        self._client = client

    def publish(self, kind: str, run_id: str, data: dict) -> None:
        from azure.core.messaging import CloudEvent

        event = CloudEvent(source=EVENT_SOURCE, type=f"batchdrop.run.{kind}", subject=f"runs/{run_id}", data=data)
        try:
            self._client.send(event)
        except Exception as e:  # best effort by design; the run's own record is the source of truth
            log.warning("event not published run_id=%s kind=%s error=%s", run_id, kind, type(e).__name__)


def publisher(settings: Settings) -> EventPublisher:
    """No topic: events are skipped. With EVENTGRID_TOPIC_KEY: that key; else the app's one identity
    (shared.identity: the same as Storage, Batch and Key Vault use)."""
    if not settings.eventgrid_endpoint:
        return NullPublisher()
    from azure.eventgrid import EventGridPublisherClient

    credential: AzureKeyCredential | TokenCredential
    if settings.eventgrid_key is not None:
        from azure.core.credentials import AzureKeyCredential

        credential = AzureKeyCredential(settings.eventgrid_key.reveal())
    else:
        credential = identity.credential(settings)
    return EventGridPublisher(EventGridPublisherClient(settings.eventgrid_endpoint, credential))

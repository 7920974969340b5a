"""The clients a pipeline step needs, built once from settings and passed in explicitly."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from azure.batch import BatchClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from shared import batch, cleanup, events, secrets, storage
from shared.claims import Claims
from shared.events import EventPublisher
from shared.runs import Clock, RunStore, utc_now
from shared.secrets import SecretSource
from shared.settings import Settings


@dataclass
class Context:
    settings: Settings
    blobs: BlobServiceClient
    batch: BatchClient
    finalize_queue: QueueClient
    intake_queue: QueueClient  # intake requests of the monitor's re-drives
    submit_queue: QueueClient  # continuations of a submission in chunks (shared.submit)
    runs: RunStore
    claims: Claims
    events: EventPublisher
    secrets: SecretSource
    clock: Clock = field(default=utc_now)

    @classmethod
    def build(cls, settings: Settings, env: Mapping[str, str], *, publisher: EventPublisher | None = None,
              secret_source: SecretSource | None = None, clock: Clock = utc_now) -> Context:
        blobs = storage.blob_service(settings)
        batch_client = batch.batch_client(settings)
        publisher = publisher or events.publisher(settings)
        runs = RunStore(
            storage.JsonBlobs(blobs, settings.results_container),
            storage.JsonBlobs(blobs, settings.control_container),
            clock,
            events=publisher,
            cleanup=functools.partial(cleanup.remove_run, batch_client, blobs, settings.work_prefix),
            keep_outputs=timedelta(hours=settings.keep_task_outputs_hours),
        )
        return cls(
            settings=settings,
            blobs=blobs,
            batch=batch_client,
            finalize_queue=storage.queue_client(settings, settings.finalize_queue),
            intake_queue=storage.queue_client(settings, settings.intake_queue),
            submit_queue=storage.queue_client(settings, settings.submit_queue),
            runs=runs,
            claims=Claims(blobs, settings.control_container),
            events=publisher,
            secrets=secret_source or secrets.secret_source(settings, env),
            clock=clock,
        )

    def ensure_containers(self) -> None:
        """The fixed containers and the queues exist (idempotent; run once per process)."""
        s = self.settings
        for name in (s.intake_container, s.data_container, s.results_container, s.control_container):
            storage.ensure_container(self.blobs, name)
        storage.ensure_queue(self.finalize_queue)
        storage.ensure_queue(self.intake_queue)
        storage.ensure_queue(self.submit_queue)

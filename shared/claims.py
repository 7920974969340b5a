"""Short, renewed claims on a run's steps: one leased blob per (run, step) in the control container.

A step (intake, finalize) holds its claim while it works: a lease of LEASE_SECONDS renewed every
HEARTBEAT_SECONDS by a background thread. So a claimant that dies (a killed host, a recycled
worker, an out-of-memory kill) is known within a minute, whatever the function timeout, and the
monitor re-drives its step (shared.watch) instead of waiting out a queue's ten-minute lease.
A blob lease is what Storage offers for exactly this (the Functions host's own singleton locks
are blob leases too); the service, not our clock, decides when it has expired.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient

from shared import naming
from shared.storage import scrub

log = logging.getLogger(__name__)

LEASE_SECONDS = 60  # the longest finite lease Storage grants (15-60 s)
HEARTBEAT_SECONDS = 20  # three renewals per lease: one missed renewal (a blip) does not lose it

INTAKE, FINALIZE = "intake", "finalize"


@dataclass
class Claim:
    """A held claim. `lost` turns true when a renewal found the lease taken or gone."""

    run_id: str
    step: str
    lost: bool = False


class Claims:
    def __init__(self, service: BlobServiceClient, container: str, *, lease_seconds: int = LEASE_SECONDS,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self._container = service.get_container_client(container)
        self._lease_seconds = lease_seconds
        self._heartbeat_seconds = heartbeat_seconds

    @contextmanager
    def hold(self, run_id: str, step: str) -> Iterator[Claim | None]:
        """Hold the claim while the block runs; yields None (at once) when another holds it."""
        blob = self._container.get_blob_client(naming.claim_blob(run_id, step))
        try:
            blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass  # made by an earlier claimant (a leased blob refuses the write with this too)
        lease = BlobLeaseClient(blob)
        try:
            lease.acquire(lease_duration=self._lease_seconds)
        except HttpResponseError as e:
            if e.status_code == 409:  # LeaseAlreadyPresent: a live claimant
                yield None
                return
            raise
        claim = Claim(run_id, step)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(lease, claim, stop), daemon=True,
                                name=f"claim-{step}-{run_id}")
        beat.start()
        try:
            yield claim
        finally:
            stop.set()
            beat.join()
            try:
                lease.release()
            except Exception as e:  # it expires by itself within LEASE_SECONDS
                log.info("claim not released run_id=%s step=%s error=%s", run_id, step, type(e).__name__)

    def _heartbeat(self, lease: BlobLeaseClient, claim: Claim, stop: threading.Event) -> None:
        while not stop.wait(self._heartbeat_seconds):
            try:
                lease.renew()
            except HttpResponseError as e:
                if e.status_code == 409:  # expired and taken by another claimant, or broken
                    claim.lost = True
                    log.warning("claim lost run_id=%s step=%s", claim.run_id, claim.step)
                    return
                log.warning("claim renewal failed run_id=%s step=%s: %s", claim.run_id, claim.step,
                            scrub(str(e).splitlines()[0] if str(e) else type(e).__name__))
            except Exception as e:  # storage unreachable for a moment: the next beat tries again
                log.warning("claim renewal failed run_id=%s step=%s error=%s", claim.run_id, claim.step,
                            type(e).__name__)

    def held(self, run_id: str, step: str) -> bool:
        """Whether a live claimant holds the step now (an expired lease is not held)."""
        try:
            props = self._container.get_blob_client(naming.claim_blob(run_id, step)).get_blob_properties()
        except ResourceNotFoundError:
            return False
        return props.lease.state == "leased"

    def forget(self, run_id: str) -> None:
        """Remove a finished run's claim blobs. A claimant that died keeps its lease for up to a
        minute and the run is final: its lease is broken rather than left to outlive the run."""
        for step in (INTAKE, FINALIZE):
            self._delete_claim(self._container.get_blob_client(naming.claim_blob(run_id, step)))

    @staticmethod
    def _delete_claim(blob: BlobClient, attempts: int = 3) -> None:
        """Delete a claim blob, breaking a lease on it. The claimant may let its lease go (or the blob)
        between our calls: 409 on the break (no lease any more) and 404 are fine, and a lease taken
        again meanwhile is broken again."""
        for _ in range(attempts):
            try:
                blob.delete_blob()
                return
            except ResourceNotFoundError:
                return
            except HttpResponseError as e:
                if e.status_code != 412:  # 412: leased
                    raise
            try:
                BlobLeaseClient(blob).break_lease(lease_break_period=0)
            except ResourceNotFoundError:
                return
            except HttpResponseError as e:
                if e.status_code != 409:  # 409: the lease was let go meanwhile
                    raise
        blob.delete_blob()

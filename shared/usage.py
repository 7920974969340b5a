"""Where a run's time went: wall and queue time, busy slot time, allocated node time (pure).

Node time comes from what Batch reported, the pool's node counts sampled over the run, never
from task times: a node that was allocated but idle (starting, waiting, draining) is paid for
too, and that difference is what `efficiency` shows.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class TaskRecord:
    """One task's final try as Batch reported it; start/end None when it never ran."""

    task_id: str
    start: datetime | None
    end: datetime | None
    node_id: str | None = None
    slot: int | None = None
    tries: int = 1
    outcome: str = "succeeded"


@dataclass(frozen=True)
class NodeSample:
    """The pool's node counts at `at`; they hold until the next sample (a step function)."""

    at: datetime
    dedicated: int
    spot: int


@dataclass(frozen=True)
class Usage:
    wall_s: float  # drop -> final state
    queue_s: float | None  # drop -> first task start; None: no task started
    busy_slot_s: float  # task time, summed over tasks
    node_s_dedicated: float  # allocated node time, from the samples
    node_s_spot: float
    efficiency: float | None  # busy slot time / allocated slot time; None: nothing allocated

    @property
    def node_hours(self) -> float:
        return (self.node_s_dedicated + self.node_s_spot) / 3600

    def as_report(self) -> dict[str, Any]:
        """report.json's "usage" object."""
        return {"wall_s": round(self.wall_s, 3), "queue_s": None if self.queue_s is None else round(self.queue_s, 3),
                "busy_slot_s": round(self.busy_slot_s, 3), "node_s_dedicated": round(self.node_s_dedicated, 3),
                "node_s_spot": round(self.node_s_spot, 3),
                "efficiency": None if self.efficiency is None else round(self.efficiency, 4)}


def usage(tasks: Iterable[TaskRecord], samples: Sequence[NodeSample], *, dropped_at: datetime, ended_at: datetime,
          slots_per_node: int) -> Usage:
    """The run's usage between `dropped_at` and `ended_at`.

    Node time integrates the samples as a step function over that window: each sample's counts
    hold until the next one's time, the last until `ended_at`; before the first sample the pool
    is taken as empty (an auto pool starts with no nodes). Efficiency above 1 means the samples
    missed nodes that ran tasks (sampled too sparsely), and is reported as it is, not capped.
    """
    if slots_per_node < 1:
        raise ValueError("slots_per_node must be at least 1")
    if ended_at < dropped_at:
        raise ValueError("the run cannot end before it was dropped")
    busy = 0.0
    first_start: datetime | None = None
    for t in tasks:
        if t.start is None:
            continue
        first_start = t.start if first_start is None else min(first_start, t.start)
        if t.end is not None and t.end > t.start:
            busy += (t.end - t.start).total_seconds()
    dedicated, spot = node_seconds(samples, dropped_at, ended_at)
    allocated_slot_s = (dedicated + spot) * slots_per_node
    return Usage(wall_s=(ended_at - dropped_at).total_seconds(),
                 queue_s=None if first_start is None else max(0.0, (first_start - dropped_at).total_seconds()),
                 busy_slot_s=busy, node_s_dedicated=dedicated, node_s_spot=spot,
                 efficiency=busy / allocated_slot_s if allocated_slot_s > 0 else None)


def node_seconds(samples: Sequence[NodeSample], start: datetime, end: datetime) -> tuple[float, float]:
    """(dedicated, spot) node-seconds of the step function the samples define, within [start, end]."""
    for s in samples:
        if s.dedicated < 0 or s.spot < 0:
            raise ValueError(f"a node count cannot be negative (sample at {s.at.isoformat()})")
    ordered = sorted(samples, key=lambda s: s.at)  # stable: of two at the same time the later one holds
    dedicated = spot = 0.0
    for i, s in enumerate(ordered):
        until = ordered[i + 1].at if i + 1 < len(ordered) else end
        lo, hi = max(s.at, start), min(until, end)
        if hi > lo:
            seconds = (hi - lo).total_seconds()
            dedicated += seconds * s.dedicated
            spot += seconds * s.spot
    return dedicated, spot

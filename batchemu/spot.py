"""Spot (low-priority) nodes: preemption of a node, and spot capacity that does not come.

Guarantees: a low-priority node that is preempted (the ``preempt`` fault on a try running there) loses
every try running on it (requeued, no retry counted), is ``preempted`` in node lists and node counts,
takes no tries, still counts in ``$CurrentLowPriorityNodes`` (as on the service) and in
``$PreemptedNodeCount``, and is back ``recovery_seconds`` later, unless spot capacity is withheld. While
spot capacity is withheld (``/_emulator/spot-capacity``), no pool gains low-priority nodes: it keeps the
ones it has, reports ``allocationState`` ``resizing`` while short of its low-priority target, and no
preempted node comes back; the emulator's one-node stand-in for an autoscale pool at zero nodes is
never a low-priority node, and not given to a pool whose targets are low-priority nodes only. When
capacity returns, pools get their low-priority targets at once. Preempting a try on a dedicated node
preempts that try only. Spot state is emulator-wide, lives under ``Engine.lock`` and is not persisted
(a restart has capacity, and no preempted node).
"""
from __future__ import annotations

import time

from .core import EngineCore
from .model import Json, Node, Pool, Run
from .util import now_iso

DEFAULT_RECOVERY_SECONDS = 10.0
MAX_RECOVERY_SECONDS = 3600.0


class SpotMixin(EngineCore):
    """Spot capacity and preempted nodes for `Engine` (the methods starting with _ expect the lock held)."""

    spot_capacity: bool
    spot_recovery_seconds: float
    preempted_nodes: dict[str, float]  # node id -> monotonic time it comes back

    def _init_spot(self) -> None:
        self.spot_capacity = True
        self.spot_recovery_seconds = DEFAULT_RECOVERY_SECONDS
        self.preempted_nodes = {}

    # ------------------------------------------------------------------------------------------- queries
    def _is_preempted(self, n: Node) -> bool:
        return n.id in self.preempted_nodes

    def _preempted_count(self, p: Pool) -> int:
        return sum(1 for n in p.nodes if n.id in self.preempted_nodes)

    def _spot_short(self, p: Pool) -> bool:
        """Short of its low-priority target because spot capacity is withheld."""
        return not self.spot_capacity and p.alloc_low < p.target_low

    # ------------------------------------------------------------------------------------------- preemption
    def _preempt_run(self, r: Run) -> bool:
        """Preempt a try: on a low-priority node the whole node goes (every try on it is requeued); on a
        dedicated node only this try. True when a node was preempted."""
        n = r.node
        if n.dedicated or r.pool.state != "active" or n not in r.pool.nodes:
            self._kill(r, "preempt")
            return False
        self.preempted_nodes[n.id] = time.monotonic() + self.spot_recovery_seconds
        for j in self.jobs.values():
            for other in list(j.runs):
                if other.node is n and other.reason is None:
                    self._kill(other, "preempt")
        self._kill(r, "preempt")
        r.pool.touch()
        self._persist_pool(r.pool)
        return True

    def _preempt_after_start(self, r: Run) -> None:
        """The armed preempt fault of a try that has just started."""
        with self.lock:
            self._preempt_run(r)

    def _recover_nodes(self) -> None:
        """Housekeeping: preempted nodes whose time is up come back (only while spot capacity is there);
        nodes that left their pool are forgotten."""
        present = {n.id for p in self.pools.values() for n in p.nodes}
        now = time.monotonic()
        back = [nid for nid, until in self.preempted_nodes.items()
                if nid not in present or (self.spot_capacity and until <= now)]
        for nid in back:
            del self.preempted_nodes[nid]
        if back:
            self._notify_scheduler()

    # ------------------------------------------------------------------------------------------- control plane
    def spot_status(self) -> Json:
        with self.lock:
            return {"available": self.spot_capacity, "recoverySeconds": self.spot_recovery_seconds,
                    "preemptedNodes": sorted(self.preempted_nodes)}

    def set_spot_capacity(self, available: bool, recovery_seconds: float | None = None) -> Json:
        """Withhold spot capacity (no pool gains low-priority nodes, preempted nodes stay preempted) or give
        it back (pools get their low-priority targets at once)."""
        with self.lock:
            self.spot_capacity = available
            if recovery_seconds is not None:
                self.spot_recovery_seconds = recovery_seconds
            if available:
                for p in self.pools.values():
                    if p.state == "active" and p.alloc_low < p.target_low:
                        self._apply_pool_targets(p, p.target_dedicated, p.target_low, p.deallocation)
                        p.touch()
                        self._persist_pool(p)
                self._recover_nodes()
            self._notify_scheduler()
        return self.spot_status()

    def _allocation_state(self, p: Pool) -> None:
        """Lock held: the pool's allocation state after a resize (the emulator's resizes are instantaneous,
        except low-priority nodes while spot capacity is withheld)."""
        state = "resizing" if self._spot_short(p) else "steady"
        if state != p.alloc_state:
            p.alloc_state, p.alloc_time = state, now_iso()

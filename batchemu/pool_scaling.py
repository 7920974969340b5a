"""How many nodes a pool has: fixed targets, autoscale formulas, and the host's concurrency cap.

Guarantees: only an active pool has nodes; a pool's current nodes are its targets as far as the account's
core quotas allow (`quotas`), and every one of them is a node (listed, counted, with its own directory):
the host-wide ``max_concurrency`` caps how many tasks run at once, never how many nodes a pool has, so
nodes take turns; an autoscale pool that evaluates to zero nodes still gets one node while it has
pending tasks, if the core quotas leave room for it (and, while spot capacity is withheld, never for a pool
that asks for low-priority nodes only: `spot`); shrinking a pool kills the tries on leaving nodes
according to the node deallocation option. Allocation is instantaneous (``allocationState`` is always
``steady``). Everything but the formula/interval checks runs under ``Engine.lock``.
"""
from __future__ import annotations

from . import autoscale
from .core import EngineCore
from .errors import BatchError, bad_property, missing_property
from .model import Json, Node, Pool
from .util import now_iso, parse_duration


class PoolScalingMixin(EngineCore):
    """Node materialisation and autoscale evaluation for `Engine` pools."""

    def _reconcile_nodes(self, p: Pool) -> list[Node]:
        """Lock held: materialise the pool's nodes (existing ones kept); the nodes that left."""
        ded, low = self._effective_nodes(p)
        if sum(n.dedicated for n in p.nodes) == ded and len(p.nodes) == ded + low:
            return []  # unchanged (nodes are built dedicated first, by index): no need to rebuild the list
        existing = {n.id: n for n in p.nodes}
        nodes = []
        for i in range(ded):
            n = Node(p, True, i, self.nodes_root)
            nodes.append(existing.get(n.id, n))
        for i in range(low):
            n = Node(p, False, i, self.nodes_root)
            nodes.append(existing.get(n.id, n))
        removed = [n for nid, n in existing.items() if nid not in {x.id for x in nodes}]
        p.nodes = nodes
        return removed

    def _effective_nodes(self, p: Pool) -> tuple[int, int]:
        p.fallback = (0, 0)
        if p.state != "active":
            return 0, 0
        ded, low = p.alloc_dedicated, p.alloc_low
        spot_only = p.target_low > 0 and p.target_dedicated == 0
        if p.spec.get("enableAutoScale") and ded + low == 0 and self._pool_pending(p) > 0 \
                and not (spot_only and not self.spot_capacity):
            # documented: an autoscale pool at 0 nodes still gets 1 node while tasks are pending (quota permitting)
            p.fallback = self._fallback_node(p)
            ded, low = p.fallback
        return ded, low

    def _pool_pending(self, p: Pool) -> int:
        n = 0
        for j in self.jobs.values():
            if j.pool_key == p.key:
                n += j.counts["active"] + j.counts["running"]
        return n

    def _pool_capacity(self, p: Pool) -> int:
        usable = len(p.nodes) - self._preempted_count(p)
        return min(usable * p.slots, self.max_concurrency)

    def _apply_pool_targets(self, p: Pool, dedicated: int, low: int, deallocation: str = "requeue") -> None:
        """Lock held: resize the pool to these targets (allocating what the core quotas allow)."""
        p.target_dedicated, p.target_low = dedicated, low
        self._allocate(p)
        p.alloc_state, p.alloc_time = "steady", now_iso()  # allocation is instantaneous in the emulator ...
        self._allocation_state(p)  # ... but for spot capacity withheld (`spot`)
        removed = self._reconcile_nodes(p)
        if removed:
            removed_ids = {n.id for n in removed}
            for j in self.jobs.values():
                for r in list(j.runs):
                    if r.node.id in removed_ids:
                        if deallocation == "requeue":
                            self._kill(r, "requeue")
                        elif deallocation == "terminate":
                            self._kill(r, "terminate")
                        # taskcompletion / retaineddata: let it finish on the leaving node
        self._notify_scheduler()

    def _resolve_interval(self, spec: Json, prop: str = "autoScaleEvaluationInterval") -> None:
        if spec.get(prop):
            secs = parse_duration(spec[prop], prop)
            if secs < 300 or secs > 168 * 3600:
                raise bad_property(prop, spec[prop], "The evaluation interval must be between 5 minutes and 168 hours")

    def _autoscale_inputs(self, p: Pool) -> dict[str, float]:
        active = running = succeeded = failed = 0
        for j in self.jobs.values():
            if j.pool_key == p.key:
                active += j.counts["active"]
                running += j.counts["running"]
                succeeded += j.counts["succeeded"]
                failed += j.counts["failed"]
        return {"$pendingtasks": float(active + running), "$activetasks": float(active),
                "$runningtasks": float(running), "$succeededtasks": float(succeeded), "$failedtasks": float(failed),
                "$currentdedicatednodes": float(p.alloc_dedicated), "$currentlowprioritynodes": float(p.alloc_low),
                "$targetdedicatednodes": float(p.target_dedicated), "$targetlowprioritynodes": float(p.target_low),
                "$tasksslotspernode": float(p.slots), "$taskslotspernode": float(p.slots),
                "$usablenodecount": float(len(p.nodes) - self._preempted_count(p)),
                "$preemptednodecount": float(self._preempted_count(p)), "$cpupercent": 0.0,
                "$memorybytes": 0.0, "$diskbytes": 0.0, "$wallclockseconds": 0.0}

    def _run_autoscale(self, p: Pool, formula: str | None = None, apply: bool = True) -> Json:
        formula = formula if formula is not None else p.spec.get("autoScaleFormula") or ""
        ts = now_iso()
        run: Json
        try:
            values, results = autoscale.evaluate(formula, self._autoscale_inputs(p))
        except autoscale.FormulaError as exc:
            run = {"timestamp": ts, "error": {"code": "AutoScalingFormulaSyntaxError",
                                               "message": f"The specified auto-scaling formula has an error: {exc}",
                                               "values": [{"name": "Formula", "value": formula[:200]}]}}
            if apply:
                p.autoscale_run = run
            return run
        run = {"timestamp": ts, "results": results}
        if apply:
            p.autoscale_run = run
            p.deallocation = values["deallocation"]
            if (values["dedicated"], values["lowPriority"]) != (p.target_dedicated, p.target_low):
                self._apply_pool_targets(p, values["dedicated"], values["lowPriority"], values["deallocation"])
                p.touch()
            elif self._short_of_targets(p):  # short of its targets for quota: each evaluation tries again
                before = (p.alloc_dedicated, p.alloc_low, p.resize_errors)
                self._allocate(p)
                if before != (p.alloc_dedicated, p.alloc_low, p.resize_errors):
                    self._apply_pool_targets(p, p.target_dedicated, p.target_low, values["deallocation"])
                    p.touch()
        return run

    @staticmethod
    def _check_formula(formula: str | None) -> None:
        if not formula:
            raise missing_property("autoScaleFormula")
        try:
            autoscale.parse(formula)
        except autoscale.FormulaError as exc:
            raise BatchError("AutoScalingFormulaSyntaxError", None, [{"key": "Reason", "value": str(exc)}]) from exc

"""Task dependencies: which tasks a task waits for, and the reverse index that releases it.

Guarantees: a task is runnable only when every task it depends on has completed with ``dep_ok`` (success,
or failure with ``dependencyAction: satisfy``); id ranges expand to at most ``MAX_TASK_RANGE_EXPANSION``
ids per task; a task never depends on itself.
"""
from __future__ import annotations

from .core import EngineCore
from .model import Job, Task

MAX_TASK_RANGE_EXPANSION = 1_000_000


class DependenciesMixin(EngineCore):
    """Dependency bookkeeping for `Engine` jobs (``Job.dependents``, ``Task.deps_remaining``)."""

    @staticmethod
    def _dependency_keys(t: Task) -> set[str]:
        dep = t.spec.get("dependsOn") or {}
        keys = {x.lower() for x in dep.get("taskIds") or []}
        budget = MAX_TASK_RANGE_EXPANSION
        for r in dep.get("taskIdRanges") or []:
            start, end = int(r["start"]), int(r["end"])
            if end - start + 1 > budget:
                end = start + budget - 1
            budget -= end - start + 1
            keys.update(str(i) for i in range(start, end + 1))
        keys.discard(t.key)
        return keys

    def _register_dependencies(self, j: Job, t: Task) -> None:
        if not t.spec.get("dependsOn"):
            return
        remaining = 0
        for k in self._dependency_keys(t):
            other = j.tasks.get(k)
            if other is not None and other.dep_ok:
                continue
            remaining += 1
            j.dependents.setdefault(k, []).append(t.key)
        t.deps_remaining = remaining

    def _rebuild_dependencies(self, j: Job) -> None:
        j.dependents = {}
        for t in j.tasks.values():
            if t.state != "completed":
                self._register_dependencies(j, t)

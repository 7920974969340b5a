"""How to split a job: predicted wall time, node time and cost per choice of `items_per_task` and
`max_nodes` (pure, deterministic).

More, smaller tasks finish sooner but pay a per-task overhead and more node start-up; fewer, larger
ones leave nodes idle in a last, partly filled wave. The model follows one run through the pipeline:

    intake (split, upload, submit)  ->  auto pool: node allocation (+ image pull)
    ->  waves of tasks: ceil(tasks / (nodes x slots)), each as long as one task (work + overhead)
    ->  the monitor sees the end (half a tick on average)  ->  finalize (queue pickup, merge, report)

Nodes follow the auto pool's formula (shared.batch.autoscale_formula): min(max_nodes, ceil(tasks /
slots)), allocated once the job exists and billed until the pool is deleted when the run ends; nodes
with nothing to do in the last wave leave at the next autoscale evaluation. Spot preemption, retries
and storage throttling are not modelled: the prediction is of a run that goes as planned.

Every constant below says where its number comes from; where the Batch docs give none, the comment
says the number is our estimate and why. `Overheads` holds them so a caller (a test on the local
stack, where allocation and image pull are ~0) can pass its own.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.pricing import CostEstimate, PriceTable

# Azure Batch quickstart (learn.microsoft.com/azure/batch/quick-create-cli): "Batch creates the pool
# immediately, but it takes a few minutes to allocate and start the compute nodes." The docs give no
# number; 4 minutes is our reading of "a few" (VM allocation, OS boot, node agent start). The pool's
# resizeTimeout default of 15 minutes (Batch REST, pool resize) is the bound, not the typical time.
NODE_ALLOCATION_S = 240.0
# Container workloads (learn.microsoft.com/azure/batch/batch-docker-container-workloads): the images
# in the pool's containerConfiguration are pulled when each node starts, so "tasks don't have to wait
# for the container image to download". No number in the docs: 60 s is our estimate for an image of a
# few hundred MB from a registry in the pool's region (the page's advice for best performance).
IMAGE_PULL_S = 60.0
# Batch best practices, "Avoid short execution time" (learn.microsoft.com/azure/batch/best-practices):
# tasks of one to two seconds are not ideal, do at least 10 s of work per task; at a minute or more
# "the scheduling overhead as a fraction of overall compute time is small". The page gives no number
# for the overhead itself: 5 s per task is our estimate for scheduling a task onto a free slot,
# downloading its shard and config (resource files), starting its container and uploading its output
# (output files), each about a second against storage in the same region.
TASK_OVERHEAD_S = 5.0
MIN_TASK_S = 10.0  # the same page's minimum of work per task
# Our own monitor: MONITOR_SCHEDULE, deployed as every 30 s (infra/main.parameters.json), and
# MONITOR_TAIL_SECONDS, deployed as 15 s (infra/modules/functionapp.bicep): a tick goes on watching a
# run in its last wave that long, so a last task ending then is seen at once, one ending later at the
# next tick (`monitor_wait`).
MONITOR_TICK_S = 30.0
MONITOR_TAIL_S = 15.0
# Azure Functions queue trigger, host.json (learn.microsoft.com/azure/azure-functions/
# functions-bindings-storage-queue): maxPollingInterval, the longest an idle queue goes between polls,
# defaults to one minute; our host.json sets 2 seconds, so the finalize message waits about 1 s on average.
QUEUE_POLL_S = 2.0
# Batch pool autoScaleEvaluationInterval (Batch REST, pool enable autoscale): 5 minutes at least, our
# auto pool's value (shared.batch). A node idle in the last wave leaves at the next evaluation: after
# half an interval on average.
AUTOSCALE_INTERVAL_S = 300.0
# Our intake and finalize, from the README's benchmarks on Azurite (2-core machine): accept split,
# uploaded and submitted 20,000 tasks in 49 s (2.5 ms a task); the merge read 1,072 outputs (1 GiB) in
# 25 s, bytes-bound; 10 ms a task is our estimate for reading and verifying one small output and its
# manifest. The fixed 5 s each cover reading the job file, writing the run record and the report.
INTAKE_S = 5.0
INTAKE_PER_TASK_S = 0.0025
FINALIZE_S = 5.0
FINALIZE_PER_TASK_S = 0.01


def monitor_wait(tick_s: float, tail_s: float) -> float:
    """Mean time from the last task's end until the monitor asks for finalize, the end falling anywhere
    in a tick's interval: within the first `tail_s` of it the tick that is watching sees it at once,
    after that the next tick does (half the rest, on average)."""
    if tick_s <= 0:
        return 0.0
    rest = max(0.0, tick_s - tail_s)
    return rest * rest / (2 * tick_s)


@dataclass(frozen=True)
class Overheads:
    """What a run spends besides its tasks' own work, in seconds (defaults: Azure, see above)."""

    node_allocation_s: float = NODE_ALLOCATION_S
    image_pull_s: float = IMAGE_PULL_S  # counted only for a job with an image
    task_overhead_s: float = TASK_OVERHEAD_S
    monitor_tick_s: float = MONITOR_TICK_S
    monitor_tail_s: float = MONITOR_TAIL_S
    queue_poll_s: float = QUEUE_POLL_S
    autoscale_interval_s: float = AUTOSCALE_INTERVAL_S
    intake_s: float = INTAKE_S
    intake_per_task_s: float = INTAKE_PER_TASK_S
    finalize_s: float = FINALIZE_S
    finalize_per_task_s: float = FINALIZE_PER_TASK_S

    def __post_init__(self) -> None:
        for name, value in self.as_dict().items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more; got {value!r}")

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Pool:
    """Where the tasks run. `existing`: a pool the job file names (no allocation; its node time is
    shared with other work, so it is not priced); then `max_nodes` is its node count."""

    vm_size: str
    slots_per_node: int = 1
    spot: bool = False
    existing: str | None = None

    def __post_init__(self) -> None:
        if self.slots_per_node < 1:
            raise ValueError("slots_per_node must be at least 1")


@dataclass(frozen=True)
class Workload:
    """The job as the planner sees it: how many items, how long one takes, and its limits."""

    items: int
    seconds_per_item: float
    has_image: bool = False
    task_timeout_s: float | None = None  # task_timeout_minutes: a longer task is stopped
    max_tasks: int | None = None  # MAX_TASKS_PER_RUN: a run with more tasks is rejected

    def __post_init__(self) -> None:
        if self.items < 1:
            raise ValueError("a job has at least one item")
        if not math.isfinite(self.seconds_per_item) or self.seconds_per_item < 0:
            raise ValueError(f"seconds_per_item must be a finite number, 0 or more; got {self.seconds_per_item!r}")


@dataclass(frozen=True)
class Prediction:
    """One candidate: `items_per_task` with `max_nodes`, and what the model predicts for it."""

    items_per_task: int
    max_nodes: int
    tasks: int
    shard_items: int  # items in a full shard
    last_shard_items: int  # items in the last shard (fewer when items_per_task does not divide items)
    nodes: int  # nodes the auto pool gets
    waves: int
    task_s: float  # one full task: its work plus the per-task overhead
    wall_s: float  # job file picked up -> report written (report.json's usage.wall_s)
    node_s: float  # allocated node time (billed)
    busy_slot_s: float
    cost: CostEstimate | None  # None: not priced (see `cost_omitted`)
    cost_omitted: str | None = None
    notes: tuple[str, ...] = ()  # what to know about it, for people
    flags: tuple[str, ...] = ()  # the same as codes: "too-many-tasks", "over-timeout", "short-tasks"
    feasible: bool = True  # False: the run would be rejected or its tasks stopped (see notes)
    slots_per_node: int = 1

    @property
    def efficiency(self) -> float | None:
        """Busy slot time over allocated slot time, as report.json's usage.efficiency."""
        return None if self.node_s <= 0 else self.busy_slot_s / (self.node_s * self.slots_per_node)

    @property
    def amount(self) -> float | None:
        """The estimated cost, None when not priced."""
        return None if self.cost is None else self.cost.amount

    def as_json(self) -> dict[str, Any]:
        eff = self.efficiency
        out: dict[str, Any] = {
            "items_per_task": self.items_per_task, "max_nodes": self.max_nodes, "tasks": self.tasks,
            "shard_items": self.shard_items, "last_shard_items": self.last_shard_items, "nodes": self.nodes,
            "waves": self.waves, "task_s": round(self.task_s, 3), "wall_s": round(self.wall_s, 3),
            "node_s": round(self.node_s, 3), "node_hours": round(self.node_s / 3600, 4),
            "efficiency": None if eff is None else round(eff, 4), "feasible": self.feasible, "flags": list(self.flags),
            "notes": list(self.notes)}
        if self.cost is not None and self.cost.amount is not None:
            out["cost"] = {"amount": self.cost.amount, "currency": self.cost.currency, "vm_size": self.cost.vm_size,
                           "prices": {"region": self.cost.region, "date": self.cost.date, "source": self.cost.source}}
        else:
            out["cost_omitted"] = self.cost_omitted
        return out


@dataclass(frozen=True)
class Recommendation:
    """The choice, whether it meets the deadline (None: no deadline given) and why it was chosen."""

    choice: Prediction | None
    meets_deadline: bool | None
    reason: str


@dataclass(frozen=True)
class Plan:
    workload: Workload
    pool: Pool
    overheads: Overheads
    deadline_s: float | None
    candidates: tuple[Prediction, ...]
    recommendation: Recommendation


def predict(workload: Workload, items_per_task: int, max_nodes: int, pool: Pool,
            overheads: Overheads = Overheads(), prices: PriceTable | str | None = None) -> Prediction:
    """The model's prediction for one candidate (see the module docstring for the timeline). `prices`:
    the table, or why there is none (then, as for a size the table lacks, the cost is omitted with the
    reason: never invented)."""
    if items_per_task < 1 or max_nodes < 1:
        raise ValueError("items_per_task and max_nodes must be at least 1")
    o, slots = overheads, pool.slots_per_node
    n_items, per_item = workload.items, workload.seconds_per_item
    tasks = math.ceil(n_items / items_per_task)
    shard = min(items_per_task, n_items)
    last = n_items - (tasks - 1) * items_per_task
    # the auto pool's formula sizes the pool from the task count; an existing pool has what it has
    nodes = max_nodes if pool.existing else min(max_nodes, math.ceil(tasks / slots))
    capacity = nodes * slots
    waves = math.ceil(tasks / capacity)
    task_s = shard * per_item + o.task_overhead_s
    last_task_s = last * per_item + o.task_overhead_s
    in_last_wave = tasks - (waves - 1) * capacity
    # tasks run in order (Batch's queue, the emulator's too): the short last shard is in the last
    # wave, which is as long as a full task unless the short one is alone in it
    last_wave_s = task_s if in_last_wave > 1 else last_task_s
    makespan = (waves - 1) * task_s + last_wave_s

    intake = o.intake_s + tasks * o.intake_per_task_s
    start_up = (0.0 if pool.existing else o.node_allocation_s) + (o.image_pull_s if workload.has_image else 0.0)
    tail = (monitor_wait(o.monitor_tick_s, o.monitor_tail_s) + o.queue_poll_s / 2 + o.finalize_s
            + tasks * o.finalize_per_task_s)
    wall = intake + start_up + makespan + tail

    # Billed from allocation until the pool is deleted at the end ("billed for every compute node in
    # the pool, regardless of the state it's in": Batch best practices, pool efficiency and billing).
    # Tasks spread over nodes (Batch's default fill type), so the last wave keeps min(its tasks, nodes)
    # busy; the others leave at the next autoscale evaluation, or when the run ends if sooner.
    last_wave_at = start_up + (waves - 1) * task_s
    after = last_wave_s + tail
    busy_last = min(in_last_wave, nodes)
    idle_hold = 0.0 if pool.existing else min(o.autoscale_interval_s / 2, after)
    node_s = nodes * last_wave_at + busy_last * after + (nodes - busy_last) * idle_hold
    busy_slot_s = (tasks - 1) * task_s + last_task_s

    notes: dict[str, str] = {}
    if workload.max_tasks is not None and tasks > workload.max_tasks:
        notes["too-many-tasks"] = (f"{tasks:,} tasks: over MAX_TASKS_PER_RUN ({workload.max_tasks:,}), "
                                   f"so intake would reject the run")
    if workload.task_timeout_s is not None and task_s > workload.task_timeout_s:
        notes["over-timeout"] = (f"a task takes {task_s:,.0f} s: over task_timeout_minutes "
                                 f"({workload.task_timeout_s / 60:g} min), so tasks would be stopped")
    if shard * per_item < MIN_TASK_S:
        notes["short-tasks"] = f"under {MIN_TASK_S:g} s of work per task: Batch's best practices advise more"
    feasible = not ({"too-many-tasks", "over-timeout"} & set(notes))

    cost, omitted = _cost(node_s, pool, prices)
    return Prediction(items_per_task=items_per_task, max_nodes=max_nodes, tasks=tasks, shard_items=shard,
                      last_shard_items=last, nodes=nodes, waves=waves, task_s=task_s, wall_s=wall, node_s=node_s,
                      busy_slot_s=busy_slot_s, cost=cost, cost_omitted=omitted, notes=tuple(notes.values()),
                      flags=tuple(notes), feasible=feasible, slots_per_node=slots)


def _cost(node_s: float, pool: Pool, prices: PriceTable | str | None) -> tuple[CostEstimate | None, str | None]:
    if pool.existing:
        return None, f"runs on pool {pool.existing!r}, shared with other work: its node time is not this run's alone"
    if prices is None or isinstance(prices, str):
        return None, prices or "no price table"
    estimate = prices.estimate(node_s if not pool.spot else 0.0, node_s if pool.spot else 0.0, pool.vm_size)
    if estimate.amount is None:
        return None, estimate.reason
    return estimate, None


def plan(workload: Workload, items_per_task: Iterable[int], max_nodes: Iterable[int], pool: Pool,
         overheads: Overheads = Overheads(), prices: PriceTable | str | None = None,
         deadline_s: float | None = None) -> Plan:
    """Every (items_per_task, max_nodes) pair, in the order given, with the recommendation."""
    sizes = list(dict.fromkeys(items_per_task))
    counts = list(dict.fromkeys(max_nodes))
    if not sizes or not counts:
        raise ValueError("give at least one items_per_task and one max_nodes")
    candidates = tuple(predict(workload, k, m, pool, overheads, prices) for m in counts for k in sizes)
    return Plan(workload, pool, overheads, deadline_s, candidates, recommend(candidates, deadline_s))


def recommend(candidates: Sequence[Prediction], deadline_s: float | None) -> Recommendation:
    """The cheapest feasible candidate whose wall time meets the deadline; the fastest when none does.

    Cheapest is the least node time: every candidate runs on the same VM size and priority, so cost is
    node time at one price, and the order holds when no price is known. Ties go to the faster one,
    then to the fewer tasks (the first given, at equal counts)."""
    feasible = [c for c in candidates if c.feasible]
    if not feasible:
        return Recommendation(None, None if deadline_s is None else False,
                              "no candidate can run: each would be rejected or have its tasks stopped (see notes)")

    def cheapest(c: Prediction) -> tuple[float, float, int]:
        return (round(c.node_s, 6), round(c.wall_s, 6), c.tasks)

    if deadline_s is None:
        best = min(feasible, key=cheapest)
        return Recommendation(best, None, "the cheapest (no deadline given: the fastest may cost more)")
    meeting = [c for c in feasible if c.wall_s <= deadline_s]
    if meeting:
        best = min(meeting, key=cheapest)
        return Recommendation(best, True, f"the cheapest of the {len(meeting)} that finish within the deadline")
    fastest = min(feasible, key=lambda c: (round(c.wall_s, 6), round(c.node_s, 6), c.tasks))
    return Recommendation(fastest, False, "none finishes within the deadline: this is the fastest")


def default_items_per_task(items: int, max_tasks: int | None = None, also: Iterable[int] = ()) -> tuple[int, ...]:
    """Candidates 1, 2, 5, 10, 20, 50, ... up to `items` (the smallest of those giving the same task
    count), plus `also` (the job's own value), in increasing order; none over `max_tasks` tasks."""
    def allowed(k: int) -> bool:
        return k >= 1 and (max_tasks is None or math.ceil(items / k) <= max_tasks)

    series = [items]
    step = 1
    while step <= items:
        series += [k for k in (step, 2 * step, 5 * step) if k <= items]
        step *= 10
    by_count: dict[int, int] = {}
    for k in sorted(series):
        if allowed(k):
            by_count.setdefault(math.ceil(items / k), k)
    return tuple(sorted(set(by_count.values()) | {k for k in also if allowed(k)}))

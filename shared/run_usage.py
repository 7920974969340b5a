"""What a finished run used and cost, for report.json and report.html: the run's task records and
the monitor's node samples (shared.usage does the arithmetic, shared.pricing the prices)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared import storage
from shared.errors import BatchdropError
from shared.pricing import PriceTable, PriceTableError
from shared.report import TaskOutcome
from shared.runs import RunRecord, parse_time
from shared.usage import NodeSample, TaskRecord, usage

log = logging.getLogger(__name__)


def usage_and_cost(run: RunRecord, tasks: Sequence[TaskOutcome], now: datetime,
                   prices: PriceTable | str) -> dict[str, Any]:
    """report.json's `usage` and `cost` (or `cost_omitted`, saying why: never an invented number).
    `prices` is the table, or why there is none."""
    records = [TaskRecord(t.task_id, _time(t.start_time), _time(t.end_time), t.node_id, None, t.retries + 1,
                          "succeeded" if t.succeeded else "failed") for t in tasks]
    samples = [NodeSample(parse_time(at), d, s) for at, d, s in run.node_samples]
    used = usage(records, samples, dropped_at=run.created_at or now, ended_at=now, slots_per_node=run.slots_per_node)
    out: dict[str, Any] = {"usage": used.as_report()}
    if run.pool != "auto":
        out["cost_omitted"] = (f"the run used pool {run.pool!r}, shared with other work: its node time is not this "
                               f"run's alone")
    elif not samples:
        out["cost_omitted"] = "no node counts were sampled for this run's pool"
    elif isinstance(prices, str):
        out["cost_omitted"] = prices
    else:
        out.update(prices.estimate(used.node_s_dedicated, used.node_s_spot, run.vm_size or "").as_report())
    return out


def price_table(service, blob: str | None) -> PriceTable:
    """The shipped price table, or the one the setting PRICE_TABLE_BLOB names ("container/path")."""
    if not blob:
        return PriceTable.default()
    container, _, name = blob.partition("/")
    data = storage.read_optional(service, container, name)
    if data is None:
        raise BatchdropError(f"PRICE_TABLE_BLOB names {blob!r}, which does not exist")
    try:
        return PriceTable.load(data)
    except PriceTableError as e:
        raise BatchdropError(f"PRICE_TABLE_BLOB {blob!r}: {e}") from None


def _time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None

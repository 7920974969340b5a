"""report.html: report.json drawn for people (pure).

One self-contained document, inline CSS and SVG only (no scripts, fonts or links to fetch), so it
opens from a download or the storage browser: a summary, a timeline of task bars per node and
slot, a histogram of task durations with the stragglers named, the failures with their stderr
tails, and the job file. Every field of the report is optional; stderr and the job file are
untrusted and always escaped.

Size and memory stay bounded whatever the run: past `Limits.task_bars` tasks the timeline draws
time bins per lane instead of bars, lists are capped, and the document is produced as a stream
of chunks (`iter_html`, `write_html`), never as one string. Elements tests look for carry stable
classes and data attributes (`rect.task[data-task]`, `rect.bin`, `li.failure[data-task]`, ...).
"""
from __future__ import annotations

import heapq
import html
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO


@dataclass(frozen=True)
class Limits:
    task_bars: int = 2000  # beyond this many drawn tasks the timeline is aggregated into time bins
    lanes: int = 300  # lanes at most when aggregated: slots merge into nodes, then nodes into groups
    bins: int = 10_000  # bins drawn at most, over all lanes
    bins_per_lane: int = 240
    failures: int = 50  # failures shown with their stderr tails; further ones are named only
    failure_names: int = 1000
    stderr_chars: int = 2000  # the end of each stderr tail
    stragglers: int = 50
    job_file_chars: int = 100_000
    chunk_chars: int = 64 * 1024


DEFAULT_LIMITS = Limits()

_OK, _FAILED, _STOPPED = "ok", "failed", "stopped"
_LABEL_W, _PLOT_W, _AXIS_H = 190, 960, 28
_WIDTH = _LABEL_W + _PLOT_W + 10
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def write_html(report: Mapping[str, Any], job_file: str | None, out: TextIO, limits: Limits = DEFAULT_LIMITS) -> None:
    """Write the document to `out` chunk by chunk."""
    for chunk in iter_html(report, job_file, limits):
        out.write(chunk)


def iter_html(report: Mapping[str, Any], job_file: str | None, limits: Limits = DEFAULT_LIMITS) -> Iterator[str]:
    """The document as chunks of about `limits.chunk_chars` characters (for a streamed upload)."""
    buffer: list[str] = []
    size = 0
    for piece in _document(report, job_file, limits):
        buffer.append(piece)
        size += len(piece)
        if size >= limits.chunk_chars:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


# ---------------------------------------------------------------- the facts, read defensively


@dataclass(slots=True)
class _Task:
    task_id: str
    outcome: str  # _OK, _FAILED or _STOPPED
    start: float | None  # seconds since the epoch
    end: float | None
    node: str | None
    slot: int | None
    retried: int  # retries + requeues + infrastructure retries
    duration: float | None
    entry: Mapping[str, Any]

    @property
    def drawn(self) -> bool:
        return self.start is not None and self.end is not None and self.end >= self.start


def _tasks(report: Mapping[str, Any]) -> list[_Task]:
    entries = report.get("entries")
    out = []
    for e in entries if isinstance(entries, list) else ():
        if not isinstance(e, Mapping):
            continue
        failure = e.get("failure") if isinstance(e.get("failure"), Mapping) else None
        if e.get("outcome") == "succeeded":
            outcome = _OK
        elif failure is not None and failure.get("category") == "incomplete":
            outcome = _STOPPED
        else:
            outcome = _FAILED
        start, end = _time(e.get("start_time")), _time(e.get("end_time"))
        duration = _num(e.get("duration_s"))
        if duration is None and start is not None and end is not None:
            duration = end - start
        if duration is not None and duration < 0:
            duration = None
        slot = e.get("slot")
        out.append(_Task(str(e.get("task_id", "?")), outcome, start, end, _str(e.get("node_id")),
                         slot if isinstance(slot, int) and not isinstance(slot, bool) else None,
                         sum(max(0, int(_num(e.get(k)) or 0)) for k in ("retries", "requeues", "infra_retries")),
                         duration,
                         e))
    return out


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _get(report: Mapping[str, Any], *path: str) -> Any:
    value: Any = report
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


# ---------------------------------------------------------------- formatting


def _e(value: Any, quote: bool = True) -> str:
    """An attribute value (or text), escaped; control characters and lone surrogates replaced."""
    text = str(value)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return html.escape(_CONTROL.sub("\ufffd", text), quote=quote)


def _t(value: Any) -> str:
    """Text between tags, escaped (quotes need no escaping there, which keeps quoted text short)."""
    return _e(value, quote=False)


def _f(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


def _seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def _tick(s: float) -> str:
    s = int(round(s))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{sec}s" if sec or not (h or m) else ""]
    return "+" + "".join(parts)


def _step(span: float, ticks: int = 10) -> float:
    """A round tick step giving at most `ticks` ticks over `span` seconds."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / step <= ticks:
            return step
    return 86400 * math.ceil(span / 86400 / ticks)


def _short(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n // 2 - 1] + "…" + text[-(n // 2):]


def _natural(text: str) -> list[Any]:
    return [int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", text))]


def _percentile(ordered: list[float], p: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


# ---------------------------------------------------------------- the document

_CSS = """
:root{--ok:#009e73;--failed:#d55e00;--stopped:#9a9a9a;--retried:#0072b2;--ink:#1d1d1f;--muted:#5f6368;--line:#dadce0}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--ink);
margin:0 auto;max-width:1220px;padding:16px 20px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line)}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f6f8fa;border:1px solid var(--line);padding:8px;overflow:auto;max-height:420px;white-space:pre-wrap;
word-break:break-all}
.state{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;background:#eee}
.state-succeeded{background:#d7f3e9}.state-failed{background:#fbe0d2}
.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:8px 16px;margin:12px 0}
.metric{border:1px solid var(--line);border-radius:6px;padding:6px 10px}
.metric dt{color:var(--muted);font-size:12px}.metric dd{margin:0;font-size:16px;font-weight:600;word-break:break-all}
.metric[data-metric=sha256] dd{font:12px ui-monospace,Menlo,Consolas,monospace}
.metric .detail{display:block;font-size:12px;font-weight:400;color:var(--muted)}
.warnings li,.error{color:#8a3b00}.note{color:var(--muted);font-size:13px}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 18px;margin:6px 0}
.legend svg{vertical-align:middle;margin-right:4px}
svg.chart{max-width:100%;height:auto;display:block}
svg text{font-size:11px;fill:var(--muted)}
.task.ok,.bin.ok,.swatch.ok{fill:var(--ok)}
.task.failed,.bin.failed,.swatch.failed{fill:url(#p-failed)}
.task.stopped,.bin.stopped,.swatch.stopped{fill:var(--stopped)}
.retried{stroke:var(--retried);stroke-width:1.5}
.lane-bg{fill:#f4f6f8}.queue-span{fill:#e69f00;fill-opacity:.2}.grid{stroke:#e6e6e6}
.hist-bar{fill:#7f8fa6}.hist-bar.straggler{fill:url(#p-straggler)}
.marker{stroke:var(--ink);stroke-dasharray:3 3}.marker.threshold{stroke:var(--failed)}
table{border-collapse:collapse}td,th{border:1px solid var(--line);padding:3px 8px;text-align:left;font-size:13px}
.failures>li{margin:10px 0}.failure h3{font-size:15px;margin:0 0 4px}
"""

_DEFS = ('<svg class="defs" width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
         '<pattern id="p-failed" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
         '<rect width="6" height="6" fill="#d55e00"/><rect width="2" height="6" fill="#5c2100"/></pattern>'
         '<pattern id="p-straggler" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
         '<rect width="6" height="6" fill="#e69f00"/><rect width="2" height="6" fill="#7a5400"/></pattern>'
         "</defs></svg>")


def _document(report: Mapping[str, Any], job_file: str | None, limits: Limits) -> Iterator[str]:
    run_id = _str(report.get("run_id")) or "unknown run"
    tasks = _tasks(report)
    yield ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width,initial-scale=1">'
           f"<title>batchdrop run {_e(run_id)}</title><style>{_CSS}</style></head>\n<body>")
    yield _DEFS
    state = _str(report.get("state")) or "unknown"
    yield (f'<header><h1>Run <span class="run-id mono">{_e(run_id)}</span> '
           f'<span class="state state-{_e(state)}" data-state="{_e(state)}">{_e(state)}</span></h1></header>\n')
    yield from _summary(report, tasks)
    yield from _timeline(report, tasks, limits)
    yield from _histogram(tasks, limits)
    yield from _failures(report, tasks, limits)
    yield from _job_file(job_file, limits)
    yield '<footer class="note">Written by batchdrop from report.json.</footer></body></html>\n'


def _metric(key: str, label: str, value: str, detail: str = "") -> str:
    extra = f'<span class="detail">{_e(detail)}</span>' if detail else ""
    return f'<div class="metric" data-metric="{key}"><dt>{_e(label)}</dt><dd>{_e(value)}{extra}</dd></div>'


def _summary(report: Mapping[str, Any], tasks: list[_Task]) -> Iterator[str]:
    yield '<section id="summary"><h2>Summary</h2><dl class="summary">'
    counts = _obj(report.get("tasks"))
    total = _num(counts.get("total"))
    parts = [f"{int(v)} {k.replace('_', ' ')}" for k in ("succeeded", "failed", "stopped", "waiting_retry")
             if (v := _num(counts.get(k)))]
    yield _metric("tasks", "Tasks", str(int(total)) if total is not None else str(len(tasks)), ", ".join(parts))
    yield _metric("state", "State", _str(report.get("state")) or "unknown")
    usage = _obj(report.get("usage"))
    wall = _num(usage.get("wall_s"))
    if wall is None:
        wall = _num(_get(report, "timings", "wall_s"))
    yield _metric("wall", "Wall time", _seconds(wall), "drop to final state")
    queue = _num(usage.get("queue_s"))
    if queue is not None:
        yield _metric("queue", "Queue time", _seconds(queue), "drop to first task start")
    dedicated, spot = _num(usage.get("node_s_dedicated")), _num(usage.get("node_s_spot"))
    if dedicated is not None or spot is not None:
        hours = ((dedicated or 0) + (spot or 0)) / 3600
        yield _metric("node-hours", "Node-hours", f"{hours:.2f}",
                      f"dedicated {(dedicated or 0) / 3600:.2f}, spot {(spot or 0) / 3600:.2f}")
    busy = _num(usage.get("busy_slot_s"))
    if busy is not None:
        yield _metric("busy", "Busy slot-hours", f"{busy / 3600:.2f}", "task time, summed")
    efficiency = _num(usage.get("efficiency"))
    yield _metric("efficiency", "Efficiency", "unknown" if efficiency is None else f"{efficiency * 100:.1f} %",
                  "busy slot time / allocated slot time")
    yield _cost(report)
    output = _str(report.get("output"))
    if output:
        size = _num(report.get("output_bytes"))
        yield _metric("output", "Output", output, f"{int(size):,} bytes" if size is not None else "")
    sha = _str(report.get("output_sha256"))
    if sha:
        yield _metric("sha256", "Output SHA-256", sha)
    yield "</dl>"
    error = _str(report.get("error"))
    if error:
        yield f'<p class="error"><strong>Error:</strong> {_e(error)}</p>'
    raw = report.get("warnings")
    warnings = [w for w in raw if isinstance(w, str)] if isinstance(raw, list) else []
    if warnings:
        yield '<ul class="warnings">' + "".join(f'<li class="warning">{_e(w)}</li>' for w in warnings[:50]) + "</ul>"
    yield "</section>\n"


def _cost(report: Mapping[str, Any]) -> str:
    cost = report.get("cost")
    amount = _num(cost.get("amount")) if isinstance(cost, Mapping) else None
    if isinstance(cost, Mapping) and amount is not None:
        currency = _str(cost.get("currency")) or ""
        prices = _obj(cost.get("prices"))
        detail = ", ".join(str(v) for v in (cost.get("vm_size"), prices.get("region"), prices.get("date"),
                                            prices.get("source")) if isinstance(v, str) and v)
        value = f"{amount:,.2f} {currency}" if amount >= 0.01 or amount == 0 else f"{amount:.4f} {currency}"
        return _metric("cost", "Estimated cost", value.strip(), f"list prices: {detail}" if detail else "")
    reason = _str(report.get("cost_omitted"))
    return _metric("cost", "Estimated cost", "not estimated", reason or "no cost in the report")


# ---------------------------------------------------------------- timeline


@dataclass
class _Lane:
    label: str
    title: str
    attrs: str  # data attributes of the lane's <g>
    capacity: int  # slots it stands for
    tasks: list[_Task]


def _slot_lanes(drawn: list[_Task]) -> dict[str, list[_Lane]]:
    """Lanes per node, one per slot; tasks without a slot are packed into lanes of their own."""
    by_node: dict[str, list[_Task]] = defaultdict(list)
    for t in drawn:
        by_node[t.node or "(unknown node)"].append(t)
    out: dict[str, list[_Lane]] = {}
    for node in sorted(by_node, key=_natural):
        slots: dict[int, list[_Task]] = defaultdict(list)
        loose: list[_Task] = []
        for t in by_node[node]:
            (slots[t.slot] if t.slot is not None else loose).append(t)
        lanes = [_Lane(f"{_short(node)} · {slot}", f"node {node}, slot {slot}",
                       f'data-node="{_e(node)}" data-slot="{slot}"', 1, slots[slot]) for slot in sorted(slots)]
        for i, packed in enumerate(_pack(loose)):
            lanes.append(_Lane(f"{_short(node)} · ~{i}", f"node {node}, lane {i} (slot not reported)",
                               f'data-node="{_e(node)}" data-slot="~{i}"', 1, packed))
        out[node] = lanes
    return out


def _pack(tasks: list[_Task]) -> list[list[_Task]]:
    """Tasks into as few lanes as possible with no overlap in a lane (interval partitioning)."""
    lanes: list[list[_Task]] = []
    free: list[tuple[float, int]] = []  # (end of the lane's last task, lane)
    for t in sorted(tasks, key=lambda t: t.start or 0.0):
        if free and free[0][0] <= (t.start or 0.0):
            _, i = heapq.heappop(free)
        else:
            i = len(lanes)
            lanes.append([])
        lanes[i].append(t)
        heapq.heappush(free, (t.end or 0.0, i))
    return lanes


def _coarser(by_node: dict[str, list[_Lane]], limit: int) -> list[_Lane]:
    """At most `limit` lanes: slot lanes if they fit, else one lane per node, else node groups."""
    slot_lanes = [lane for lanes in by_node.values() for lane in lanes]
    if len(slot_lanes) <= limit:
        return slot_lanes
    nodes = list(by_node)
    per = math.ceil(len(nodes) / limit)
    out = []
    for i in range(0, len(nodes), per):
        group = nodes[i:i + per]
        lanes = [lane for n in group for lane in by_node[n]]
        tasks = [t for lane in lanes for t in lane.tasks]
        if per == 1:
            out.append(_Lane(_short(group[0]), f"node {group[0]}, {len(lanes)} slot(s)",
                             f'data-node="{_e(group[0])}"', len(lanes), tasks))
        else:
            out.append(_Lane(f"{_short(group[0], 12)} … ({len(group)})",
                             f"{len(group)} nodes, {group[0]} to {group[-1]}, {len(lanes)} slot(s)",
                             f'data-node="{_e(group[0])}" data-nodes="{len(group)}"', len(lanes), tasks))
    return out


def _timeline(report: Mapping[str, Any], tasks: list[_Task], limits: Limits) -> Iterator[str]:
    yield '<section id="timeline"><h2>Timeline</h2>'
    drawn = [t for t in tasks if t.drawn]
    if not drawn:
        yield '<p class="note">No task reported a start and end time, so there is nothing to draw.</p></section>\n'
        return
    first = min(t.start for t in drawn if t.start is not None)
    last = max(t.end for t in drawn if t.end is not None)
    dropped = _time(_get(report, "timings", "created_at"))
    # from the drop, so the queue shows; unless it would squeeze the tasks (it is in the summary too)
    origin = dropped if dropped is not None and 0 <= first - dropped <= last - first else first
    span = max(last - origin, 1e-3)
    binned = len(drawn) > limits.task_bars
    by_node = _slot_lanes(drawn)
    lanes = _coarser(by_node, limits.lanes) if binned else [lane for ls in by_node.values() for lane in ls]
    lane_h = 14 if not binned or len(lanes) <= 100 else 8
    height = _AXIS_H + lane_h * len(lanes) + 4
    scale = _PLOT_W / span

    def x(t: float) -> float:
        return _LABEL_W + (t - origin) * scale

    yield from _legend(binned)
    hidden = len(tasks) - len(drawn)
    if binned:
        per_lane = max(1, min(limits.bins_per_lane, limits.bins // max(1, len(lanes))))
        yield (f'<p class="note">{len(drawn):,} tasks on {len(lanes)} lanes, aggregated into {per_lane} time bins per '
               "lane: a bin's height is the share of the lane's slots busy in it; hatched bins held a failed task, "
               "outlined ones a retried task.</p>")
    else:
        per_lane = 0
        yield (f'<p class="note">{len(drawn):,} tasks as bars on {len(lanes)} lanes (node · slot); a bar is the '
               "task's last try. Hover a bar for its details.</p>")
    if hidden:
        yield f'<p class="note">{hidden:,} task(s) reported no start and end time and are not drawn.</p>'
    yield (f'<svg class="chart timeline" data-mode="{"bins" if binned else "tasks"}" data-lanes="{len(lanes)}" '
           f'data-drawn="{len(drawn)}" width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}" '
           'role="img" aria-label="task timeline">')
    step = _step(span)
    k = 0
    while k * step <= span + 1e-9:
        gx = x(origin + k * step)
        yield (f'<line class="grid" x1="{_f(gx)}" y1="{_AXIS_H - 6}" x2="{_f(gx)}" y2="{height}"/>'
               f'<text x="{_f(gx + 2)}" y="{_AXIS_H - 10}">{_tick(k * step)}</text>')
        k += 1
    for i, lane in enumerate(lanes):
        y = _AXIS_H + i * lane_h
        yield (f'<g class="lane" {lane.attrs}><title>{_e(lane.title)}</title>'
               f'<rect class="lane-bg" x="{_LABEL_W}" y="{y}" width="{_PLOT_W}" height="{lane_h - 1}"/>'
               f'<text class="lane-label" x="4" y="{y + lane_h - 3}">{_e(lane.label)}</text>')
        if binned:
            yield from _bins(lane, origin, span, per_lane, y, lane_h)
        else:
            for t in lane.tasks:
                yield _bar(t, x, y, lane_h)
        yield "</g>"
    if origin < first:  # drawn over the lanes: no bar is in it
        yield (f'<rect class="queue-span" x="{_LABEL_W}" y="{_AXIS_H}" width="{_f(x(first) - _LABEL_W)}" '
               f'height="{height - _AXIS_H}"><title>queue: {_seconds(first - origin)} from the drop to the first '
               f'task start</title></rect><text x="{_LABEL_W + 3}" y="{_AXIS_H + 11}">queue</text>')
    yield "</svg></section>\n"


def _bar(t: _Task, x: Callable[[float], float], y: float, lane_h: int) -> str:
    assert t.start is not None and t.end is not None
    x0 = x(t.start)
    width = max(x(t.end) - x0, 1.0)
    cls = f"task {t.outcome}" + (" retried" if t.retried else "")
    outcome = {_OK: "succeeded", _FAILED: "failed", _STOPPED: "stopped"}[t.outcome]
    where = f"node {t.node or '?'}" + (f" slot {t.slot}" if t.slot is not None else "")
    again = f", {t.retried} earlier tr{'y' if t.retried == 1 else 'ies'} (retries, requeues)" if t.retried else ""
    return (f'<rect class="{cls}" data-task="{_e(t.task_id)}" x="{_f(x0)}" y="{y + 1}" width="{_f(width)}" '
            f'height="{lane_h - 3}"><title>{_e(t.task_id)}: {outcome}, {_seconds(t.end - t.start)}, '
            f"{_e(where)}{again}</title></rect>")


def _bins(lane: _Lane, origin: float, span: float, n: int, y: float, lane_h: int) -> Iterator[str]:
    width = span / n
    busy = [0.0] * n
    count = [0] * n
    failed = [0] * n
    stopped = [0] * n
    retried = [0] * n
    for t in lane.tasks:
        assert t.start is not None and t.end is not None
        lo = min(n - 1, int((t.start - origin) / width))
        hi = min(n - 1, int((t.end - origin) / width))
        for b in range(lo, hi + 1):
            b0 = origin + b * width
            busy[b] += max(0.0, min(t.end, b0 + width) - max(t.start, b0))
            count[b] += 1
            failed[b] += t.outcome == _FAILED
            stopped[b] += t.outcome == _STOPPED
            retried[b] += t.retried > 0
    px = _PLOT_W / n
    for b in range(n):
        if not count[b]:
            continue
        share = min(1.0, busy[b] / (width * lane.capacity))
        h = max(1.0, share * (lane_h - 2))
        kind = _FAILED if failed[b] else _STOPPED if stopped[b] == count[b] else _OK
        cls = f"bin {kind}" + (" retried" if retried[b] else "")
        yield (f'<rect class="{cls}" x="{_f(_LABEL_W + b * px)}" y="{_f(y + lane_h - 1 - h)}" width="{_f(px)}" '
               f'height="{_f(h)}" data-tasks="{count[b]}" data-failed="{failed[b]}" data-busy="{share:.2f}"/>')


def _legend(binned: bool) -> Iterator[str]:
    kind = "bin" if binned else "task"
    items = [("ok", _OK, "succeeded"), ("failed", _FAILED, "failed (hatched)"),
             ("stopped", _STOPPED, "stopped before it finished (grey)"),
             ("retried", f"{_OK} retried", "outlined: retried or requeued before its last try")]
    yield '<ul class="legend">'
    for key, cls, text in items:
        yield (f'<li class="legend-item" data-kind="{key}"><svg width="26" height="14" aria-hidden="true">'
               f'<rect class="swatch {kind}-swatch {cls}" x="1" y="1" width="24" height="12"/></svg>{_e(text)}</li>')
    yield "</ul>"


# ---------------------------------------------------------------- durations


def _histogram(tasks: list[_Task], limits: Limits) -> Iterator[str]:
    yield '<section id="durations"><h2>Task durations</h2>'
    durations = sorted(t.duration for t in tasks if t.duration is not None)
    if not durations:
        yield '<p class="note">No task reported a duration.</p></section>\n'
        return
    p50, p95 = _percentile(durations, 0.5), _percentile(durations, 0.95)
    threshold = p95 * 1.5
    lo, hi = durations[0], durations[-1]
    n = min(40, max(10, math.ceil(math.sqrt(len(durations)))))
    width = (hi - lo) / n or 1.0
    counts, slow = [0] * n, [0] * n  # per bin: all tasks, and the stragglers among them
    for d in durations:
        b = min(n - 1, int((d - lo) / width))
        counts[b] += 1
        slow[b] += d > threshold
    yield (f'<p class="note">{len(durations):,} tasks: median {_seconds(p50)}, p95 {_seconds(p95)}, longest '
           f"{_seconds(hi)}. Stragglers: longer than p95 × 1.5 = {_seconds(threshold)} (hatched).</p>")
    w, h, base, left = 1000, 200, 170, 40
    peak = max(counts)
    yield (f'<svg class="chart histogram" data-bins="{n}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           'role="img" aria-label="histogram of task durations">')
    bar_w = (w - left - 10) / n
    for i, c in enumerate(counts):
        b_lo, b_hi = lo + i * width, lo + (i + 1) * width
        bh, sh = (base - 10) * c / peak, (base - 10) * slow[i] / peak  # the stragglers' part on top, hatched
        bx, bw = _f(left + i * bar_w), _f(max(bar_w - 1, 1))
        yield (f'<rect class="hist-bar" data-count="{c}" data-stragglers="{slow[i]}" data-lo="{b_lo:.3f}" '
               f'data-hi="{b_hi:.3f}" x="{bx}" y="{_f(base - bh)}" width="{bw}" height="{_f(bh)}">'
               f"<title>{c} task(s) of {_seconds(b_lo)} to {_seconds(b_hi)}"
               f"{f', {slow[i]} of them stragglers' if slow[i] else ''}</title></rect>")
        if slow[i]:
            yield f'<rect class="hist-bar straggler" x="{bx}" y="{_f(base - bh)}" width="{bw}" height="{_f(sh)}"/>'
    for cls, value, label in (("p50", p50, "median"), ("p95", p95, "p95"), ("threshold", threshold, "p95×1.5")):
        if value <= hi:
            mx = left + (value - lo) / width * bar_w if hi > lo else left
            yield (f'<line class="marker {cls}" x1="{_f(mx)}" y1="8" x2="{_f(mx)}" y2="{base}"/>'
                   f'<text x="{_f(mx + 3)}" y="{18 if cls != "p95" else 32}">{label}</text>')
    yield (f'<text x="{left}" y="{base + 16}">{_seconds(lo)}</text>'
           f'<text x="{w - 10}" y="{base + 16}" text-anchor="end">{_seconds(hi)}</text>'
           f'<text x="{left - 4}" y="16" text-anchor="end">{peak}</text></svg>')
    stragglers = sorted((t for t in tasks if t.duration is not None and t.duration > threshold),
                        key=lambda t: -(t.duration or 0.0))
    if stragglers:
        yield f'<h3>Stragglers ({len(stragglers):,})</h3><ol class="stragglers">'
        for t in stragglers[: limits.stragglers]:
            where = f" on {t.node}" + (f" slot {t.slot}" if t.slot is not None else "") if t.node else ""
            yield (f'<li class="straggler" data-task="{_e(t.task_id)}" data-duration="{t.duration:.3f}">'
                   f'<span class="mono">{_e(t.task_id)}</span>: {_seconds(t.duration)}{_e(where)}</li>')
        yield "</ol>"
        if len(stragglers) > limits.stragglers:
            yield f'<p class="note">and {len(stragglers) - limits.stragglers:,} more; see report.json.</p>'
    yield "</section>\n"


# ---------------------------------------------------------------- failures and the job file


def _failures(report: Mapping[str, Any], tasks: list[_Task], limits: Limits) -> Iterator[str]:
    failed = [t.entry for t in tasks if t.outcome != _OK]
    yield f'<section id="failures"><h2>Failures ({len(failed):,})</h2>'
    if not failed:
        yield '<p class="note">No task failed.</p></section>\n'
        return
    codes = Counter((_str(_get(e, "failure", "category")) or "-", _str(_get(e, "failure", "code")) or "-")
                    for e in failed)
    yield '<table class="failure-codes"><tr><th>Category</th><th>Code</th><th>Tasks</th></tr>'
    for (category, code), n in codes.most_common(20):
        yield (f'<tr data-category="{_e(category)}" data-code="{_e(code)}"><td>{_e(category)}</td><td>{_e(code)}</td>'
               f"<td>{n:,}</td></tr>")
    yield '</table><ol class="failures">'
    for e in failed[: limits.failures]:
        yield _failure(e, limits)
    yield "</ol>"
    rest = failed[limits.failures:]
    if rest:
        names = ", ".join(_e(e.get("task_id", "?")) for e in rest[: limits.failure_names])
        more = len(rest) - limits.failure_names
        yield (f'<p class="note more-failures" data-count="{len(rest)}">{len(rest):,} more failed task(s), '
               f'without their stderr here (see report.json): <span class="mono">{names}</span>'
               f"{f' and {more:,} more' if more > 0 else ''}</p>")
    yield "</section>\n"


def _failure(e: Mapping[str, Any], limits: Limits) -> str:
    task_id = str(e.get("task_id", "?"))
    facts = []
    for key, label in (("exit_code", "exit code"), ("retries", "retries"), ("requeues", "requeues"),
                       ("infra_retries", "infrastructure retries")):
        if e.get(key) is not None:
            facts.append(f"{label} {_e(e.get(key))}")
    failure = _obj(e.get("failure"))
    what = " / ".join(_e(failure.get(k)) for k in ("category", "code") if failure.get(k))
    message = _str(failure.get("message"))
    stderr = e.get("stderr_tail")
    if isinstance(stderr, str) and stderr:
        cut = len(stderr) > limits.stderr_chars
        tail = stderr[-limits.stderr_chars:]
        body = f'<pre class="stderr">{"…" if cut else ""}{_t(tail)}</pre>'
    else:
        body = '<p class="note no-stderr">No stderr was kept for this task.</p>'
    if message:
        body = f'<p class="failure-message">{_t(message)}</p>{body}'
    return (f'<li class="failure" data-task="{_e(task_id)}"><h3 class="mono">{_t(task_id)}</h3>'
            f'<p>{what}{" · " if what and facts else ""}{", ".join(facts)}</p>{body}</li>')


def _job_file(job_file: str | None, limits: Limits) -> Iterator[str]:
    yield '<section id="job-file"><h2>Job file</h2>'
    if job_file is None:
        yield '<p class="note">The job file is not included.</p></section>\n'
        return
    cut = len(job_file) > limits.job_file_chars
    text = job_file[: limits.job_file_chars]
    for i in range(0, len(text), limits.chunk_chars):
        yield ('<pre class="job-file">' if i == 0 else "") + _t(text[i:i + limits.chunk_chars])
    if not text:
        yield '<pre class="job-file">'
    yield "</pre>"
    if cut:
        yield f'<p class="note">Only the first {limits.job_file_chars:,} of {len(job_file):,} characters are shown.</p>'
    yield "</section>\n"
